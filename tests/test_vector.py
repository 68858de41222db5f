"""The native vector envs: make_vec routing, spaces, trajectory parity with SyncVectorEnv (all autoreset modes),
batch mode, seeding, one scorer call per batch, clear errors; and a smoke test of the throughput benchmark.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import aligngym.envs  # registers the ids
from aligngym.envs.vector import BATCH, SequenceVectorEnv, TokenVectorEnv

SENT_TOKEN = "aligngym/Sentiment-Token-v0"
SENT_SEQ = "aligngym/Sentiment-Sequence-v0"
TARGET = "aligngym/Target-Token-v0"
N = 4


# -- helpers --------------------------------------------------------------------------------------------------------
def assert_same(a: Any, b: Any, path: str = "info") -> None:
    """Exact equality of two (batched) Gymnasium values: dicts by keys, arrays by dtype, shape and content."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{path}: dict vs {type(b).__name__}"
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, np.ndarray):
        b = np.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{path}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        if a.dtype == object:
            for j, (x, y) in enumerate(zip(a, b)):
                assert_same(x, y, f"{path}[{j}]")
        elif ".gold_" in path and a.dtype.kind == "f":
            # model-based gold scorers run one batched forward for the vector env and one per row for the sync
            # env: equal up to float rounding (rule-based golds are exact: tests/test_env_gold.py)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=path)
        else:
            np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


def random_actions(
    venv: gym.vector.VectorEnv, steps: int, seed: int = 0, eos_p: float = 0.25
) -> list[np.ndarray]:
    """Random in-range actions; EOS with probability ``eos_p`` per token so that episodes end at different steps."""
    rng = np.random.default_rng(seed)
    rt = venv.unwrapped.runtime if hasattr(venv.unwrapped, "runtime") else venv.envs[0].unwrapped.runtime
    eos_action = (
        int(np.flatnonzero(rt.action_ids == rt.eos_id)[0]) if rt.action_ids is not None else rt.eos_id
    )
    shape = venv.action_space.shape
    out = []
    for _ in range(steps):
        a = rng.integers(0, rt.n_actions, size=shape)
        a[rng.random(shape) < eos_p] = eos_action
        out.append(a)
    return out


def trajectory(venv: gym.vector.VectorEnv, actions: list[np.ndarray], seed: int = 7) -> list[Any]:
    steps: list[Any] = [venv.reset(seed=seed)]
    steps += [venv.step(a) for a in actions]
    return steps


def assert_same_trajectory(native: list[Any], sync: list[Any]) -> None:
    assert len(native) == len(sync)
    for t, (x, y) in enumerate(zip(native, sync)):
        assert len(x) == len(y)
        for k, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"step {t} item {k}")


def pair(env_id: str, n: int = N, mode: Any = AutoresetMode.NEXT_STEP, **kw: Any) -> tuple[Any, Any]:
    native = gym.make_vec(env_id, num_envs=n, autoreset_mode=mode, **kw)
    sync = gym.make_vec(
        env_id, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kw
    )
    return native, sync


# -- routing and spaces ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("env_id", "cls"), [(SENT_TOKEN, TokenVectorEnv), (SENT_SEQ, SequenceVectorEnv)])
def test_make_vec_uses_the_native_vector_env_by_default(env_id: str, cls: type) -> None:
    venv = gym.make_vec(env_id, num_envs=3)
    assert type(venv) is cls and venv.num_envs == 3
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert venv.spec is not None and venv.spec.id == env_id


@pytest.mark.parametrize("env_id", [SENT_TOKEN, SENT_SEQ, TARGET])
def test_spaces_match_the_single_env(env_id: str) -> None:
    venv = gym.make_vec(env_id, num_envs=3, max_new_tokens=4)
    single = gym.make(env_id, max_new_tokens=4)
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    assert venv.observation_space["input_ids"].shape == (3, *single.observation_space["input_ids"].shape)
    assert venv.action_space == gym.vector.utils.batch_space(single.action_space, 3)
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    obs, *_ = venv.step(venv.action_space.sample())
    assert venv.observation_space.contains(obs)


