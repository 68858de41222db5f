"""The OpenEnv server carries the gold judge: ``gold_score`` / ``gold_components`` at episode end, never in the reward.

Real servers (uvicorn in a thread on 127.0.0.1) and the real client (WebSocket sessions) and raw HTTP. The gold is the
cheap registered ``length`` scorer so that it differs from the reward and the tests stay fast; one test serves the
task's default gold. Skipped without openenv-core.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip(
    "openenv.core.env_server.http_server",
    reason="openenv-core is not installed (optional extra 'serve': pip install 'aligngym[serve]')",
)
httpx = pytest.importorskip("httpx", reason="httpx is not installed (optional extra 'serve')")

from aligngym.envs.serving import (  # noqa: E402
    AlignGymClient,
    CompletionAction,
    ServerThread,
    create_server_app,
)

SEQ_ID = "aligngym/Sentiment-Sequence-v0"
TOKEN_ID = "aligngym/Keywords-Token-v0"
GOLD = "length"
TEXTS = ["a wonderful, lovely evening with friends", "terrible", ""]


@pytest.fixture(scope="module")
def gold_server():
    with ServerThread(create_server_app(SEQ_ID, env_kwargs={"gold": GOLD}, max_concurrent_envs=4)) as srv:
        yield srv


def in_process(env_id: str, prompt_index: int, text: str, gold: str = GOLD) -> tuple[float, float, dict]:
    """(reward, gold score, gold components) the gym env's runtime gives ``text`` on prompt ``prompt_index``."""
    rt = gym.make(env_id, gold=gold).unwrapped.runtime
    row = rt.rows[prompt_index]
    total, comps = rt.score([row], [text])
    g = rt.gold([row], [text], proxy=(total, comps))
    assert g is not None
    return float(total[0]), float(g[0][0]), {k: float(v[0]) for k, v in g[1].items()}


def test_websocket_session_reports_gold_beside_an_unchanged_reward(gold_server):
    with AlignGymClient(base_url=gold_server.url).sync() as client:
        for i, text in enumerate(TEXTS):
            first = client.reset(prompt_index=i)
            assert first.observation.gold_score is None and first.observation.gold_components == {}
            result = client.step(CompletionAction(completion=text))
            reward, gold, comps = in_process(SEQ_ID, i, text)
            assert result.done
            assert result.reward == pytest.approx(reward, abs=1e-6)  # the proxy, as without gold
            assert result.observation.score == pytest.approx(reward, abs=1e-6)
            assert result.observation.gold_score == pytest.approx(gold, abs=1e-6)
            assert result.observation.gold_components == pytest.approx(comps, abs=1e-6)
            assert client.state().gold_score == pytest.approx(gold, abs=1e-6)
    assert any(in_process(SEQ_ID, i, t)[0] != in_process(SEQ_ID, i, t)[1] for i, t in enumerate(TEXTS))


def test_sequence_actions_gold_equals_the_gym_env_info(gold_server):
    env = gym.make(SEQ_ID, gold=GOLD)
    acts = np.random.default_rng(0).integers(0, env.action_space.nvec[0], size=env.action_space.shape[0])
    env.reset(options={"prompt_index": 3})
    _, reward, _, _, info = env.step(acts)
    with AlignGymClient(base_url=gold_server.url).sync() as client:
        result = client.step(CompletionAction(actions=acts.tolist(), prompt_index=3))
    assert result.reward == pytest.approx(float(reward), abs=1e-6)
    assert result.observation.gold_score == pytest.approx(info["gold_score"], abs=1e-6)
    assert result.observation.gold_components == pytest.approx(info["gold_components"], abs=1e-6)


def test_raw_http_step_carries_gold(gold_server):
    body = {"action": {"completion": TEXTS[0], "prompt_index": 0}}
    resp = httpx.post(f"{gold_server.url}/step", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    reward, gold, comps = in_process(SEQ_ID, 0, TEXTS[0])
    assert data["reward"] == pytest.approx(reward, abs=1e-6)
    assert data["observation"]["gold_score"] == pytest.approx(gold, abs=1e-6)
    assert data["observation"]["gold_components"] == pytest.approx(comps, abs=1e-6)
    schema = httpx.get(f"{gold_server.url}/schema", timeout=30).json()
    assert {"gold_score", "gold_components"} <= set(schema["observation"]["properties"])


def test_token_env_reports_gold_only_when_the_episode_ends():
    env = gym.make(TOKEN_ID, gold=GOLD)
    env.reset(options={"prompt_index": 1})
    text = " the cat sat on the mat and the dog ran"
    with ServerThread(create_server_app(TOKEN_ID, env_kwargs={"gold": GOLD}, max_concurrent_envs=2)) as srv:
        with AlignGymClient(base_url=srv.url).sync() as client:
            client.reset(prompt_index=1)
            ids = client.step(CompletionAction(completion=text)).observation.completion_ids
            client.reset(prompt_index=1)
            part = client.step(CompletionAction(actions=ids[:2]))
            assert not part.done and part.observation.gold_score is None
            eos = env.unwrapped.runtime.eos_id
            end = client.step(CompletionAction(actions=[*ids[2:], eos]))
    for a in [*ids, eos]:
        _, _, terminated, _, info = env.step(a)
        if terminated:
            break
    assert end.done
    assert end.observation.gold_score == pytest.approx(info["gold_score"], abs=1e-6)
    assert end.observation.gold_components == pytest.approx(info["gold_components"], abs=1e-6)


def test_gold_false_serves_no_gold():
    with ServerThread(create_server_app(SEQ_ID, env_kwargs={"gold": False}, max_concurrent_envs=2)) as srv:
        with AlignGymClient(base_url=srv.url).sync() as client:
            result = client.step(CompletionAction(completion=TEXTS[0], prompt_index=0))
    assert result.done and result.observation.gold_score is None and result.observation.gold_components == {}


def test_a_server_without_the_gold_option_reports_the_tasks_gold():
    env_id = "aligngym/Keywords-Sequence-v0"
    text = "the cat and the dog played in the garden"
    with ServerThread(create_server_app(env_id, max_concurrent_envs=2)) as srv:
        with AlignGymClient(base_url=srv.url).sync() as client:
            result = client.step(CompletionAction(completion=text, prompt_index=0))
    rt = gym.make(env_id).unwrapped.runtime
    assert rt.gold_spec == rt.task.gold == "keywords_gold"
    reward, gold, comps = in_process(env_id, 0, text, gold="keywords_gold")
    assert result.reward == pytest.approx(reward, abs=1e-6)
    assert result.observation.gold_score == pytest.approx(gold, abs=1e-6)
    assert result.observation.gold_components == pytest.approx(comps, abs=1e-6)
