"""Self-play on the PettingZoo text games: REINFORCE, PPO and GRPO beat random, checkpoints round-trip, policies plug in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aligngym.agents.selfplay import HashedTabularPolicy, SelfPlayConfig, SelfPlayTrainer
from aligngym.envs.multiagent import referential_parallel_env, writer_critic_parallel_env

#: 4 objects (colours of one animal), 2 candidates, a one-word message from the 4 colour words
SMALL_GAME = {
    "n_candidates": 2,
    "message_len": 1,
    "animals": [" cat"],
    "vocab": [" red", " green", " blue", " yellow"],
}


def small_game():
    return referential_parallel_env(**SMALL_GAME)


def test_tabular_self_play_beats_random_on_the_referential_game() -> None:
    trainer = SelfPlayTrainer(
        small_game, SelfPlayConfig(seed=0, num_envs=32, policy="tabular", learning_rate=0.3)
    )
    before = trainer.evaluate(200, deterministic=False)["listener_0"]
    trainer.learn(2_000)
    after = trainer.evaluate(200)
    assert after["speaker_0"] == after["listener_0"]  # shared reward
    assert before < 0.65  # random: 1/2
    assert after["listener_0"] >= 0.9, (before, after)


def test_gru_self_play_runs_and_updates_both_policies() -> None:
    trainer = SelfPlayTrainer(
        small_game, SelfPlayConfig(seed=0, num_envs=8, policy_kwargs={"embed_dim": 8, "hidden_size": 16})
    )
    start = {a: [p.detach().clone() for p in trainer.policies[a].parameters()] for a in trainer.agents}
    trainer.learn(16)
    assert trainer.num_episodes == 16 and trainer.num_updates == 2
    for a in trainer.agents:
        assert any(not torch.equal(p, q) for p, q in zip(start[a], trainer.policies[a].parameters()))
    assert "charts/listener_0/episodic_return" in trainer.history[-1]


def test_shared_policy_is_one_module() -> None:
    trainer = SelfPlayTrainer(small_game, SelfPlayConfig(num_envs=4, policy="tabular", shared_policy=True))
    assert trainer.policies["speaker_0"] is trainer.policies["listener_0"]
    trainer.learn(4)
    one = trainer.act("listener_0", small_game().reset(seed=0)[0]["listener_0"])
    assert one.shape == () and 0 <= int(one) < 2


def test_same_seed_same_training() -> None:
    runs = []
    for _ in range(2):
        trainer = SelfPlayTrainer(
            small_game, SelfPlayConfig(seed=3, num_envs=8, policy="tabular", learning_rate=0.3)
        )
        trainer.learn(64)
        runs.append(trainer.policies["speaker_0"].table.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    trainer = SelfPlayTrainer(
        small_game, SelfPlayConfig(seed=0, num_envs=32, policy="tabular", learning_rate=0.3)
    )
    trainer.learn(256)
    trainer.save(tmp_path / "sp")
    assert {p.name for p in (tmp_path / "sp").iterdir()} == {"selfplay.json", "weights.safetensors"}
    loaded = SelfPlayTrainer.load(tmp_path / "sp", small_game)
    assert loaded.num_episodes == 256 and loaded.evaluate(50) == trainer.evaluate(50)
    with pytest.raises(ValueError, match="checkpoint is for"):
        SelfPlayTrainer.load(tmp_path / "sp", lambda: referential_parallel_env(n_candidates=3, message_len=1))


def test_writer_critic_self_play_runs() -> None:
    def game():
        return writer_critic_parallel_env(
            writer_tokens=3,
            critic_tokens=2,
            writer_vocab=[" good", " bad", "<|endoftext|>"],
            critic_vocab=[" more", " less"],
        )

    trainer = SelfPlayTrainer(game, SelfPlayConfig(seed=0, num_envs=4, policy="tabular"))
    trainer.learn(8)
    out = trainer.evaluate(8)
    assert set(out) == {"writer_0", "critic_0"} and all(np.isfinite(v) for v in out.values())


def test_hashed_table_separates_observations_and_ignores_padding() -> None:
    policy = HashedTabularPolicy(n_actions=3, seq_len=6)
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 6, 7, 9, 9, 9], [5, 6, 8, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    b = policy.bucket(ids, mask)
    assert b[0] == b[1] and b[0] != b[2]
    assert policy(ids, mask).shape == (3, 3)
    with pytest.raises(ValueError, match="policy"):
        SelfPlayConfig(policy="transformer")


def test_reinforce_results_are_unchanged_by_the_ppo_and_grpo_options() -> None:
    """Pinned from the REINFORCE-only trainer (commit ef6a3a0): the default algorithm must train bit for bit alike."""
    trainer = SelfPlayTrainer(
        small_game, SelfPlayConfig(seed=3, num_envs=8, policy="tabular", learning_rate=0.3)
    )
    assert trainer.config.algorithm == "reinforce"
    trainer.learn(64)
    speaker = float(trainer.policies["speaker_0"].table.weight.detach().double().abs().sum())
    assert speaker == pytest.approx(37.088994055986404, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algorithm": "a2c"}, "'a2c'"),
        ({"algorithm": "ppo", "n_epochs": 0}, "got 0, 1"),
        ({"algorithm": "ppo", "n_minibatches": -2}, "got 4, -2"),
        ({"algorithm": "ppo", "clip_range": 0.0}, "clip_range must be positive, got 0.0"),
        ({"algorithm": "grpo", "num_envs": 32, "num_generations": 5}, "num_generations=5 with num_envs=32"),
        ({"algorithm": "grpo", "num_generations": 1}, "num_generations=1"),
    ],
)
def test_config_errors_name_the_bad_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelfPlayConfig(**kwargs)


def test_ppo_self_play_beats_random_on_the_referential_game() -> None:
    trainer = SelfPlayTrainer(
        small_game,
        SelfPlayConfig(seed=0, num_envs=32, policy="tabular", learning_rate=0.3, algorithm="ppo", n_epochs=4),
    )
    before = trainer.evaluate(200, deterministic=False)["listener_0"]
    trainer.learn(640)
    after = trainer.evaluate(200)["listener_0"]
    assert before < 0.65  # random: 1/2
    assert after >= 0.9, (before, after)
    last = trainer.history[-1]
    assert trainer.num_updates == 20 and 0.0 <= last["losses/speaker_0/clipfrac"] <= 1.0
    assert np.isfinite(last["losses/listener_0/approx_kl"])


def test_grpo_self_play_beats_random_on_the_referential_game() -> None:
    config = SelfPlayConfig(
        seed=0, num_envs=32, policy="tabular", learning_rate=0.3, algorithm="grpo", num_generations=8
    )
    trainer = SelfPlayTrainer(small_game, config)
    before = trainer.evaluate(200, deterministic=False)["listener_0"]
    trainer.learn(1280)
    after = trainer.evaluate(200)["listener_0"]
    assert before < 0.65
    assert after >= 0.8, (before, after)
    assert all(b is None for b in trainer.baselines.values())  # no baseline, no value model


def test_grpo_groups_share_the_env_seed_and_normalise_returns_within_the_group() -> None:
    config = SelfPlayConfig(seed=0, num_envs=8, policy="tabular", algorithm="grpo", num_generations=4)
    trainer = SelfPlayTrainer(small_game, config)
    seen: list[list[int]] = []

    def record(envs, deterministic=False, seeds=None):
        seen.append([int(s) for s in seeds])
        return SelfPlayTrainer.play(trainer, envs, deterministic, seeds)

    trainer.play = record
    trainer.learn(8)
    assert len(set(seen[0][:4])) == 1 and len(set(seen[0][4:])) == 1 and seen[0][0] != seen[0][4]
    rollout = {
        "steps": {"speaker_0": [(i, None, None, 0, 0.0) for i in range(8)]},
        "rewards": [{"speaker_0": [r]} for r in (1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0)],
    }
    adv = trainer._advantages("speaker_0", rollout)
    assert adv[0] > 0 > adv[1] and adv[1] == adv[2] == adv[3]
    assert np.allclose(adv[:4].mean(), 0.0) and np.allclose(
        adv[4:], 0.0
    )  # a group that all won learns nothing


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_checkpoint_round_trip_keeps_the_new_fields(tmp_path: Path, algorithm: str) -> None:
    config = SelfPlayConfig(
        seed=1,
        num_envs=8,
        policy="tabular",
        learning_rate=0.3,
        algorithm=algorithm,
        n_epochs=2,
        n_minibatches=2,
        clip_range=0.1,
        normalize_advantage=True,
        num_generations=2,
    )
    trainer = SelfPlayTrainer(small_game, config)
    trainer.learn(32)
    trainer.save(tmp_path / "sp")
    loaded = SelfPlayTrainer.load(tmp_path / "sp", small_game)
    assert loaded.config == trainer.config and loaded.baselines == trainer.baselines
    assert loaded.num_updates == trainer.num_updates == 4
    assert loaded.evaluate(50) == trainer.evaluate(50)
    loaded.learn(8)  # the loaded trainer keeps training with the same algorithm
    assert loaded.num_episodes == 40


def test_a_checkpoint_without_the_new_fields_loads_as_reinforce(tmp_path: Path) -> None:
    trainer = SelfPlayTrainer(small_game, SelfPlayConfig(seed=0, num_envs=4, policy="tabular"))
    trainer.learn(4)
    trainer.save(tmp_path / "sp")
    meta_path = tmp_path / "sp" / "selfplay.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    for key in (
        "algorithm",
        "n_epochs",
        "n_minibatches",
        "clip_range",
        "normalize_advantage",
        "num_generations",
    ):
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    loaded = SelfPlayTrainer.load(tmp_path / "sp", small_game)
    assert loaded.config == trainer.config and loaded.config.algorithm == "reinforce"


def test_more_minibatches_than_steps_skips_the_empty_ones() -> None:
    config = SelfPlayConfig(
        seed=0, num_envs=2, policy="tabular", algorithm="ppo", n_minibatches=4, n_epochs=1
    )
    trainer = SelfPlayTrainer(small_game, config)
    trainer.learn(2)
    assert trainer.num_updates == 1 and np.isfinite(trainer.history[-1]["losses/speaker_0/policy_loss"])
