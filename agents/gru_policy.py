"""A GRU token policy: ``forward(input_ids, attention_mask) -> next-token logits (B, n_actions)``, with an optional
value head. It reads only the visible tokens of an aligngym observation (left-padded prompt, then the completion so
far); REINFORCE's and self-play's default policy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from aligngym.agents.sampling import check_ids_and_mask


class GRUPolicy(nn.Module):
    """Embedding -> GRU over the visible tokens -> logits over ``n_actions`` (and a value, with ``value_head``).

    Only positions with ``attention_mask == 1`` are read, in order, whatever the padding (left-padded prompt,
    right-padded completion, or holes): the valid tokens are gathered to the front and packed, so padding never
    touches the hidden state and each row's output does not depend on the rest of the batch.

    :param vocab_size: V, the env tokenizer's size (``env.unwrapped.runtime.vocab_size``); ids must be in [0, V).
    :param n_actions: k, the size of the env's ``Discrete`` action space (V, or the ``action_vocab`` length).
    :param embed_dim: token embedding width.
    :param hidden_size: GRU hidden width.
    :param num_layers: stacked GRU layers.
    :param value_head: add a linear value head (``value`` / ``forward_with_value``).
    """

    def __init__(
        self,
        vocab_size: int,
        n_actions: int,
        embed_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        value_head: bool = True,
    ) -> None:
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("n_actions", n_actions), ("embed_dim", embed_dim)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        if hidden_size <= 0 or num_layers <= 0:
            raise ValueError(f"hidden_size and num_layers must be positive, got {hidden_size}, {num_layers}")
        self.vocab_size, self.n_actions = int(vocab_size), int(n_actions)
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.policy_head = nn.Linear(hidden_size, n_actions)
        nn.init.normal_(self.policy_head.weight, std=0.01)  # near-uniform first policy
        nn.init.zeros_(self.policy_head.bias)
        self.value_head = nn.Linear(hidden_size, 1) if value_head else None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden state after the visible tokens.

        :param input_ids: LongTensor (B, L) token ids.
        :param attention_mask: (B, L) 1 for visible tokens, 0 for padding; every row needs at least one 1.
        :returns: FloatTensor (B, hidden_size).
        """
        check_ids_and_mask(input_ids, attention_mask)
        visible = attention_mask.to(torch.bool)
        lengths = visible.sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("every row of attention_mask needs at least one visible token")
        # stable sort puts the visible positions first, in their original order
        order = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)
        emb = self.embed(input_ids.gather(1, order))
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)
        return h_n[-1]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits: FloatTensor (B, n_actions)."""
        return self.policy_head(self.encode(input_ids, attention_mask))

    def value(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """State value: FloatTensor (B,). :raises RuntimeError: built with ``value_head=False``."""
        return self.forward_with_value(input_ids, attention_mask)[1]

    def forward_with_value(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, n_actions) and values (B,) from one GRU pass."""
        if self.value_head is None:
            raise RuntimeError("this GRUPolicy has no value head; build it with value_head=True")
        h = self.encode(input_ids, attention_mask)
        return self.policy_head(h), self.value_head(h).squeeze(-1)


__all__ = ["GRUPolicy"]
