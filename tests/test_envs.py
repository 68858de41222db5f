"""The env contract over the whole registry: checkers, seeding, pickling, bad input, episode mechanics."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aligngym.envs
from aligngym.envs import list_envs
from aligngym.envs.scorers import ScorerError
from tests.conftest import env_kwargs

ENV_IDS = list(list_envs())
MINILM_TARGET_VOCAB = ["red", "green", "blue", "yellow", "[SEP]"]


def make(env_id: str, **extra):
    return gym.make(env_id, **env_kwargs(env_id, **extra))


def minilm_kwargs(env_id: str) -> dict:
    kw = {"tokenizer": "minilm"}
    if "Target" in env_id:
        kw["action_vocab"] = MINILM_TARGET_VOCAB
    return kw


def rollout(env, seed: int, action_seed: int) -> list:
    """Actions drawn from a seeded space; returns (obs ids, reward, terminated, completion) per step."""
    env.action_space.seed(action_seed)
    obs, info = env.reset(seed=seed)
    trace = [obs["input_ids"].tolist()]
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((obs["input_ids"].tolist(), reward, terminated, info.get("completion")))
        done = terminated or truncated
    return trace


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id: str) -> None:
    env = make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id: str) -> None:
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_with_minilm_tokenizer(env_id: str) -> None:
    env = make(env_id, **minilm_kwargs(env_id))
    assert env.unwrapped.runtime.vocab_size == 30522
    gym_check_env(env.unwrapped)
    sb3_check_env(env.unwrapped)


def test_minilm_has_no_eos_and_says_so() -> None:
    env = make("aligngym/Target-Token-v0", **minilm_kwargs("aligngym/Target-Token-v0"))
    _, info = env.reset(seed=0)
    assert "[SEP]" in info["eos_note"]
    sep = env.unwrapped.runtime.eos_id
    assert env.unwrapped.runtime.tokenizer.id_to_token(sep) == "[SEP]"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode(env_id: str) -> None:
    a = rollout(make(env_id), seed=3, action_seed=7)
    b = rollout(make(env_id), seed=3, action_seed=7)
    assert a == b


def test_different_seeds_draw_different_prompts() -> None:
    env = make("aligngym/Sentiment-Token-v0")
    prompts = {env.reset(seed=s)[1]["prompt"] for s in range(20)}
    assert len(prompts) > 5


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_pickles_and_continues_identically(env_id: str) -> None:
    env = make(env_id)
    env.action_space.seed(0)
    env.reset(seed=1)
    clone = pickle.loads(pickle.dumps(env))
    action = env.action_space.sample()
    out_a = env.step(action)
    out_b = clone.step(action)
    assert np.array_equal(out_a[0]["input_ids"], out_b[0]["input_ids"])
    assert out_a[1:4] == out_b[1:4]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_close_twice_is_fine(env_id: str) -> None:
    env = make(env_id)
    env.reset(seed=0)
    env.close()
    env.close()


def test_observation_layout_prompt_left_padded_completion_after() -> None:
    env = make("aligngym/Target-Token-v0")
    rt = env.unwrapped.runtime
    obs, info = env.reset(seed=0)
    ids = rt.tokenizer.encode(info["prompt"])
    p = rt.max_prompt_tokens
    assert obs["input_ids"][p - len(ids) : p].tolist() == ids
    assert obs["attention_mask"].tolist() == [0] * (p - len(ids)) + [1] * len(ids) + [0] * rt.max_new_tokens
    obs, *_ = env.step(2)
    assert obs["input_ids"][p] == rt.token_of(2)
    assert obs["attention_mask"][p] == 1 and obs["attention_mask"][p + 1] == 0


def test_token_env_pays_score_only_at_the_end() -> None:
    env = make("aligngym/Target-Token-v0")
    _, info = env.reset(seed=0, options={"prompt_index": 0})
    target = env.unwrapped.runtime.rows[0]["target"].split()
    words = [w.strip() for w in aligngym.envs.tasks.TARGET_WORDS]
    rewards = []
    for w in target:
        _, r, terminated, _, info = env.step(words.index(w))
        rewards.append(r)
        assert not terminated
    _, r, terminated, truncated, info = env.step(4)  # EOS
    assert terminated and not truncated
    assert rewards == [0.0] * len(target)
    assert r == 1.0 and info["score"] == 1.0
    assert info["finish_reason"] == "eos"
    assert info["completion"].split() == target
    assert set(info) >= {"prompt", "completion", "completion_ids", "score", "reward_components"}
    assert info["reward_components"] == {"target": 1.0}


def test_token_budget_terminates() -> None:
    env = make("aligngym/Target-Token-v0")
    env.reset(seed=0)
    for _ in range(env.unwrapped.runtime.max_new_tokens - 1):
        assert not env.step(0)[2]
    *_, terminated, truncated, info = env.step(0)
    assert terminated and not truncated and info["finish_reason"] == "length"


def test_step_after_end_or_before_reset_raises() -> None:
    env = make("aligngym/Target-Sequence-v0")
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(np.zeros(4, dtype=np.int64))
    env.reset(seed=0)
    env.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, dtype=np.int64))


def test_sequence_env_cuts_completion_at_first_eos() -> None:
    env = make("aligngym/Target-Sequence-v0")
    env.reset(seed=0, options={"prompt_index": 0})  # target: one word
    target = env.unwrapped.runtime.rows[0]["target"]
    words = [w.strip() for w in aligngym.envs.tasks.TARGET_WORDS]
    action = np.array([words.index(target), 4, 0, 1])
    obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and reward == 1.0 and info["finish_reason"] == "eos"
    assert len(info["completion_ids"]) == 2
    assert obs["attention_mask"].sum() == env.unwrapped.runtime.prompt_ids[0].size + 2


@pytest.mark.parametrize("action", [5, -1, 10**6])
def test_out_of_range_token_action_raises(action: int) -> None:
    env = make("aligngym/Target-Token-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of range for Discrete\(5\)"):
        env.step(action)


@pytest.mark.parametrize("action", [1.5, "3", True, None])
def test_non_integer_token_action_raises_type_error(action) -> None:
    env = make("aligngym/Target-Token-v0")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="integer"):
        env.step(action)


def test_token_action_accepts_numpy_scalars_and_one_element_arrays() -> None:
    env = make("aligngym/Target-Token-v0")
    env.reset(seed=0)
    env.step(np.int64(1))
    env.step(np.array([2]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([1, 2]))


@pytest.mark.parametrize("shape", [(3,), (5,), (4, 1), ()])
def test_wrong_shaped_sequence_action_raises(shape) -> None:
    env = make("aligngym/Target-Sequence-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.step(np.zeros(shape, dtype=np.int64))


def test_out_of_range_sequence_action_names_positions() -> None:
    env = make("aligngym/Target-Sequence-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[7\] out of range.*positions \[2\]"):
        env.step(np.array([0, 1, 7, 0]))
    with pytest.raises(TypeError, match="dtype float"):
        env.step(np.zeros(4, dtype=np.float32))


@pytest.mark.parametrize("prompts", [[], ()])
def test_empty_prompt_set_raises(prompts) -> None:
    with pytest.raises(ValueError, match="empty"):
        gym.make("aligngym/Text-Token-v0", prompts=prompts, scorer="sentiment")


def test_bad_prompt_rows_raise() -> None:
    with pytest.raises(TypeError, match="list of prompts"):
        gym.make("aligngym/Text-Token-v0", prompts="one string", scorer="sentiment")
    with pytest.raises(ValueError, match="no 'prompt' field"):
        gym.make("aligngym/Text-Token-v0", prompts=[{"text": "x"}], scorer="sentiment")
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        gym.make("aligngym/Text-Token-v0", prompts=["ok", 3], scorer="sentiment")


def test_text_task_needs_prompts_and_scorer() -> None:
    with pytest.raises(ValueError, match="prompts="):
        gym.make("aligngym/Text-Token-v0", scorer="sentiment")
    with pytest.raises(ValueError, match="needs a scorer"):
        gym.make("aligngym/Text-Token-v0", prompts=["hi"])


def test_long_prompt_is_left_truncated_with_a_warning() -> None:
    long = "word " * 200 + "the end"
    with pytest.warns(UserWarning, match="left-truncated"):
        env = gym.make("aligngym/Text-Token-v0", prompts=[long], scorer="sentiment", max_prompt_tokens=8)
    obs, _ = env.reset(seed=0)
    rt = env.unwrapped.runtime
    assert obs["attention_mask"][:8].sum() == 8
    assert obs["input_ids"][:8].tolist() == rt.tokenizer.encode(long)[-8:]


def test_long_prompt_with_truncation_error_raises() -> None:
    with pytest.raises(ValueError, match="max_prompt_tokens=8"):
        gym.make(
            "aligngym/Text-Token-v0",
            prompts=["word " * 50],
            scorer="sentiment",
            max_prompt_tokens=8,
            prompt_truncation="error",
        )


def test_empty_prompt_becomes_beginning_of_text_token() -> None:
    env = gym.make("aligngym/Text-Token-v0", prompts=[""], scorer="length")
    obs, _ = env.reset(seed=0)
    rt = env.unwrapped.runtime
    assert obs["attention_mask"].sum() == 1
    assert obs["input_ids"][rt.max_prompt_tokens - 1] == rt.tokenizer.bos_id


def test_custom_prompt_through_reset_options() -> None:
    env = gym.make("aligngym/Target-Sequence-v0")
    _, info = env.reset(seed=0, options={"prompt": {"prompt": "Say: blue.", "target": "blue"}})
    assert info["prompt"] == "Say: blue." and info["prompt_index"] == -1
    _, reward, *_ = env.step(np.array([2, 4, 4, 4]))
    assert reward == 1.0
    with pytest.raises(ValueError, match="prompt_index"):
        env.reset(options={"prompt_index": 99})
    with pytest.raises(ValueError, match=r"needs the context columns \['target'\]"):
        env.reset(options={"prompt": "Say: blue."})


def test_action_vocab_maps_actions_to_token_ids() -> None:
    env = gym.make(
        "aligngym/Text-Token-v0", prompts=["hi"], scorer="length", action_vocab=[" red", " blue", 1]
    )
    rt = env.unwrapped.runtime
    assert env.action_space == gym.spaces.Discrete(3)
    assert rt.token_of(0) == rt.tokenizer.encode(" red")[0]
    assert rt.token_of(2) == 1


def test_action_vocab_rejects_multi_token_and_bad_entries() -> None:
    with pytest.raises(ValueError, match="one token"):
        gym.make(
            "aligngym/Text-Token-v0", prompts=["hi"], scorer="length", action_vocab=[" antidisestablishment"]
        )
    with pytest.raises(ValueError, match="out of range"):
        gym.make("aligngym/Text-Token-v0", prompts=["hi"], scorer="length", action_vocab=[10**7])
    with pytest.raises(ValueError, match="same token id"):
        gym.make("aligngym/Text-Token-v0", prompts=["hi"], scorer="length", action_vocab=[5, 5])


def test_action_masks_block_eos_before_min_new_tokens() -> None:
    env = gym.make("aligngym/Target-Token-v0", min_new_tokens=2)
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True, True, True, True, False]
    assert env.unwrapped.action_masks().tolist() == [True, True, True, True, False]
    env.step(0)
    _, _, _, _, info = env.step(0)
    assert info["action_mask"].all()
    seq = gym.make("aligngym/Target-Sequence-v0", min_new_tokens=1)
    assert seq.unwrapped.action_masks().shape == (4 * 5,)
    assert not seq.unwrapped.action_masks()[4]


def test_full_vocab_masks_special_tokens_other_than_eos() -> None:
    env = gym.make("aligngym/Sentiment-Token-v0")
    rt = env.unwrapped.runtime
    mask = env.unwrapped.action_masks()
    assert mask.shape == (rt.vocab_size,)
    assert not mask[rt.tokenizer.pad_id] and mask[rt.eos_id]


def test_stop_string_ends_episode_and_is_cut() -> None:
    env = gym.make("aligngym/Text-Token-v0", prompts=["hi"], scorer="length", stop=["."], max_new_tokens=8)
    env.reset(seed=0)
    dot = env.unwrapped.runtime.tokenizer.encode(".")[0]
    red = env.unwrapped.runtime.tokenizer.encode(" red")[0]
    assert not env.step(red)[2]
    *_, terminated, _, info = env.step(dot)
    assert terminated and info["finish_reason"] == "stop" and info["completion"] == " red"


def test_delta_reward_shaping_sums_to_final_score_minus_empty_score() -> None:
    kw = {"prompts": ["Say: red blue."], "scorer": "keywords", "max_new_tokens": 3}
    base = gym.make("aligngym/Text-Token-v0", **kw)
    shaped = gym.make("aligngym/Text-Token-v0", reward_shaping="delta", **kw)
    # keywords come from a fixed list through a user scorer with context
    for env in (base, shaped):
        env.unwrapped.runtime._scorer = aligngym.envs.scorers.make_scorer(
            "keywords", keywords=["red", "blue"]
        )
    red, blue = (base.unwrapped.runtime.tokenizer.encode(w)[0] for w in (" red", " blue"))
    returns = []
    for env in (base, shaped):
        env.reset(seed=0)
        total, rewards = 0.0, []
        for tok in (red, red, blue):
            _, r, *_ = env.step(tok)
            rewards.append(r)
            total += r
        returns.append(total)
    assert returns[0] == pytest.approx(1.0) and returns[1] == pytest.approx(1.0)
    assert rewards == pytest.approx([0.5, 0.0, 0.5])


def test_render_ansi_shows_prompt_and_completion() -> None:
    env = gym.make("aligngym/Target-Token-v0", render_mode="ansi")
    _, info = env.reset(seed=0)
    env.step(0)
    text = env.render()
    assert info["prompt"] in text and "red" in text
    with pytest.raises(ValueError, match="render_mode"):
        gym.make("aligngym/Target-Token-v0", render_mode="human")


def test_unknown_option_raises_but_vector_only_options_are_accepted() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        gym.make("aligngym/Target-Token-v0", max_new_token=3)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['vocab'\]"):  # a local name of TaskRuntime
        gym.make("aligngym/Target-Token-v0", vocab=3)
    gym.make("aligngym/Target-Token-v0", autoreset_mode="next_step")


def test_scorer_returning_nan_raises_at_env_border() -> None:
    def bad(prompts, completions):
        return [float("nan")] * len(completions)

    env = gym.make("aligngym/Text-Sequence-v0", prompts=["hi"], scorer=bad, max_new_tokens=2)
    env.reset(seed=0)
    with pytest.raises(ScorerError, match="'bad'.*non-finite"):
        env.step(np.array([5, 6]))


def test_scorer_that_raises_is_named() -> None:
    def broken(prompts, completions):
        raise KeyError("oops")

    env = gym.make("aligngym/Text-Sequence-v0", prompts=["hi"], scorer=broken, max_new_tokens=2)
    env.reset(seed=0)
    with pytest.raises(ScorerError, match="'broken' raised KeyError"):
        env.step(np.array([5, 6]))


def test_splits_are_disjoint_and_target_test_is_train() -> None:
    train = {r["prompt"] for r in gym.make("aligngym/Sentiment-Token-v0").unwrapped.runtime.rows}
    test = {r["prompt"] for r in gym.make("aligngym/Sentiment-Token-v0", split="test").unwrapped.runtime.rows}
    assert train and test and not train & test
    t_train = gym.make("aligngym/Target-Token-v0").unwrapped.runtime.rows
    t_test = gym.make("aligngym/Target-Token-v0", split="test").unwrapped.runtime.rows
    assert t_train == t_test
    with pytest.raises(ValueError, match="split"):
        gym.make("aligngym/Target-Token-v0", split="validation")


def test_keywords_prompts_carry_context_into_the_scorer() -> None:
    env = gym.make("aligngym/Keywords-Sequence-v0", split="test")
    _, info = env.reset(seed=0, options={"prompt_index": 0})
    row = env.unwrapped.runtime.rows[0]
    ids = env.unwrapped.runtime.tokenizer.encode(" " + " ".join(row["keywords"]))
    n = env.unwrapped.runtime.max_new_tokens
    action = np.array((ids + [1] * n)[:n])
    _, reward, *_, info = env.step(action)
    assert reward == 1.0 and info["reward_components"]["keywords"] == 1.0


def test_import_is_light_and_registration_idempotent() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('error');"
        "import aligngym.envs, importlib; importlib.reload(aligngym.envs); aligngym.envs.register_all();"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules);"
        "import gymnasium as gym; gym.make('aligngym/Target-Token-v0'); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_make_imports_the_module_on_the_fly() -> None:
    code = "import gymnasium as gym; gym.make('aligngym.envs:aligngym/Target-Token-v0'); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_list_envs_has_both_granularities_for_every_task() -> None:
    ids = list_envs()
    for task in aligngym.envs.TASKS:
        assert f"aligngym/{task}-Token-v0" in ids and f"aligngym/{task}-Sequence-v0" in ids
    assert all(isinstance(v, str) and v for v in ids.values())
    for env_id in ids:
        assert gym.spec(env_id).max_episode_steps is None


def test_list_envs_lists_observation_variants_on_request() -> None:
    base = list_envs()
    everything = list_envs(variants=True)
    assert set(base) < set(everything)
    for task in aligngym.envs.TASKS:
        for kind in ("Token", "Sequence"):
            for variant in ("Flat", "Embedding"):
                vid = f"aligngym/{task}-{kind}-{variant}-v0"
                assert vid in everything and vid not in base and vid in gym.registry
    flat = gym.make("aligngym/Target-Token-Flat-v0")  # registered by `import aligngym.envs` alone
    assert isinstance(flat.observation_space, gym.spaces.Box)


def test_register_env_records_ids_of_other_modules_with_their_description() -> None:
    from aligngym.envs.tasks import ENVS, register_env

    env_id = "aligngym/RegistryDemo-Token-v0"
    try:
        got = register_env(
            env_id,
            "aligngym.envs.core:TokenEnv",
            vector_entry_point="aligngym.envs.vector:TokenVectorEnv",
            kwargs={"task": "Target"},
            description="a demo id registered by another module",
        )
        assert got == env_id and list_envs()[env_id] == "a demo id registered by another module"
        assert (
            register_env(env_id, "aligngym.envs.core:TokenEnv", description="again") == env_id
        )  # idempotent
        env = gym.make(env_id)
        assert env.unwrapped.runtime.task.name == "Target"
    finally:
        ENVS.pop(env_id, None)
        gym.registry.pop(env_id, None)
    with pytest.raises(ValueError, match="aligngym/"):
        register_env("Demo-v0", "aligngym.envs.core:TokenEnv", description="x")
    with pytest.raises(ValueError, match="description"):
        register_env("aligngym/Demo-v0", "aligngym.envs.core:TokenEnv")


def test_moved_names_keep_their_old_homes() -> None:
    from aligngym.envs import core, recording, runtime, tasks, vector, vector_base, wrappers
    from aligngym.envs.data import data_path

    assert wrappers.RecordEpisodes is recording.RecordEpisodes
    assert wrappers.load_episodes is recording.load_episodes
    assert wrappers.runtime_of is core.runtime_of is runtime.runtime_of
    assert core.TaskRuntime is runtime.TaskRuntime
    assert tasks.data_path is data_path and data_path("keywords.jsonl").is_file()
    assert vector.AlignmentVectorEnv is vector_base.AlignmentVectorEnv
    assert wrappers.register_observation_variants is tasks.register_observation_variants


def test_scorer_modules_import_one_way() -> None:
    code = (
        "import sys; import aligngym.envs.scorers.classifier; "
        "assert 'aligngym.envs.scorers.reward_model' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
