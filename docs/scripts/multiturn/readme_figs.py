"""Figures of docs/multiturn.md (2-core CPU, shared): Guess-Token random vs Q-learning, env speed, the
referential game random vs tabular self-play. Run: python readme_figs.py"""

import time

import gymnasium as gym
import numpy as np
import torch

from aligngym.agents.selfplay import SelfPlayConfig, SelfPlayTrainer
from aligngym.agents.tabular import QLearningAgent, QLearningConfig
from aligngym.envs.multiagent import referential_parallel_env

torch.set_num_threads(1)


def success(env, act, n=500, seed=1000):
    rng = np.random.default_rng(seed)
    wins = 0
    for ep in range(n):
        obs, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, _, done, _, info = env.step(act(obs, rng))
        wins += info["success"]
    return wins / n


env = gym.make("aligngym/Guess-Token-v0")
print("guess random success", success(env, lambda o, rng: int(rng.integers(8))))
t = time.perf_counter()
agent = QLearningAgent(
    gym.make("aligngym/Guess-Token-v0"), QLearningConfig(seed=0, learning_rate=0.2, exploration_fraction=0.7)
).learn(30_000)
print(
    "guess q-learning 30k steps",
    round(time.perf_counter() - t, 1),
    "s; success",
    success(env, lambda o, rng: int(agent.predict(o, deterministic=True)[0])),
)

# env speed: random actions
for env_id, kw in (
    ("aligngym/Guess-Token-v0", {}),
    ("aligngym/Dialogue-Token-v0", {}),
    ("aligngym/Dialogue-Sequence-v0", {}),
):
    e = gym.make(env_id, **kw)
    e.action_space.seed(0)
    e.reset(seed=0)
    e.step(e.action_space.sample())
    e.reset(seed=1)  # load scorers
    n, t = 0, time.perf_counter()
    eps = 0
    while time.perf_counter() - t < 10:
        _, _, d, _, info = e.step(e.action_space.sample())
        n += 1
        if d:
            e.reset()
            eps += 1
    dt = time.perf_counter() - t
    print(env_id, "steps/s", round(n / dt), "episodes/s", round(eps / dt, 2))

game = {
    "n_candidates": 2,
    "message_len": 1,
    "animals": [" cat"],
    "vocab": [" red", " green", " blue", " yellow"],
}
tr = SelfPlayTrainer(
    lambda: referential_parallel_env(**game),
    SelfPlayConfig(seed=0, num_envs=32, policy="tabular", learning_rate=0.3),
)
print("referential before", tr.evaluate(500, deterministic=False))
t = time.perf_counter()
tr.learn(2000)
print("referential tabular self-play 2000 episodes", round(time.perf_counter() - t, 1), "s", tr.evaluate(500))