def test_sync_mode_accepts_vector_only_options_and_wrappers() -> None:
    venv = gym.make_vec(
        SENT_TOKEN,
        num_envs=2,
        vectorization_mode="sync",
        wrappers=[gym.wrappers.RecordEpisodeStatistics],
        autoreset_mode="same_step",
        scorer_batch_size=4,
        max_new_tokens=3,
    )
    assert isinstance(venv, SyncVectorEnv)
    venv.reset(seed=0)
    for _ in range(3):
        *_, info = venv.step(np.array([5, 6]))
    assert info["_episode"].all()  # the wrapper saw the episodes end


def test_native_mode_rejects_wrappers_and_points_to_sync() -> None:
    with pytest.raises(gym.error.Error, match="wrappers"):
        gym.make_vec(SENT_TOKEN, num_envs=2, wrappers=[gym.wrappers.RecordEpisodeStatistics])


# -- parity with SyncVectorEnv ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "kw"),
    [
        (SENT_TOKEN, {"max_new_tokens": 5}),
        (SENT_TOKEN, {"max_new_tokens": 4, "reward_shaping": "delta"}),
        (TARGET, {}),
        (SENT_SEQ, {"max_new_tokens": 5}),
        ("aligngym/Keywords-Token-v0", {"max_new_tokens": 3, "min_new_tokens": 2, "stop": ["."]}),
    ],
)
def test_next_step_trajectories_match_sync_vector_env(env_id: str, kw: dict[str, Any]) -> None:
    native, sync = pair(env_id, **kw)
    actions = random_actions(native, 14)
    assert_same_trajectory(trajectory(native, actions), trajectory(sync, actions))


def test_stop_strings_end_episodes_like_the_single_env() -> None:
    kw = {"prompts": ["Say it", "Again"], "scorer": "length", "stop": ["."], "max_new_tokens": 5}
    native, sync = pair("aligngym/Text-Token-v0", n=3, **kw)
    dot = native.unwrapped.runtime.tokenizer.single_token_id(".")
    actions = [np.array([20, 21, 22]), np.array([dot, 23, 24]), np.array([25, dot, 26])] * 3
    got = trajectory(native, actions)
    assert_same_trajectory(got, trajectory(sync, actions))
    _, _, term, _, info = got[2]
    assert term[0] and info["finish_reason"][0] == "stop" and "." not in info["completion"][0]


@pytest.mark.parametrize("env_id", [SENT_TOKEN, SENT_SEQ])
def test_same_step_final_obs_and_final_info_match_sync_vector_env(env_id: str) -> None:
    native, sync = pair(env_id, mode=AutoresetMode.SAME_STEP, max_new_tokens=4)
    assert native.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    actions = random_actions(native, 10)
    got = trajectory(native, actions)
    assert_same_trajectory(got, trajectory(sync, actions))
    ends = [info for *_, info in got[1:] if "final_info" in info]
    assert ends and all("score" in info["final_info"] and "prompt" in info for info in ends)


def test_disabled_mode_matches_sync_with_reset_mask() -> None:
    native, sync = pair(SENT_TOKEN, mode=AutoresetMode.DISABLED, max_new_tokens=3)
    for venv in (native, sync):
        venv.reset(seed=1)
    for a in random_actions(native, 12, seed=3):
        x, y = native.step(a), sync.step(a)
        assert_same_trajectory([x], [y])
        done = x[2] | x[3]
        if done.any():
            assert_same_trajectory(
                [native.reset(options={"reset_mask": done})], [sync.reset(options={"reset_mask": done})]
            )


def test_disabled_mode_refuses_to_step_an_ended_row() -> None:
    venv = gym.make_vec(SENT_SEQ, num_envs=2, autoreset_mode=AutoresetMode.DISABLED, max_new_tokens=2)
    venv.reset(seed=0)
    venv.step(np.ones((2, 2), dtype=np.int64))
    with pytest.raises(RuntimeError, match="reset_mask"):
        venv.step(np.ones((2, 2), dtype=np.int64))


