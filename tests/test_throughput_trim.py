"""The policy skips work that cannot change its outputs: left padding no row attends and completion steps after
every row's end (``trim_left_padding`` / ``used_steps``); the log-probs and the sampled completions stay the same.
"""

from __future__ import annotations

import torch

from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm, trim_left_padding, used_steps


def _policy() -> CausalLMPolicy:
    torch.manual_seed(0)
    return CausalLMPolicy(tiny_causal_lm(vocab_size=40, n_layer=1, n_embd=16), tokenizer=40, value_head=True)


def test_trim_left_padding_drops_only_columns_no_row_attends() -> None:
    ids = torch.arange(12).reshape(2, 6)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    t_ids, t_mask = trim_left_padding(ids, mask)
    assert t_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]] and t_ids.tolist() == [
        [2, 3, 4, 5],
        [8, 9, 10, 11],
    ]
    full = torch.ones(2, 3, dtype=torch.long)
    assert trim_left_padding(full, full)[1].shape == (2, 3)
    empty = torch.zeros(2, 3, dtype=torch.long)
    assert trim_left_padding(empty, empty)[1].shape == (2, 3)


def test_used_steps_is_one_past_the_last_column_any_row_uses() -> None:
    assert used_steps(torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])) == 2
    assert used_steps(torch.tensor([[1, 1, 1, 1]])) == 4
    assert used_steps(torch.zeros(2, 3)) == 0


def test_completion_logprobs_equal_the_untrimmed_forward() -> None:
    policy = _policy()
    prompt_ids = torch.randint(2, 40, (3, 8))
    prompt_mask = torch.zeros(3, 8, dtype=torch.long)
    prompt_mask[0, 5:], prompt_mask[1, 3:], prompt_mask[2, 6:] = 1, 1, 1  # columns 0-2 are nobody's
    actions = torch.randint(2, 40, (3, 6))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])  # steps 4, 5 unused
    with torch.no_grad():
        logp, values, entropy = policy.completion_logprobs(
            prompt_ids, prompt_mask, actions, mask, with_values=True
        )
        # the reference: the whole width, every step, masked as completion_logprobs does
        ids = torch.cat([prompt_ids, actions], 1)
        full_mask = torch.cat([prompt_mask, mask], 1)
        logits, hidden, _ = policy._run(ids, full_mask)
        ref_logp = (
            torch.log_softmax(logits[:, 7:-1].float(), -1).gather(-1, actions[..., None])[..., 0] * mask
        )
        ref_values = policy._value(hidden[:, 7:-1]) * mask
    assert logp.shape == values.shape == entropy.shape == (3, 6)
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, ref_values, atol=1e-5, rtol=1e-5)
    assert not entropy[:, 4:].any() and entropy[:, :4].sum() > 0
    # without the entropy: the same log-probs and values bit for bit, trimmed or not, and no entropy
    for m in (mask, torch.ones_like(mask)):
        with torch.no_grad():
            full = policy.completion_logprobs(prompt_ids, prompt_mask, actions, m, with_values=True)
            lean = policy.completion_logprobs(
                prompt_ids, prompt_mask, actions, m, with_values=True, with_entropy=False
            )
        assert torch.equal(lean[0], full[0]) and torch.equal(lean[1], full[1]) and lean[2] is None


def test_sampling_from_a_wide_prompt_slot_equals_sampling_from_the_trimmed_prompts() -> None:
    policy = _policy()
    prompt_ids = torch.randint(2, 40, (4, 10))
    prompt_mask = torch.zeros(4, 10, dtype=torch.long)
    prompt_mask[:, 6:] = 1
    wide = policy.sample(prompt_ids, prompt_mask, 5, generator=torch.Generator().manual_seed(3))
    narrow = policy.sample(
        prompt_ids[:, 6:], prompt_mask[:, 6:], 5, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(wide.actions, narrow.actions)
    torch.testing.assert_close(wide.logprobs, narrow.logprobs)


def test_sampling_without_finished_rows_draws_what_the_whole_batch_draws() -> None:
    policy = _policy()
    prompt_ids = torch.randint(2, 40, (6, 5))
    prompt_mask = torch.ones_like(prompt_ids)
    outs = []
    for drop in (True, False):
        policy.drop_finished_rows = drop
        outs.append(
            policy.sample(
                prompt_ids,
                prompt_mask,
                12,
                eos_action=3,
                generator=torch.Generator().manual_seed(1),
                logits_hook=lambda t, logits, _: logits + 2.5 * (torch.arange(40) == 3),  # EOS likelier
            )
        )
    dropped, whole = outs
    lengths = whole.lengths.tolist()
    assert min(lengths) < max(lengths), "some rows end early (EOS), so rows are dropped mid-decode"
    assert torch.equal(dropped.actions, whole.actions) and torch.equal(dropped.mask, whole.mask)
    torch.testing.assert_close(dropped.logprobs, whole.logprobs)
