"""Reference causal LM: vocabulary checks, batched == single log-probs, and ``ref_logprob`` in the envs' rewards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.reference import ReferenceModel, default_reference_dir, load_reference_model
from aligngym.envs.tokenization import load_tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_gpt2(vocab_size: int, n_positions: int = 64, seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer("default")
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("default")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory, tok) -> Path:
    path = tmp_path_factory.mktemp("tiny_lm")
    tiny_gpt2(len(tok)).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def ref(lm_dir: Path, tok) -> ReferenceModel:
    return load_reference_model(lm_dir, tok, device="cpu")


def obs_batch(tok, rows: list[tuple[int, int]], prompt_slot: int = 8, width: int = 16, seed: int = 0):
    """Observation-layout ids/masks: each row's prompt left-padded into the slot, generated tokens after it."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(rows), width), tok.pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for b, (n_prompt, n_gen) in enumerate(rows):
        ids[b, prompt_slot - n_prompt : prompt_slot] = rng.integers(10, len(tok), n_prompt)
        mask[b, prompt_slot - n_prompt : prompt_slot] = 1
        ids[b, prompt_slot : prompt_slot + n_gen] = rng.integers(10, len(tok), n_gen)
        mask[b, prompt_slot : prompt_slot + n_gen] = 1
    return ids, mask


def test_vocab_smaller_than_tokenizer_raises(tok) -> None:
    with pytest.raises(ValueError, match=r"vocabulary of 100 ids but the tokenizer .* has \d+"):
        load_reference_model(tiny_gpt2(100), tok, device="cpu")


def test_vocab_larger_than_tokenizer_raises_unless_not_strict(tok) -> None:
    model = tiny_gpt2(len(tok) + 8)
    with pytest.raises(ValueError, match="strict_vocab=False"):
        load_reference_model(model, tok, device="cpu")
    ref = load_reference_model(model, tok, device="cpu", strict_vocab=False)
    ids, mask = obs_batch(tok, [(3, 1)])
    logp = ref.next_token_logprobs(ids, mask)
    assert logp.shape == (1, len(tok))
    assert np.isclose(np.exp(logp).sum(), 1.0, atol=1e-4)


def test_vocab_mismatch_with_minilm_tokenizer_raises(lm_dir: Path) -> None:
    with pytest.raises(ValueError, match="must be trained on the env's tokenizer"):
        load_reference_model(lm_dir, "minilm", device="cpu")


def test_next_token_logprobs_batched_equals_single(ref: ReferenceModel, tok) -> None:
    ids, mask = obs_batch(tok, [(3, 2), (8, 0), (1, 6), (5, 8)])
    batched = ref.next_token_logprobs(ids, mask)
    single = np.stack([ref.next_token_logprobs(ids[b : b + 1], mask[b : b + 1])[0] for b in range(len(ids))])
    assert batched.shape == (4, len(tok)) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_next_token_logprobs_match_an_unpadded_forward(ref: ReferenceModel, tok) -> None:
    ids, mask = obs_batch(tok, [(3, 2), (6, 4)])
    batched = ref.next_token_logprobs(ids, mask)
    for b in range(2):
        real = torch.as_tensor(ids[b][mask[b] == 1])[None]
        with torch.no_grad():
            expected = torch.log_softmax(ref.model(real).logits[0, -1], -1).numpy()
        np.testing.assert_allclose(batched[b], expected, atol=1e-5)


def test_sequence_logprob_is_the_sum_over_completion_tokens(ref: ReferenceModel, tok) -> None:
    ids, mask = obs_batch(tok, [(4, 0)], seed=3)
    completion = np.array([11, 57, 200, 9], dtype=np.int64)
    got = ref.sequence_logprob(ids[0], mask[0], completion)
    full = torch.as_tensor(np.concatenate([ids[0][mask[0] == 1], completion]))[None]
    with torch.no_grad():
        logp = torch.log_softmax(ref.model(full).logits[0], -1)
    expected = sum(float(logp[3 + t, completion[t]]) for t in range(len(completion)))
    assert got == pytest.approx(expected, abs=1e-4)
    assert ref.sequence_logprob(ids[0], mask[0], np.zeros(0, dtype=np.int64)) == 0.0


def test_sequence_logprobs_batched_equals_single(ref: ReferenceModel, tok) -> None:
    ids, mask = obs_batch(tok, [(2, 0), (8, 0), (5, 0)], seed=4)
    comps = [np.array([5, 6, 7]), np.array([], dtype=np.int64), np.array([99] * 6)]
    batched = ref.sequence_logprobs(ids, mask, comps)
    single = [ref.sequence_logprob(ids[b], mask[b], comps[b]) for b in range(3)]
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_context_longer_than_the_model_keeps_the_last_tokens(tok) -> None:
    ref = load_reference_model(tiny_gpt2(len(tok), n_positions=8), tok, device="cpu")
    ids, mask = obs_batch(tok, [(12, 10)], prompt_slot=12, width=24)
    logp = ref.next_token_logprobs(ids, mask)
    tail = np.zeros_like(mask)
    tail[0, np.flatnonzero(mask[0])[-8:]] = 1
    np.testing.assert_allclose(logp, ref.next_token_logprobs(ids, tail), atol=1e-6)


