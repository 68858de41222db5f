"""Multi-turn dialogue envs: checkers, token-exact histories, simulators, scorers, context rule, learning."""

from __future__ import annotations

import itertools
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import aligngym.envs
from aligngym.agents.multiturn import history_from_transcript, history_logprobs, turn_level_returns
from aligngym.envs.dialogue import DialogueTokenEnv
from aligngym.envs.simulators import GuessSimulator, ScriptedSimulator, TurnContext, make_simulator

IDS = [
    "aligngym/Guess-Token-v0",
    "aligngym/Guess-Sequence-v0",
    "aligngym/Dialogue-Token-v0",
    "aligngym/Dialogue-Sequence-v0",
]
#: a cheap turn scorer so that most tests do not load the reward model
CHEAP = {"turn_scorer": "length"}


def make(env_id: str, **kw) -> gym.Env:
    if "Dialogue" in env_id:
        kw = {**CHEAP, **kw}
    return gym.make(env_id, **kw)


def play(env: gym.Env, seed: int, action_seed: int = 0) -> tuple[list, dict]:
    """Random actions until the end; returns the observations and the final info."""
    env.action_space.seed(action_seed)
    obs, info = env.reset(seed=seed)
    seen = [obs]
    done = False
    while not done:
        obs, reward, done, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and truncated is False
        seen.append(obs)
    return seen, info


def guess(env: gym.Env, word: str) -> int:
    return list(env.unwrapped.runtime.action_ids).index(env.unwrapped.runtime.tokenizer.single_token_id(word))


# -- registration and checkers ------------------------------------------------------------------------------------
def test_ids_are_registered_and_listed() -> None:
    listed = aligngym.envs.list_envs()
    for env_id in IDS:
        assert env_id in gym.registry
        if env_id in listed:  # listed when tasks.register_env is present
            assert "multi-turn" in listed[env_id]


@pytest.mark.parametrize("env_id", IDS)
def test_both_checkers_pass(env_id: str) -> None:
    env = make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sb3_check_env(env.unwrapped, warn=True)


def test_dialogue_default_scores_every_turn_with_the_preference_reward_model() -> None:
    env = gym.make("aligngym/Dialogue-Sequence-v0", max_turns=2)
    _, info = env.reset(seed=0)
    rewards = []
    for _ in range(2):
        _, r, done, _, info = env.step(env.action_space.sample())
        rewards.append(r)
        assert np.isfinite(info["turn_score"]) and info["turn_score"] == r
    assert done and info["finish_reason"] == "max_turns"
    assert info["turn_scores"] == tuple(rewards)
    assert info["score"] == pytest.approx(np.mean(rewards))
    assert "preference_rm" in env.unwrapped.runtime.scorer("turn").name


# -- the token history ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_observation_is_the_concatenation_of_sampled_and_user_ids(env_id: str) -> None:
    env = make(env_id)
    seen, info = play(env, seed=3)
    rt = env.unwrapped.runtime
    ids, assistant = history_from_transcript(info["transcript"], rt.user_sep, rt.assistant_sep)
    final = seen[-1]
    n = int(final["attention_mask"].sum())
    assert final["attention_mask"][:n].all() and not final["attention_mask"][n:].any()
    assert final["input_ids"][:n].tolist() == ids[:n]
    # the assistant's ids are exactly the actions' tokens, never re-encoded
    sampled = [t for turn in info["transcript"] if turn["role"] == "assistant" for t in turn["ids"]]
    assert [t for t, a in zip(ids, assistant) if a] == sampled


def test_every_observation_extends_the_previous_one() -> None:
    env = make("aligngym/Dialogue-Token-v0", max_turn_tokens=4)
    seen, _ = play(env, seed=1)
    for before, after in itertools.pairwise(seen):
        n = int(before["attention_mask"].sum())
        assert after["input_ids"][:n].tolist() == before["input_ids"][:n].tolist()
        assert after["attention_mask"].sum() > n