def test_reference_logprob_terms_match_sync_vector_env() -> None:
    torch = pytest.importorskip("torch")

    class Bigram(torch.nn.Module):
        """A stand-in causal LM (logits depend on the last token only): no transformers import, fast."""

        def __init__(self, vocab: int) -> None:
            super().__init__()
            self.table = torch.nn.Embedding(vocab, vocab)
            self.config = SimpleNamespace(vocab_size=vocab)

        def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
            return SimpleNamespace(logits=self.table(input_ids))

    torch.manual_seed(0)
    model = Bigram(aligngym.envs.load_tokenizer().vocab_size)
    kw = {"max_new_tokens": 3, "reference_model": model, "ref_logprob_coef": 0.1, "device": "cpu"}
    for env_id in (SENT_TOKEN, SENT_SEQ):
        native, sync = pair(env_id, n=3, **kw)
        actions = random_actions(native, 5)
        for x, y in zip(trajectory(native, actions)[1:], trajectory(sync, actions)[1:]):
            np.testing.assert_allclose(x[1], y[1], rtol=1e-5, atol=1e-5)
            assert ("ref_logprob" in x[4]) == ("ref_logprob" in y[4])
            if "ref_logprob" in y[4]:  # not on the NEXT_STEP reset step of the sequence env
                np.testing.assert_allclose(x[4]["ref_logprob"], y[4]["ref_logprob"], rtol=1e-5, atol=1e-5)
                assert_same(x[4]["_ref_logprob"], y[4]["_ref_logprob"])


# -- batch mode -----------------------------------------------------------------------------------------------------
def test_batch_mode_idles_finished_rows_then_resets_all_together() -> None:
    kw = {"max_new_tokens": 4}
    venv = gym.make_vec(SENT_TOKEN, num_envs=3, autoreset_mode="batch", **kw)
    assert venv.metadata["autoreset_mode"] == BATCH
    singles = [gym.make(SENT_TOKEN, **kw) for _ in range(3)]
    obs, _ = venv.reset(seed=5)
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=5 + i)
        np.testing.assert_array_equal(obs["input_ids"][i], o["input_ids"])
    eos = venv.unwrapped.runtime.eos_id
    # row 0 ends at once (EOS), row 1 after two tokens, row 2 at the budget
    plan = [
        [eos, 7, 8],
        [9, eos, 10],
        [11, 12, 13],
        [10**6, -1, 16],
    ]  # idle rows' actions are not even checked
    done = np.zeros(3, bool)
    frozen: dict[int, np.ndarray] = {}
    for a in plan:
        obs, rew, term, trunc, info = venv.step(np.array(a))
        for i, env in enumerate(singles):
            if done[i]:  # idle: frozen observation, no reward, no second termination, action ignored
                assert rew[i] == 0.0 and not term[i] and not trunc[i]
                assert not any(mask[i] for key, mask in info.items() if key.startswith("_"))  # no info
                np.testing.assert_array_equal(obs["input_ids"][i], frozen[i])
                continue
            o, r, te, _, inf = env.step(a[i])
            np.testing.assert_array_equal(obs["input_ids"][i], o["input_ids"])
            assert (rew[i], term[i]) == (r, te)
            if te:
                assert info["score"][i] == inf["score"]
        frozen.update({i: obs["input_ids"][i].copy() for i in np.flatnonzero(term)})
        done |= term
        np.testing.assert_array_equal(venv.unwrapped.active, ~done)
    assert done.all()
    obs, rew, term, _, info = venv.step(np.array([1, 2, 3]))  # the whole batch resets together
    assert not rew.any() and not term.any() and info["_prompt"].all()
    for i, env in enumerate(singles):
        o, _ = env.reset()  # no seed: each row's generator continues, as in a single env
        np.testing.assert_array_equal(obs["input_ids"][i], o["input_ids"])


def test_batch_mode_sequence_env_resets_on_the_next_step() -> None:
    venv = gym.make_vec(SENT_SEQ, num_envs=2, autoreset_mode="batch", max_new_tokens=3)
    venv.reset(seed=0)
    a = np.full((2, 3), 5)
    _, _, term, _, info = venv.step(a)
    assert term.all() and info["_score"].all()
    obs, rew, term, _, info = venv.step(a)
    assert not term.any() and not rew.any() and info["_prompt"].all() and "score" not in info
    assert (obs["attention_mask"][:, -3:] == 0).all()


