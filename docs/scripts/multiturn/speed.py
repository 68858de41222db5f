"""Env speed of the multi-turn ids with random actions, for docs/multiturn.md. Run: python speed.py"""

import time

import gymnasium as gym
import torch

import aligngym.envs  # noqa: F401  (registers the ids)

torch.set_num_threads(1)
for env_id in ("aligngym/Guess-Token-v0", "aligngym/Dialogue-Token-v0", "aligngym/Dialogue-Sequence-v0"):
    e = gym.make(env_id)
    e.action_space.seed(0)
    e.reset(seed=0)
    d = False
    while not d:  # warm-up episode: loads the reward model
        _, _, d, _, _ = e.step(e.action_space.sample())
    e.reset(seed=1)
    n, eps, t = 0, 0, time.perf_counter()
    while time.perf_counter() - t < 15:
        _, _, d, _, info = e.step(e.action_space.sample())
        n += 1
        if d:
            e.reset()
            eps += 1
    dt = time.perf_counter() - t
    print(env_id, "steps/s", round(n / dt), "episodes/s", round(eps / dt, 2))