def test_agent_text_that_reencodes_differently_stays_as_sampled() -> None:
    env = make("aligngym/Dialogue-Token-v0", max_turn_tokens=2, max_turns=1)
    tok = env.unwrapped.runtime.tokenizer
    pair = tok.encode(" c") + tok.encode("at")  # decodes to " cat", which encodes as one token
    assert len(pair) == 2 and tok.encode(tok.decode(pair)) != pair
    env.reset(seed=0)
    env.step(pair[0])
    _, _, done, _, info = env.step(pair[1])
    assert done and info["transcript"][1]["ids"] == tuple(pair)


def test_causal_lm_logprobs_recomputed_from_the_history_equal_the_sampling_logprobs() -> None:
    from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm

    env = make("aligngym/Dialogue-Token-v0", max_turn_tokens=5, max_turns=3, max_context_tokens=128)
    rt = env.unwrapped.runtime
    policy = CausalLMPolicy(
        tiny_causal_lm(rt.vocab_size, n_positions=128, seed=0), tokenizer=rt.tokenizer, value_head=False
    )
    policy.eval()
    gen = torch.Generator().manual_seed(0)
    obs, info = env.reset(seed=0)
    sampled, turns_seen = [], []
    with torch.no_grad():
        while True:
            logits = policy(
                torch.as_tensor(obs["input_ids"])[None], torch.as_tensor(obs["attention_mask"])[None]
            )
            logp = torch.log_softmax(logits.float(), -1)[0]
            masked = logits.masked_fill(~torch.as_tensor(info["action_mask"])[None], float("-inf"))
            a = int(torch.multinomial(torch.softmax(masked, -1), 1, generator=gen))
            sampled.append(float(logp[a]))
            obs, _, done, _, info = env.step(a)
            turns_seen.append(info["turn"])
            if done:
                break
        ids, assistant = history_from_transcript(info["transcript"], rt.user_sep, rt.assistant_sep)
        n = len(ids)
        x = torch.as_tensor(ids)[None]
        recomputed = history_logprobs(policy, x, torch.ones_like(x), torch.as_tensor(assistant)[None])
    got = recomputed[0][torch.as_tensor(assistant)].tolist()
    assert len(got) == len(sampled) == sum(assistant) and n <= rt.seq_len
    assert max(turns_seen) == 3  # several turns, user ids in between
    np.testing.assert_allclose(got, sampled, atol=1e-5)


# -- episode mechanics ---------------------------------------------------------------------------------------------
def test_same_seed_same_conversation_and_different_seeds_differ() -> None:
    env = make("aligngym/Dialogue-Token-v0", max_turn_tokens=3)
    first = play(env, seed=5, action_seed=1)[1]["transcript"]
    again = play(env, seed=5, action_seed=1)[1]["transcript"]
    other = play(env, seed=6, action_seed=2)[1]["transcript"]
    assert first == again and first != other


def test_turn_ends_at_eos_and_info_reports_turns() -> None:
    env = make("aligngym/Dialogue-Token-v0", max_turn_tokens=8, max_turns=2)
    rt = env.unwrapped.runtime
    _, info = env.reset(seed=0)
    assert info["turn"] == 0 and not info["action_mask"][rt.eos_id]  # no empty turns
    _, r, done, _, info = env.step(rt.tokenizer.single_token_id(" cat"))
    assert info["action_mask"][rt.eos_id] and r == 0.0 and "turn_score" not in info
    _, r, done, _, info = env.step(rt.eos_id)
    assert not done and info["turn"] == 1 and info["turn_score"] == r and info["turn_text"] == " cat"


def test_sequence_turn_is_cut_after_its_first_eos() -> None:
    env = make("aligngym/Dialogue-Sequence-v0", max_turn_tokens=4, max_turns=1)
    rt = env.unwrapped.runtime
    env.reset(seed=0)
    word = rt.tokenizer.single_token_id(" cat")
    _, _, done, _, info = env.step(np.array([word, rt.eos_id, word, word]))
    assert done and info["transcript"][1]["ids"] == (word, rt.eos_id) and info["completion"] == " cat"


def test_step_errors_name_the_bad_action() -> None:
    env = make("aligngym/Guess-Token-v0")
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of range for Discrete\(8\)"):
        env.step(8)
    with pytest.raises(TypeError):
        env.step(1.5)
    seq = make("aligngym/Guess-Sequence-v0")
    seq.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        seq.step(np.zeros(3, dtype=np.int64))


