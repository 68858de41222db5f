"""The ``transformers`` seam (envs/hf.py): the KV-cache keyword and the dtype keyword under the installed version, no
deprecation warning about ``past_key_values`` from our cached forwards, and local-only loading."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import pytest
import torch

from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm
from aligngym.envs import hf
from aligngym.envs.hf import cache_kwarg, load_local_pretrained, output_cache, transformers_version

NEW_CACHE_NAME = transformers_version() >= (5, 0)


class _New:
    def forward(self, input_ids: Any, cache: Any = None) -> None: ...


class _Old:
    def forward(self, input_ids: Any, past_key_values: Any = None) -> None: ...


def test_cache_kwarg_follows_the_forward_signature() -> None:
    assert cache_kwarg(_New(), "c") == {"cache": "c"}
    assert cache_kwarg(_Old(), "c") == {"past_key_values": "c"}
    model = tiny_causal_lm(32, seed=0)
    assert list(cache_kwarg(model, None)) == (["cache"] if NEW_CACHE_NAME else ["past_key_values"])


def test_output_cache_reads_either_name() -> None:
    model = tiny_causal_lm(32, seed=0).eval()
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3]]), use_cache=True)
    cache = output_cache(out)
    assert cache is not None
    with torch.no_grad():
        nxt = model(torch.tensor([[4]]), use_cache=True, **cache_kwarg(model, cache))
    assert nxt.logits.shape == (1, 1, 32)
    assert output_cache(SimpleNamespace(past_key_values="p")) == "p"  # a 4.x-style output


def test_cached_forwards_raise_no_past_key_values_deprecation() -> None:
    """transformers 5.x deprecates the ``past_key_values`` keyword (FutureWarning); our policies and the reference LM
    pass the cache under the name the installed version takes."""
    env = gym.make("aligngym/Target-Token-v0", ref_logprob_coef=0.1, reference_model="default")  # KV-cached
    rt = env.unwrapped.runtime
    policy = CausalLMPolicy.for_env(env, tiny_causal_lm(rt.vocab_size, seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prompt = torch.randint(0, rt.vocab_size, (2, 5))
        policy.sample(prompt, torch.ones_like(prompt), max_new_tokens=3)
        env.reset(seed=0)
        for _ in range(3):
            _, _, terminated, _, info = env.step(0)
            assert "ref_logprob" in info
            if terminated:
                break
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "past_key_values" in m], messages


def test_dtype_is_passed_under_the_name_the_version_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    tiny_causal_lm(32, seed=0).save_pretrained(tmp_path / "lm")
    seen: dict[str, Any] = {}

    class Recorder:
        @staticmethod
        def from_pretrained(path: str, **kwargs: Any) -> None:
            seen.update(kwargs)

    monkeypatch.setattr(hf, "takes_dtype", lambda: False)
    load_local_pretrained(Recorder, tmp_path / "lm", dtype=torch.float32)
    assert seen["torch_dtype"] is torch.float32 and "dtype" not in seen
    monkeypatch.undo()
    model = load_local_pretrained(AutoModelForCausalLM, tmp_path / "lm", dtype=torch.float32)
    assert next(model.parameters()).dtype == torch.float32
    json.loads(model.config.to_json_string())  # no torch.dtype object left in the config (4.x with dtype=)


def test_loading_never_downloads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_local_pretrained(AutoModelForCausalLM, tmp_path / "missing")


def test_dynamic_cache_holds_given_keys_and_values() -> None:
    """The reference LM's KV cache rebuilds a ``DynamicCache`` from stored tensors (the constructor keyword differs
    between 4.x and 5.x; a wrong one made the cache silently fall back to uncached forwards on 4.x)."""
    from aligngym.envs.hf import dynamic_cache
    from aligngym.envs.reference import _layers_kv

    model = tiny_causal_lm(32, seed=0).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        past = output_cache(model(ids[:, :3], use_cache=True))
        cache = dynamic_cache([(k.clone(), v.clone()) for k, v in _layers_kv(past)])
        step = model(ids[:, 3:], use_cache=True, **cache_kwarg(model, cache)).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