# -- seeding --------------------------------------------------------------------------------------------------------
def test_same_seed_same_trajectory_and_seed_list_matches_int_seed() -> None:
    a = gym.make_vec(SENT_TOKEN, num_envs=N, max_new_tokens=3)
    b = gym.make_vec(SENT_TOKEN, num_envs=N, max_new_tokens=3)
    actions = random_actions(a, 8)
    assert_same_trajectory(trajectory(a, actions, seed=11), trajectory(b, actions, seed=11))
    obs_int, _ = a.reset(seed=11)
    obs_list, _ = b.reset(seed=[11 + i for i in range(N)])
    assert_same(obs_int, obs_list)
    assert a.np_random_seed == tuple(11 + i for i in range(N))


def test_rows_draw_from_their_own_generators() -> None:
    venv = gym.make_vec(SENT_TOKEN, num_envs=8)
    _, info = venv.reset(seed=0)
    assert len(set(info["prompt_index"].tolist())) > 1  # not one shared draw
    _, other = venv.reset(seed=100)
    assert not np.array_equal(info["prompt_index"], other["prompt_index"])


def test_reset_options_pick_prompts_per_row() -> None:
    venv = gym.make_vec(SENT_TOKEN, num_envs=3)
    _, info = venv.reset(options={"prompt_index": [2, 0, 1]})
    assert info["prompt_index"].tolist() == [2, 0, 1]
    _, info = venv.reset(options={"prompt": "The film was"})
    assert list(info["prompt"]) == ["The film was"] * 3 and (info["prompt_index"] == -1).all()


