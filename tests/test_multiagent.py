"""PettingZoo text games: API tests (AEC and Parallel), seeding, rewards, what each agent sees."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from aligngym.envs.multiagent import (
    ReferentialGame,
    TextAECEnv,
    TextParallelEnv,
    referential_env,
    referential_parallel_env,
    writer_critic_env,
    writer_critic_parallel_env,
)

#: a small writer-critic game: a 4-word writer, a budget of 3 tokens for the critic
SMALL_WC = {
    "writer_tokens": 4,
    "critic_tokens": 3,
    "writer_vocab": [" good", " bad", " great", "<|endoftext|>"],
}


def test_referential_aec_api() -> None:
    api_test(referential_env(), num_cycles=30)


def test_referential_parallel_api() -> None:
    parallel_api_test(referential_parallel_env(), num_cycles=30)


def test_writer_critic_aec_api() -> None:
    api_test(writer_critic_env(**SMALL_WC), num_cycles=20)


def test_writer_critic_parallel_api() -> None:
    parallel_api_test(writer_critic_parallel_env(**SMALL_WC), num_cycles=20)


def test_seeded_determinism() -> None:
    seed_test(referential_env)
    parallel_seed_test(referential_parallel_env)
    seed_test(lambda: writer_critic_env(**SMALL_WC))


def _oracle_episode(env: TextParallelEnv, seed: int, correct: bool) -> dict:
    """The speaker names the target's colour and animal; the listener picks the matching slot (or a wrong one)."""
    obs, infos = env.reset(seed=seed)
    game = env.game
    assert isinstance(game, ReferentialGame)
    words = game.target.split()
    tok = game.tokenizer
    speaker_vocab = [int(t) for t in game.speaker_ids]
    assert infos["speaker_0"]["acting"] and not infos["listener_0"]["acting"]
    for k, w in enumerate(words):
        a = speaker_vocab.index(tok.single_token_id(" " + w))
        obs, rew, terms, _, infos = env.step({"speaker_0": a, "listener_0": 0})
        assert not any(terms.values()) and rew == {"speaker_0": 0.0, "listener_0": 0.0}
        assert infos["listener_0"]["acting"] == (k == len(words) - 1) != infos["speaker_0"]["acting"]
    heard = tok.decode(obs["listener_0"]["input_ids"][: int(obs["listener_0"]["attention_mask"].sum())])
    assert heard.startswith("Heard: " + " ".join(words))
    pick = game.target_slot if correct else (game.target_slot + 1) % game.n_candidates
    _, rew, terms, _, infos = env.step({"speaker_0": 0, "listener_0": pick})
    assert all(terms.values()) and env.agents == []
    return {"rewards": rew, "info": infos["listener_0"]}


def test_referential_reward_is_shared_and_exact() -> None:
    env = referential_parallel_env(n_candidates=3, message_len=2)
    for seed in range(5):
        out = _oracle_episode(env, seed, correct=True)
        assert out["rewards"] == {"speaker_0": 1.0, "listener_0": 1.0} and out["info"]["success"]
        out = _oracle_episode(env, seed, correct=False)
        assert out["rewards"] == {"speaker_0": 0.0, "listener_0": 0.0} and not out["info"]["success"]


def test_referential_speaker_sees_the_target_and_listener_the_shuffled_choices() -> None:
    env = referential_env(n_candidates=4, message_len=1)
    env.reset(seed=3)
    game = env.game
    tok = game.tokenizer
    speaker_text = tok.decode(game.visible_ids("speaker_0"))
    assert speaker_text.startswith(f"Target:{game.target}.")
    listener_text = tok.decode(game.visible_ids("listener_0"))
    assert "Choices:" in listener_text and game.target.strip() in listener_text
    slots = {c.strip() for c in game.choices}
    assert slots == {game.target.strip(), *(d.strip() for d in game.distractors)}
    # the order is shuffled with the env's seed: some seed puts the target away from slot 0
    targets = set()
    for seed in range(10):
        env.reset(seed=seed)
        targets.add(env.game.target_slot)
    assert len(targets) > 1


def test_referential_rejects_bad_options_and_actions() -> None:
    with pytest.raises(ValueError, match="n_candidates"):
        referential_env(n_candidates=1)
    env = referential_parallel_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        env.step({"speaker_0": 99, "listener_0": 0})
    with pytest.raises(ValueError, match="floor holder"):
        env.step({"listener_0": 0})


def test_writer_critic_critique_enters_the_writers_next_observation_and_rewards_follow_scores() -> None:
    env = writer_critic_env(**SMALL_WC, rounds=2)
    env.reset(seed=0)
    game = env.game
    tok = game.tokenizer
    writer_vocab = [tok.single_token_id(w) for w in SMALL_WC["writer_vocab"]]
    critic_word = tok.single_token_id(" good")
    returns = {"writer_0": 0.0, "critic_0": 0.0}
    plan = {"writer_0": [writer_vocab.index(tok.single_token_id(" bad")), 3], "critic_0": [critic_word] * 3}
    second = [writer_vocab.index(tok.single_token_id(" great")), 3]
    critic_ids_seen = None
    for agent in env.agent_iter():
        obs, _, term, _, info = env.last()
        if term:
            for a in returns:
                returns[a] += env._cumulative_rewards.get(a, 0.0)
            env.step(None)
            continue
        if agent == "writer_0" and len(game.turns) == 2 and critic_ids_seen is None:
            visible = obs["input_ids"][: int(obs["attention_mask"].sum())].tolist()
            critic_ids_seen = visible
        action = plan[agent].pop(0) if plan[agent] else second.pop(0)
        env.step(action)
    scores = info["scores"]
    assert len(scores) == 2 and scores[1] > scores[0]  # " great" reads more positive than " bad"
    assert game.turns[1]["role"] == "critic_0" and game.turns[1]["ids"] == (critic_word,) * 3
    assert critic_ids_seen is not None
    assert critic_ids_seen[-len(game.writer_sep) - 3 : -len(game.writer_sep)] == [critic_word] * 3
    assert [t["role"] for t in info["transcript"]] == ["writer_0", "critic_0", "writer_0"]


def test_writer_critic_parallel_rewards() -> None:
    env = writer_critic_parallel_env(**SMALL_WC, rounds=2)
    env.reset(seed=1)
    total = {"writer_0": 0.0, "critic_0": 0.0}
    rng = np.random.default_rng(0)
    infos: dict = {}
    while env.agents:
        actions = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
        _, rew, _, _, infos = env.step(actions)
        for a, r in rew.items():
            total[a] += r
    scores = infos["writer_0"]["scores"]
    assert total["writer_0"] == pytest.approx(sum(scores), abs=1e-6)
    assert total["critic_0"] == pytest.approx(scores[1] - scores[0], abs=1e-6)


def test_classes_take_a_game_object() -> None:
    game = ReferentialGame(n_candidates=2, message_len=1)
    assert TextAECEnv(game).game is game and TextParallelEnv(game).game is game
    with pytest.raises(ValueError, match="unknown game"):
        TextAECEnv("chess")