def test_render_ansi_shows_the_conversation() -> None:
    env = make("aligngym/Guess-Token-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(guess(env, " fly"))
    text = env.render()
    assert text.startswith("User: I am thinking") and "Assistant: fly" in text


# -- context budget ------------------------------------------------------------------------------------------------
def test_context_end_rule_ends_the_episode_when_full() -> None:
    env = make("aligngym/Dialogue-Token-v0", max_turn_tokens=8, max_turns=50, max_context_tokens=96)
    seen, info = play(env, seed=0)
    assert info["finish_reason"] == "context"
    assert all(int(o["attention_mask"].sum()) <= 96 for o in seen)


def test_context_error_rule_raises_with_the_numbers() -> None:
    env = make(
        "aligngym/Dialogue-Token-v0",
        max_turn_tokens=8,
        max_turns=50,
        max_context_tokens=96,
        context_overflow="error",
    )
    with pytest.raises(ValueError, match="max_context_tokens=96"):
        play(env, seed=0)


def test_context_truncate_rule_shows_the_last_tokens() -> None:
    env = make(
        "aligngym/Dialogue-Token-v0",
        max_turn_tokens=8,
        max_turns=12,
        max_context_tokens=64,
        context_overflow="truncate",
    )
    seen, info = play(env, seed=0)
    rt = env.unwrapped.runtime
    ids, _ = history_from_transcript(info["transcript"], rt.user_sep, rt.assistant_sep)
    assert len(ids) > 64 and info["finish_reason"] == "max_turns"
    assert seen[-1]["input_ids"].tolist() == ids[-64:]


def test_long_opening_is_left_truncated_with_a_warning_and_impossible_budgets_raise() -> None:
    env = make("aligngym/Dialogue-Token-v0", max_context_tokens=40, max_turn_tokens=4)
    with pytest.warns(UserWarning, match="left-truncated"):
        obs, _ = env.reset(options={"prompt": "word " * 200})
    assert int(obs["attention_mask"].sum()) == 40 - 4
    with pytest.raises(ValueError, match="no room"):
        make("aligngym/Dialogue-Token-v0", max_context_tokens=10, max_turn_tokens=8)


# -- simulators ----------------------------------------------------------------------------------------------------
def test_guess_answers_from_the_attribute_table_and_decides_on_the_guess() -> None:
    env = make("aligngym/Guess-Token-v0")
    _, info = env.reset(options={"prompt_index": 3})  # rows are the candidates in order: cat, dog, fish, bird
    assert env.unwrapped.runtime.simulator.secret == "bird"
    _, r, done, _, info = env.step(guess(env, " fly"))
    assert not done and r == 0.0
    assert env.unwrapped._transcript[-1]["text"].strip() == "yes."
    _, r, done, _, info = env.step(guess(env, " bird"))
    assert done and r == 1.0 and info["success"] and info["finish_reason"] == "success"
    env.reset(options={"prompt_index": 0})
    _, r, done, _, info = env.step(guess(env, " dog"))
    assert (
        done and r == 0.0 and info["finish_reason"] == "failure" and "cat" in info["transcript"][-1]["text"]
    )


def test_guess_free_text_questions_and_difficulty() -> None:
    sim = GuessSimulator(difficulty=3)
    assert len(sim.candidates) == 16
    assert sim.parse("Can it climb trees?") == ("question", "climb")
    assert sim.parse("Is it a horse or can it fly?") == ("guess", "horse")
    assert sim.parse("hello")[0] == "unclear"
    env = make(
        "aligngym/Guess-Token-v0", difficulty=2, action_vocab="all", max_turn_tokens=6, max_context_tokens=256
    )
    _, _info = env.reset(seed=0)
    assert env.action_space.n == env.unwrapped.runtime.vocab_size
    assert "horse" in env.unwrapped._opening
    with pytest.raises(ValueError, match="difficulty"):
        GuessSimulator(difficulty=7)


def test_scripted_rules_pick_replies() -> None:
    sim = ScriptedSimulator()
    rng = np.random.default_rng(0)
    short = sim.reply_text(TurnContext("ok", (), 0, {}), rng)
    assert short.strip() in sim.script["rules"][0]["replies"]
    rude = sim.reply_text(TurnContext("that is a stupid question honestly", (), 0, {}), rng)
    assert rude.strip() in sim.script["rules"][1]["replies"]
    plain = sim.reply_text(TurnContext("Keep basil in a glass of water on the counter.", (), 0, {}), rng)
    assert plain.strip() in sim.script["default"]
    with pytest.raises(ValueError, match="default"):
        ScriptedSimulator({"rules": []})


def test_user_object_with_reply_plugs_in() -> None:
    class Echo:
        def __init__(self) -> None:
            self.calls = []

        def reply(self, history_ids, rng):
            self.calls.append(list(history_ids))
            return [int(history_ids[-1])]

    echo = Echo()
    env = make("aligngym/Dialogue-Token-v0", simulator=echo, max_turn_tokens=2, max_turns=2)
    _seen, info = play(env, seed=0)
    assert len(echo.calls) == 2 and info["transcript"][2]["ids"] == (info["transcript"][1]["ids"][-1],)
    with pytest.raises(TypeError, match="reply"):
        make_simulator(object())
    with pytest.raises(ValueError, match="unknown simulator"):
        make_simulator("oracle")


def test_lm_simulator_is_seeded() -> None:
    env = make("aligngym/Dialogue-Token-v0", simulator="lm", max_turn_tokens=3, max_turns=2)
    a = play(env, seed=11, action_seed=0)[1]["transcript"]
    b = play(env, seed=11, action_seed=0)[1]["transcript"]
    c = play(env, seed=12, action_seed=0)[1]["transcript"]
    assert a == b and a[2]["ids"] and a != c


def test_env_pickles_and_sync_vector_env_runs_rows_at_different_turns() -> None:
    import pickle

    env = make("aligngym/Guess-Token-v0")
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.step(0)[0]["input_ids"].tolist() == env.step(0)[0]["input_ids"].tolist()
    venv = gym.make_vec("aligngym/Guess-Token-v0", num_envs=3, vectorization_mode="sync")
    venv.reset(seed=0)
    turns = set()
    rng = np.random.default_rng(0)
    for _ in range(12):
        _, _, _, _, info = venv.step(rng.integers(8, size=3))
        turns.add(tuple(info["turn"]))
    assert any(len(set(t)) > 1 for t in turns)


# -- credit assignment ---------------------------------------------------------------------------------------------
def test_turn_level_returns_share_a_return_within_a_turn() -> None:
    out = turn_level_returns([0.5, 0.0, 1.0], [2, 1, 3], gamma=0.5)
    np.testing.assert_allclose(out, [0.75, 0.75, 0.5, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        turn_level_returns([1.0], [1, 2])


# -- learning ------------------------------------------------------------------------------------------------------
def _success(env: gym.Env, act, n: int = 200, seed: int = 1000) -> float:
    rng = np.random.default_rng(seed)
    wins = 0
    for ep in range(n):
        obs, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, _, done, _, info = env.step(act(obs, rng))
        wins += info["success"]
    return wins / n


def test_q_learning_beats_random_at_twenty_questions() -> None:
    from aligngym.agents.tabular import QLearningAgent, QLearningConfig

    env = gym.make("aligngym/Guess-Token-v0")
    random_rate = _success(env, lambda obs, rng: int(rng.integers(8)))
    agent = QLearningAgent(
        gym.make("aligngym/Guess-Token-v0"),
        QLearningConfig(seed=0, learning_rate=0.2, exploration_fraction=0.7),
    )
    agent.learn(30_000)
    learned = _success(env, lambda obs, rng: int(agent.predict(obs, deterministic=True)[0]))
    assert random_rate < 0.35
    assert learned >= random_rate + 0.5, (random_rate, learned)


def test_dialogue_env_is_a_direct_subclass_entry_point() -> None:
    env = gym.make("aligngym/Guess-Token-v0")
    assert isinstance(env.unwrapped, DialogueTokenEnv)


# -- native vector env ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize(
    ("env_id", "kw"),
    [("aligngym/Guess-Token-v0", {}), ("aligngym/Dialogue-Sequence-v0", {**CHEAP, "max_turn_tokens": 3})],
)
def test_native_vector_env_matches_sync_vector_env(env_id: str, kw: dict, mode: str) -> None:
    native = gym.make_vec(env_id, num_envs=3, autoreset_mode=mode, **kw)
    sync = gym.make_vec(
        env_id,
        num_envs=3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode(mode)},
        **kw,
    )
    assert type(native).__name__.startswith("Dialogue")
    a, _ = native.reset(seed=0)
    b, _ = sync.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        act = (
            np.stack([native.single_action_space.sample() for _ in range(3)])
            if kw
            else rng.integers(8, size=3)
        )
        a, ra, ta, _, ia = native.step(act)
        b, rb, tb, _, ib = sync.step(act)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        np.testing.assert_allclose(ra, rb)
        assert np.array_equal(ta, tb)
    assert np.array_equal(ia["turn"], ib["turn"])


def test_native_vector_env_scores_all_ending_turns_in_one_call() -> None:
    from aligngym.envs.scorers import BaseScorer

    calls: list[int] = []

    class Counting(BaseScorer):
        name = "counting"

        def score(self, prompts, completions, **context):
            calls.append(len(completions))
            return np.ones(len(completions), dtype=np.float32)

    venv = gym.make_vec(
        "aligngym/Dialogue-Sequence-v0", num_envs=4, turn_scorer=Counting(), max_turn_tokens=2
    )
    venv.reset(seed=0)
    venv.step(np.stack([venv.single_action_space.sample() for _ in range(4)]))
    assert calls == [4]


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_reinforce_agent_trains_on_the_native_vector_env(mode: str) -> None:
    from aligngym.agents.reinforce import ReinforceAgent, ReinforceConfig

    venv = gym.make_vec("aligngym/Guess-Token-v0", num_envs=4, autoreset_mode=mode)
    agent = ReinforceAgent(
        venv, ReinforceConfig(seed=0, device="cpu", policy_kwargs={"embed_dim": 8, "hidden_size": 16})
    )
    agent.learn(64)
    assert agent.num_timesteps >= 64 and agent.num_updates >= 1
    assert 0.0 <= agent.logger.latest("charts/score") <= 1.0


# -- multi-turn policy gradient for causal LMs ---------------------------------------------------------------------
def _lm_trainer(env_id: str, **kw):
    from aligngym.agents.multiturn_pg import MultiTurnPG, MultiTurnPGConfig
    from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm

    env = make(env_id, **kw)
    rt = env.unwrapped.runtime
    lm = tiny_causal_lm(rt.vocab_size, n_positions=256, seed=0)
    policy = CausalLMPolicy(lm, tokenizer=rt.tokenizer, action_ids=rt.action_ids, value_head=False)
    return MultiTurnPG(env, policy, MultiTurnPGConfig(seed=0, episodes_per_update=3, learning_rate=1e-3))


@pytest.mark.parametrize(
    ("env_id", "kw"),
    [("aligngym/Dialogue-Token-v0", {"max_turn_tokens": 5, "max_turns": 3}), ("aligngym/Guess-Token-v0", {})],
)
def test_multiturn_pg_update_logprobs_equal_sampling_logprobs_turn_by_turn(env_id: str, kw: dict) -> None:
    trainer = _lm_trainer(env_id, **kw)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.learn(4)  # (an update whose conversations all score alike has no advantage and moves nothing)
    assert all(h["charts/logprob_mismatch"] < 1e-5 for h in trainer.history)
    assert any(not torch.equal(p, q) for p, q in zip(before, trainer.policy.parameters()))
    conversations = trainer.collect()
    for c in conversations:  # every sampled token is an assistant position of the rebuilt history
        assert len(c.actions) == sum(c.assistant) == len(c.sampled_logp) == sum(c.tokens_per_turn)


def test_multiturn_pg_refuses_truncated_histories() -> None:
    with pytest.raises(ValueError, match="truncate"):
        _lm_trainer("aligngym/Dialogue-Token-v0", context_overflow="truncate")


# -- OpenEnv: one session = one conversation ----------------------------------------------------------------------
def test_openenv_environment_plays_a_conversation_turn_by_turn() -> None:
    pytest.importorskip("openenv")
    from aligngym.envs.dialogue_serving import DialogueEnvironment, TurnAction

    env = DialogueEnvironment("aligngym/Guess-Token-v0")
    obs = env.reset(prompt_index=3)  # the secret is the bird
    assert obs.turn == 0 and obs.user_message.startswith("I am thinking")
    obs = env.step(TurnAction(text=" eggs"))
    assert (obs.turn, obs.user_message.strip(), obs.done) == (1, "yes.", False)
    obs = env.step(TurnAction(actions=[7]))  # " bird"
    assert obs.done and obs.reward == 1.0 and obs.finish_reason == "success" and env.state.score == 1.0
    rt_history = obs.history_ids
    assert rt_history[-len(obs.transcript[-1]["ids"]) :] == obs.transcript[-1]["ids"]
    with pytest.raises(ValueError, match="ended"):
        env.step(TurnAction(text=" cat"))
    with pytest.raises(ValueError, match="vocabulary"):
        env.step(TurnAction(text=" horse", prompt_index=0))


def test_openenv_websocket_session_holds_a_multi_turn_conversation() -> None:
    pytest.importorskip("openenv")
    import json

    from fastapi.testclient import TestClient

    from aligngym.envs.dialogue_serving import dialogue_app

    app = dialogue_app("aligngym/Dialogue-Sequence-v0", {"turn_scorer": "length", "max_turns": 2})
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:

        def send(kind: str, data: dict) -> dict:
            ws.send_text(json.dumps({"type": kind, "data": data}))
            return ws.receive_json()

        first = send("reset", {"prompt_index": 0})["data"]["observation"]
        assert first["turn"] == 0 and first["user_message"]
        second = send("step", {"text": " Keep it in a glass of water."})["data"]
        assert (
            not second["done"]
            and second["observation"]["turn"] == 1
            and second["observation"]["turn_score"] is not None
        )
        last = send("step", {"text": " Thanks."})["data"]
        assert last["done"] and last["observation"]["finish_reason"] == "max_turns"
        roles = [t["role"] for t in last["observation"]["transcript"]]
        assert roles[:4] == ["user", "assistant", "user", "assistant"]


def test_native_vector_env_batches_the_lm_user_with_one_shared_model() -> None:
    kw = {**CHEAP, "simulator": "lm", "max_turn_tokens": 3, "max_turns": 2}
    venv = gym.make_vec("aligngym/Dialogue-Sequence-v0", num_envs=3, **kw)
    venv.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(2):
        _, _, done, _, info = venv.step(rng.integers(1, 500, size=(3, 3)))
    assert done.all() and all(t[2]["ids"] for t in info["transcript"])
    models = {id(env.runtime.simulator._model) for env in venv.unwrapped.envs}
    assert len(models) == 1
    # one row: the batched sampler is the single env's, step for step
    single = make("aligngym/Dialogue-Sequence-v0", **kw)
    one = gym.make_vec("aligngym/Dialogue-Sequence-v0", num_envs=1, **kw)
    single.reset(seed=9)
    one.reset(seed=9)
    for _ in range(2):
        act = rng.integers(1, 500, size=3)
        _, _, _, _, a = single.step(act)
        _, _, _, _, b = one.step(act[None])
    assert a["transcript"] == b["transcript"][0]


def test_gold_false_is_accepted_and_a_gold_scorer_is_refused_by_name() -> None:
    """Every env takes ``gold=False`` (the harness trains with it); dialogue tasks have no gold judge yet."""
    env = gym.make("aligngym/Guess-Token-v0", gold=False)
    env.reset(seed=0)
    env.close()
    with pytest.raises(ValueError, match="gold='sentiment_gold'"):
        gym.make("aligngym/Guess-Token-v0", gold="sentiment_gold")