# -- scorer batching ------------------------------------------------------------------------------------------------
class CountingScorer:
    """A user scorer that records the batch size of every call."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, prompts: list[str], completions: list[str], **context: Any) -> np.ndarray:
        self.calls.append(len(completions))
        return np.array([len(c) for c in completions], dtype=np.float32)


def test_one_scorer_call_per_batch_of_finished_episodes() -> None:
    scorer = CountingScorer()
    venv = TokenVectorEnv(8, task="Text", prompts=["a", "b", "c"], scorer=scorer, max_new_tokens=3)
    venv.reset(seed=0)
    for _ in range(3):  # no EOS: every row ends at the budget, on the same step
        venv.step(np.full(8, 20))
    assert scorer.calls == [8]


def test_scorer_batch_size_chunks_the_call() -> None:
    scorer = CountingScorer()
    venv = SequenceVectorEnv(
        8, task="Text", prompts=["a", "b"], scorer=scorer, max_new_tokens=2, scorer_batch_size=3
    )
    venv.reset(seed=0)
    _, rew, *_ = venv.step(np.full((8, 2), 20))
    assert scorer.calls == [3, 3, 2] and rew.shape == (8,)


def test_ragged_ends_score_only_the_rows_that_end() -> None:
    scorer = CountingScorer()
    venv = TokenVectorEnv(4, task="Text", prompts=["a"], scorer=scorer, max_new_tokens=3)
    venv.reset(seed=0)
    eos = venv.runtime.eos_id
    venv.step(np.array([eos, 20, 20, eos]))
    venv.step(np.array([20, 20, 20, 20]))  # NEXT_STEP: rows 0 and 3 are reset, not stepped
    assert scorer.calls == [2]


# -- masks, render and errors ---------------------------------------------------------------------------------------
def test_action_masks_have_one_row_per_env_and_block_early_eos() -> None:
    venv = gym.make_vec(SENT_TOKEN, num_envs=3, min_new_tokens=1, max_new_tokens=3)
    _, info = venv.reset(seed=0)
    masks = venv.unwrapped.action_masks()
    eos = venv.unwrapped.runtime.eos_id
    assert masks.shape == (3, venv.single_action_space.n) and masks.dtype == np.bool_
    assert not masks[:, eos].any()
    np.testing.assert_array_equal(masks, info["action_mask"])
    venv.step(np.array([5, 5, 5]))
    assert venv.unwrapped.action_masks()[:, eos].all()
    seq = gym.make_vec(SENT_SEQ, num_envs=2, max_new_tokens=3)
    seq.reset(seed=0)
    assert seq.unwrapped.action_masks().shape == (2, 3 * seq.single_action_space.nvec[0])


def test_returned_arrays_are_not_reused() -> None:
    venv = gym.make_vec(SENT_TOKEN, num_envs=2, max_new_tokens=3)
    obs, info = venv.reset(seed=0)
    obs["input_ids"][:] = 0
    info["action_mask"][:] = False
    obs2, *_, info2 = venv.step(np.array([5, 6]))
    assert obs2["input_ids"].any() and info2["action_mask"].any()


def test_render_ansi_gives_one_string_per_row() -> None:
    venv = gym.make_vec(SENT_TOKEN, num_envs=2, render_mode="ansi")
    venv.reset(options={"prompt": "The film was"})
    frames = venv.render()
    assert len(frames) == 2 and frames[0].startswith("Prompt: The film was")


@pytest.mark.parametrize(
    ("env_id", "actions", "error", "match"),
    [
        (SENT_TOKEN, np.zeros(3, dtype=np.int64), ValueError, r"shape \(2,\)"),
        (SENT_TOKEN, np.zeros((2, 1), dtype=np.int64), ValueError, r"shape \(2,\)"),
        (SENT_TOKEN, np.zeros(2, dtype=np.float32), TypeError, "integer"),
        (SENT_TOKEN, np.array([0, 10**6]), ValueError, r"out of range.*rows \[1\]"),
        (SENT_SEQ, np.zeros(2, dtype=np.int64), ValueError, r"shape \(2, 3\)"),
        (SENT_SEQ, np.full((2, 3), -1), ValueError, "out of range"),
    ],
)
def test_bad_actions_raise_clear_errors(env_id: str, actions: np.ndarray, error: type, match: str) -> None:
    venv = gym.make_vec(env_id, num_envs=2, max_new_tokens=3)
    venv.reset(seed=0)
    with pytest.raises(error, match=match):
        venv.step(actions)


def test_step_before_reset_and_bad_options_raise() -> None:
    venv = gym.make_vec(SENT_TOKEN, num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.make_vec(SENT_TOKEN, num_envs=2, autoreset_mode="sometimes")
    with pytest.raises(TypeError, match="unknown option"):
        gym.make_vec(SENT_TOKEN, num_envs=2, max_new_token=3)
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(SENT_TOKEN, num_envs=0)
    venv.reset(seed=0)
    with pytest.raises(TypeError, match="reset_mask"):
        venv.reset(options={"reset_mask": [True, False]})


def test_max_episode_steps_truncates_like_time_limit() -> None:
    native = gym.make_vec(SENT_TOKEN, num_envs=2, max_new_tokens=5, max_episode_steps=2)
    sync = gym.make_vec(
        SENT_TOKEN, num_envs=2, vectorization_mode="sync", max_new_tokens=5, max_episode_steps=2
    )
    actions = [np.array([5, 6])] * 5
    assert_same_trajectory(trajectory(native, actions), trajectory(sync, actions))


# -- throughput benchmark smoke test --------------------------------------------------------------------------------
def test_throughput_quick_writes_the_expected_json(tmp_path: Any) -> None:
    from aligngym.benchmarks.throughput import main

    out = tmp_path / "throughput.json"
    assert main(["--quick", "--parts", "a,b,c", "--out", str(out)]) == 0  # (d)-(f): tests/test_throughput.py
    result = json.loads(out.read_text())
    assert {"machine", "settings", "env_steps", "rollout", "overhead", "targets"} <= set(result)
    assert set(result["env_steps"][-1]["steps_per_s"]["wall"]) == {"native", "sync", "async"}
    assert result["env_steps"][-1]["steps_per_s"]["cpu"]["async"] is None  # its work runs in other processes
    assert set(result["rollout"]["tokens_per_s"]["cpu"]) == {"env_api_length", "kv_loop_no_env", "generate"}
    assert "env_api_length_vs_generate" in result["rollout"]["ratios"]["wall"]
    assert {"env_step_ms", "policy_step_ms", "env_vs_policy_step"} <= set(result["overhead"])
    assert set(result["targets"]) == {"a_native_vs_sync", "b_rollout_vs_generate", "c_env_overhead"}
    assert all(
        isinstance(t["value"], float) and isinstance(t["met"], bool) for t in result["targets"].values()
    )


@pytest.mark.gpu
def test_throughput_quick_runs_the_policy_on_cuda(tmp_path: Any) -> None:
    from aligngym.benchmarks.throughput import main

    out = tmp_path / "throughput.json"
    assert main(["--quick", "--device", "cuda", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["machine"]["device"].startswith("cuda")