def test_rows_without_tokens_raise(ref: ReferenceModel, tok) -> None:
    ids, mask = obs_batch(tok, [(3, 0)])
    with pytest.raises(ValueError, match="no attended tokens"):
        ref.next_token_logprobs(ids, np.zeros_like(mask))


def test_directory_specs_are_shared(lm_dir: Path, tok, ref: ReferenceModel) -> None:
    assert load_reference_model(str(lm_dir), tok, device="cpu") is ref


def test_bad_specs_raise_clear_errors(tmp_path: Path, tok) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_reference_model("gpt2", tok, device="cpu")
    with pytest.raises(TypeError, match="reference_model must be"):
        load_reference_model(123, tok, device="cpu")


def test_default_spec_loads_the_shipped_model_or_says_it_is_missing(tok) -> None:
    if (default_reference_dir() / "config.json").is_file():
        assert load_reference_model("default", tok, device="cpu").vocab_size == len(tok)
    else:
        with pytest.raises(FileNotFoundError, match="not shipped yet"):
            load_reference_model("default", tok, device="cpu")


def test_token_env_reward_is_coef_times_ref_logprob(lm_dir: Path, ref: ReferenceModel) -> None:
    coef = 0.25
    env = gym.make(
        "aligngym/Sentiment-Token-v0", reference_model=str(lm_dir), ref_logprob_coef=coef, max_new_tokens=4
    )
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    done = False
    while not done:
        action = int(rng.integers(10, env.action_space.n))
        expected = ref.next_token_logprobs(obs["input_ids"][None], obs["attention_mask"][None])[0, action]
        obs, reward, done, _, info = env.step(action)
        assert info["ref_logprob"] == pytest.approx(float(expected), abs=1e-5)
        score = info["score"] if done else 0.0
        assert reward == pytest.approx(coef * info["ref_logprob"] + score, abs=1e-5)


def test_sequence_env_reward_adds_coef_times_completion_logprob(lm_dir: Path, ref: ReferenceModel) -> None:
    coef = 0.5
    env = gym.make(
        "aligngym/Sentiment-Sequence-v0", reference_model=str(lm_dir), ref_logprob_coef=coef, max_new_tokens=5
    )
    obs, _ = env.reset(seed=1)
    action = np.array([12, 40, 300, 7, 99], dtype=np.int64)
    expected = ref.sequence_logprob(obs["input_ids"], obs["attention_mask"], action)
    _, reward, _, _, info = env.step(action)
    assert info["ref_logprob"] == pytest.approx(expected, abs=1e-4)
    assert info["ref_logprob"] < 0
    assert reward == pytest.approx(info["score"] + coef * info["ref_logprob"], abs=1e-4)


@pytest.mark.parametrize("granularity", ["Token", "Sequence"])
def test_native_vector_env_ref_logprob_matches_single_envs(lm_dir: Path, granularity: str) -> None:
    env_id = f"aligngym/Sentiment-{granularity}-v0"
    kwargs = {"reference_model": str(lm_dir), "ref_logprob_coef": 0.5, "max_new_tokens": 4}
    native = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(env_id, num_envs=4, vectorization_mode="sync", **kwargs)
    native.reset(seed=3)
    sync.reset(seed=3)
    actions = np.random.default_rng(0).integers(10, 500, size=native.action_space.shape)
    _, r_native, _, _, i_native = native.step(actions)
    _, r_sync, _, _, i_sync = sync.step(actions)
    np.testing.assert_allclose(i_native["ref_logprob"], i_sync["ref_logprob"], atol=1e-5)
    np.testing.assert_allclose(r_native, r_sync, atol=1e-5)
    assert (i_native["ref_logprob"] < 0).all()


def test_env_with_mismatched_reference_raises_on_first_step(lm_dir: Path) -> None:
    env = gym.make(
        "aligngym/Sentiment-Token-v0", tokenizer="minilm", reference_model=str(lm_dir), ref_logprob_coef=0.1
    )
    env.reset(seed=0)
    with pytest.raises(ValueError, match="vocabulary"):
        env.step(2000)


@pytest.mark.gpu
def test_cuda_reference_runs_in_half_precision_close_to_cpu(lm_dir: Path, tok, ref: ReferenceModel) -> None:
    gpu = load_reference_model(lm_dir, tok, device="cuda")
    assert next(gpu.model.parameters()).dtype == torch.float16
    ids, mask = obs_batch(tok, [(3, 2), (8, 0), (1, 6)])
    np.testing.assert_allclose(
        gpu.next_token_logprobs(ids, mask), ref.next_token_logprobs(ids, mask), atol=0.05
    )
    comps = [np.array([5, 6]), np.array([7]), np.array([8, 9, 10])]
    np.testing.assert_allclose(
        gpu.sequence_logprobs(ids, mask, comps), ref.sequence_logprobs(ids, mask, comps), atol=0.1
    )
