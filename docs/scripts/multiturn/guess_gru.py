"""Guess-Token with ReinforceAgent (GRU policy), success before/after, for docs/multiturn.md.
Run: python guess_gru.py STEPS LR  (the table used 30000 2e-3)."""

import sys
import time

import gymnasium as gym
import numpy as np
import torch

from aligngym.agents.reinforce import ReinforceAgent, ReinforceConfig

torch.set_num_threads(1)


def success_rate(env, act, n=200, seed=123):
    rng = np.random.default_rng(seed)
    wins = 0
    for ep in range(n):
        obs, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, _r, done, _, info = env.step(act(obs, rng))
        wins += info["success"]
    return wins / n


env = gym.make("aligngym/Guess-Token-v0")
print("random", success_rate(env, lambda o, rng: int(rng.integers(8))))
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
cfg = ReinforceConfig(
    seed=0,
    device="cpu",
    num_envs=16,
    learning_rate=float(sys.argv[2]) if len(sys.argv) > 2 else 3e-3,
    policy_kwargs={"embed_dim": 32, "hidden_size": 128},
    ent_coef=0.02,
    episodes_per_env=2,
    normalize_advantages=False,
    baseline="value",
)
agent = ReinforceAgent(gym.make("aligngym/Guess-Token-v0"), cfg)
t = time.time()


def cb(a, m):
    if a.num_updates % 20 == 0:
        print(
            a.num_timesteps,
            round(m.get("charts/score", m.get("charts/episodic_return", 0)), 3),
            round(time.time() - t, 1),
        )


agent.learn(steps, callback=cb)
print("train s", time.time() - t)
print("learned greedy", success_rate(env, lambda o, rng: int(agent.predict(o, deterministic=True)[0])))
print("learned sample", success_rate(env, lambda o, rng: int(agent.predict(o)[0])))
