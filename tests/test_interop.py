"""Interop with other RL codebases: every scorer as a TRL reward function, TRL's GRPO, a CleanRL-style PPO script.

The reward functions are called exactly as TRL's ``GRPOTrainer`` calls them (``prompts``, ``completions``,
``completion_ids``, the dataset columns, ``trainer_state``, ``log_extra``, ``log_metric``), in TRL's standard and
conversational formats. The example scripts under ``benchmarks/examples`` are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import sys
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest

import aligngym.envs  # noqa: F401
from aligngym.envs.scorers import list_scorers, make_scorer

EXAMPLES = Path(__file__).resolve().parents[1] / "benchmarks" / "examples"
#: scorers that load a neural model (tested by their own files); every other registered scorer is tested here
MODEL_BACKED = {"embedding", "fluency", "classifier", "reward_model", "preference_rm"}

PROMPTS = ["The soup was", "Say: red green.", "Write about dog, park, ball.", "Translate: bonjour"]
COMPLETIONS = [" wonderful and warm", " red green", "The dog chased a ball in the park.", " hello"]
COLUMNS = {  # dataset columns TRL passes through as keyword arguments (lists of length B)
    "keywords": [["soup"], ["red"], ["dog", "park", "ball"], ["hello"]],
    "reference": ["The soup was great.", "red green", "A dog plays with a ball in a park.", "hello"],
    "target": ["great", "red green", "dog", "hello"],
    "prompt_index": [0, 1, 2, 3],
    "split": ["train"] * 4,
}


def says_hello(prompt: str, completion: str, **row) -> float:
    """A verifier for the ``verifier`` scorer (module level so that it pickles)."""
    return float("hello" in completion)


def scorer_kwargs(name: str) -> dict:
    if name == "verifier":
        return {"verify": says_hello}
    if name == "human":
        return {"stdin": io.StringIO("4\n" * 64), "stdout": io.StringIO()}
    return {}


class TrainerStateStub:
    global_step = 3


def trl_kwargs(log: list) -> dict:
    """The keyword arguments TRL adds besides prompts, completions and the dataset columns."""
    return {
        "completion_ids": [[1, 2, 3]] * len(PROMPTS),
        "trainer_state": TrainerStateStub(),
        "log_extra": lambda name, values: log.append((name, values)),
        "log_metric": lambda name, value: log.append((name, value)),
    }


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"aligngym_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MODEL_FREE = [name for name in list_scorers() if name not in MODEL_BACKED]


def test_model_free_scorers_cover_the_basic_families():
    assert {"sentiment", "keywords", "bleu", "target", "length", "regex"} <= set(MODEL_FREE)


@pytest.mark.parametrize("name", MODEL_FREE)
def test_scorer_as_trl_reward_func_called_as_trl_does(name):
    scorer = make_scorer(name, **scorer_kwargs(name))
    reward_func = scorer.as_trl_reward_func()
    log: list = []
    rewards = reward_func(prompts=PROMPTS, completions=COMPLETIONS, **COLUMNS, **trl_kwargs(log))
    direct = make_scorer(name, **scorer_kwargs(name))(PROMPTS, COMPLETIONS, **COLUMNS)
    assert isinstance(rewards, list) and len(rewards) == len(PROMPTS)
    assert all(type(r) is float and np.isfinite(r) for r in rewards)
    np.testing.assert_allclose(rewards, direct, atol=1e-6)
    assert reward_func.__name__ == scorer.name  # TRL logs rewards/<__name__>/mean


@pytest.mark.parametrize("name", MODEL_FREE)
def test_scorer_as_trl_reward_func_reads_conversational_completions(name):
    reward_func = make_scorer(name, **scorer_kwargs(name)).as_trl_reward_func()
    prompts = [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    chat = reward_func(prompts=prompts, completions=completions, **COLUMNS, **trl_kwargs([]))
    plain = make_scorer(name, **scorer_kwargs(name)).as_trl_reward_func()(
        prompts=PROMPTS, completions=COMPLETIONS, **COLUMNS, **trl_kwargs([])
    )
    np.testing.assert_allclose(chat, plain, atol=1e-6)


def test_trl_internal_arguments_do_not_reach_the_scorer():
    seen: list[set] = []

    def record(prompts, completions, **context):
        seen.append(set(context))
        return [0.0] * len(completions)

    make_scorer(record).as_trl_reward_func()(
        prompts=PROMPTS, completions=COMPLETIONS, **COLUMNS, **trl_kwargs([])
    )
    assert seen == [set(COLUMNS)]


def test_composite_scorer_as_trl_reward_func_is_the_weighted_sum():
    reward_func = make_scorer({"sentiment": 1.0, "length": 0.5}).as_trl_reward_func()
    rewards = reward_func(prompts=PROMPTS, completions=COMPLETIONS, **trl_kwargs([]))
    expected = make_scorer("sentiment")(PROMPTS, COMPLETIONS) + 0.5 * make_scorer("length")(
        PROMPTS, COMPLETIONS
    )
    np.testing.assert_allclose(rewards, expected, atol=1e-6)


def test_trl_reward_func_pickles():
    reward_func = make_scorer("sentiment").as_trl_reward_func()
    again = pickle.loads(pickle.dumps(reward_func))
    assert again(prompts=PROMPTS, completions=COMPLETIONS) == reward_func(
        prompts=PROMPTS, completions=COMPLETIONS
    )


def test_trl_reward_func_rejects_a_non_text_completion():
    reward_func = make_scorer("sentiment").as_trl_reward_func()
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        reward_func(prompts=["p"], completions=[42])


@pytest.mark.slow
def test_trl_grpo_example_trains_with_our_scorer():
    pytest.importorskip("trl", reason="trl is not installed (optional extra 'trl')")
    result = load_example("trl_grpo_sentiment").main(
        ["--max-steps", "2", "--batch-size", "4", "--num-generations", "2"]
    )
    assert result["steps"] == 2
    assert all(np.isfinite(result["rewards"]))


# -- CleanRL-style PPO -------------------------------------------------------------------------------------------
def random_return(env_id: str, episodes: int = 200, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)
    total = 0.0
    for ep in range(episodes):
        env.reset(seed=ep)
        done = False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += float(r)
            done = term or trunc
    return total / episodes


def test_cleanrl_ppo_example_beats_random_on_target():
    cleanrl = load_example("cleanrl_ppo_token")
    args = cleanrl.parse_args(["--total-timesteps", "3000", "--seed", "1", "--eval-episodes", "64"])
    result = cleanrl.train(args)
    baseline = random_return("aligngym/Target-Token-v0")
    assert result["greedy_return"] > baseline + 0.15, (result, baseline)
    assert result["last_10pct_return"] > result["first_10pct_return"]


def test_cleanrl_ppo_example_runs_on_sentiment_with_action_vocab_and_sync_vectorization():
    cleanrl = load_example("cleanrl_ppo_token")
    vocab = [" good", " great", " bad", " the", ".", "<|endoftext|>"]
    sizes = ["--total-timesteps", "256", "--num-envs", "4", "--num-steps", "32", "--eval-episodes", "4"]
    args = cleanrl.parse_args(
        [
            "--env-id",
            "aligngym/Sentiment-Token-v0",
            "--action-vocab",
            *vocab,
            *sizes,
            "--vectorization-mode",
            "sync",
        ]
    )
    result = cleanrl.train(args)
    assert result["global_step"] == 256
    assert result["episodes"] > 0 and np.isfinite(result["greedy_return"])
