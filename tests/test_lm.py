"""CausalLMPolicy: vocabulary checks, left padding, KV-cached sampling, one-pass log-probs, save/load, shipped model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm
from aligngym.agents.sampling import process_logits
from aligngym.envs.reference import default_reference_dir, load_causal_lm
from aligngym.envs.tokenization import load_tokenizer

V = 64


def _policy(**kw) -> CausalLMPolicy:
    return CausalLMPolicy(tiny_causal_lm(V, seed=1), tokenizer=V, **kw)


def _left_pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.as_tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def test_vocab_mismatch_raises_with_both_sizes():
    with pytest.raises(ValueError, match=r"64 ids .* 80"):
        CausalLMPolicy(tiny_causal_lm(V), tokenizer=80)


def test_left_padded_rows_match_unpadded_rows():
    policy = _policy()
    rows = [[5, 6, 7, 8, 9], [3, 4]]
    ids, mask = _left_pad(rows)
    batched, values = policy.forward_with_value(ids, mask)
    for i, r in enumerate(rows):
        alone, v = policy.forward_with_value(torch.as_tensor([r]), torch.ones(1, len(r), dtype=torch.long))
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values[i], v[0], atol=1e-5, rtol=1e-5)


def test_forward_reads_env_observation_layout():
    """Prompt left-padded, completion after it, padding after that: logits come from the last attended token."""
    policy = _policy()
    ids = torch.tensor([[0, 0, 5, 6, 7, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0]])
    expected = policy(torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(policy(ids, mask), expected, atol=1e-5, rtol=1e-5)
    assert policy(ids, mask).shape == (1, V)


def test_sampled_logprobs_equal_one_pass_completion_logprobs():
    policy = _policy()
    ids, mask = _left_pad([[5, 6, 7, 8], [9, 10]])
    gen = torch.Generator().manual_seed(0)
    out = policy.sample(ids, mask, max_new_tokens=6, generator=gen)
    logp, values, entropy = policy.completion_logprobs(ids, mask, out.actions, out.mask, with_values=True)
    torch.testing.assert_close(logp, out.logprobs, atol=1e-4, rtol=1e-4)
    assert values is not None and values.shape == (2, 6)
    assert torch.isfinite(entropy).all()


def test_kv_cached_greedy_equals_uncached_greedy():
    policy = _policy()
    prompt = [5, 6, 7]
    out = policy.sample(
        torch.tensor([prompt]), torch.ones(1, 3, dtype=torch.long), max_new_tokens=5, greedy=True
    )
    seq = list(prompt)
    for _ in range(5):
        logits = policy(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long))
        seq.append(int(logits.argmax(-1)))
    assert out.tokens[0].tolist() == seq[3:]


def test_sampling_is_reproducible_with_a_seeded_generator():
    policy = _policy()
    ids, mask = _left_pad([[5, 6], [7, 8, 9]])
    a = policy.sample(
        ids, mask, 8, temperature=0.9, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(3)
    )
    b = policy.sample(
        ids, mask, 8, temperature=0.9, top_k=10, top_p=0.9, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a.actions, b.actions)


def test_eos_ends_a_row_and_pads_after_it():
    policy = _policy()
    ids, mask = _left_pad([[5, 6], [7, 8, 9]])
    eos = 11
    bias = torch.zeros(V)
    bias[eos] = 100.0  # the first sampled token is EOS for every row

    def hook(step, logits, so_far):
        return logits + bias if step == 1 else logits

    out = policy.sample(ids, mask, 6, eos_action=eos, pad_action=0, logits_hook=hook)
    assert out.lengths.tolist() == [2, 2]
    assert (out.actions[:, 1] == eos).all() and (out.actions[:, 2:] == 0).all()
    assert out.mask[:, 2:].sum() == 0


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(process_logits(logits, top_k=2)[0, 2:]).all()
    kept = torch.isfinite(process_logits(logits, top_p=0.7)[0])
    assert kept.tolist() == [True, True, False, False]  # 0.5 alone is below 0.7; 0.5 + 0.3 crosses it


def test_action_ids_restrict_logits_to_those_tokens():
    full = _policy()
    ids = torch.tensor([[5, 6, 7]])
    mask = torch.ones_like(ids)
    restricted = CausalLMPolicy(full.model, tokenizer=V, action_ids=[3, 9, 11])
    torch.testing.assert_close(restricted(ids, mask), full(ids, mask)[:, [3, 9, 11]])
    assert restricted.n_actions == 3


def test_value_head_shares_the_trunk():
    policy = _policy()
    lm_params = {id(p) for p in policy.model.parameters()}
    own = [p for p in policy.parameters() if id(p) not in lm_params]
    assert sum(p.numel() for p in own) == policy.model.config.n_embd + 1  # one linear layer, nothing else


def test_save_load_round_trip_without_pickle(tmp_path):
    policy = _policy(action_ids=[3, 9, 11, 12])
    torch.nn.init.normal_(policy.value_head.weight)
    policy.save_pretrained(tmp_path / "p")
    files = sorted(f.name for f in (tmp_path / "p").iterdir())
    assert {"config.json", "model.safetensors", "policy.json", "value_head.safetensors"} <= set(files)
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    back = CausalLMPolicy.from_pretrained(tmp_path / "p")
    ids, mask = _left_pad([[5, 6, 7], [8]])
    for a, b in zip(policy.forward_with_value(ids, mask), back.forward_with_value(ids, mask)):
        torch.testing.assert_close(a, b)
    assert back.n_actions == 4


def test_state_dict_of_tied_weights_saves_with_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    policy = _policy()
    save_file(policy.state_dict(), str(tmp_path / "w.safetensors"))
    fresh = CausalLMPolicy(tiny_causal_lm(V, seed=9), tokenizer=V)
    fresh.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(fresh(ids, torch.ones_like(ids)), policy(ids, torch.ones_like(ids)))


def test_unknown_model_name_is_not_downloaded():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_causal_lm("gpt2")


def test_for_env_applies_the_action_vocab():
    env = gym.make("aligngym/Target-Token-v0")
    rt = env.unwrapped.runtime
    policy = CausalLMPolicy.for_env(env, tiny_causal_lm(rt.vocab_size))
    obs, _ = env.reset(seed=0)
    ids = torch.as_tensor(obs["input_ids"])[None]
    mask = torch.as_tensor(obs["attention_mask"])[None]
    assert policy(ids, mask).shape == (1, env.action_space.n)


def test_shipped_reference_model_loads_and_fits_the_default_tokenizer():
    root = default_reference_dir()
    assert (root / "config.json").is_file() and (root / "model.safetensors").is_file()
    assert sum(f.stat().st_size for f in root.iterdir()) < 8e6
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(root), local_files_only=True)
    tok = load_tokenizer("default")
    policy = CausalLMPolicy(model, tokenizer=tok, value_head=False)
    ids = torch.as_tensor([tok.encode("The hotel room was")])
    out = policy.sample(ids, torch.ones_like(ids), 12, greedy=True, eos_action=tok.eos_id)
    text = tok.decode(out.tokens[0, : int(out.lengths[0])].tolist())
    assert sum(c.isalpha() for c in text) >= 5  # words, not noise


@pytest.mark.gpu
def test_policy_samples_on_cuda():
    policy = _policy().to("cuda")
    ids, mask = _left_pad([[5, 6, 7], [8]])
    out = policy.sample(ids.cuda(), mask.cuda(), 4, generator=torch.Generator("cuda").manual_seed(0))
    logp, _, _ = policy.completion_logprobs(ids.cuda(), mask.cuda(), out.actions, out.mask)
    assert np.allclose(logp.cpu().numpy(), out.logprobs.cpu().numpy(), atol=1e-3)
