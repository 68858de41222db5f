"""Guess-Token with MultiTurnPG on a random-init tiny GPT-2, for docs/multiturn.md.
Run: python mtpg_guess.py UPDATES LR  (the table used 200 3e-3)."""

import sys
import time

import gymnasium as gym
import numpy as np
import torch

from aligngym.agents.multiturn_pg import MultiTurnPG, MultiTurnPGConfig
from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm

torch.set_num_threads(1)
env = gym.make("aligngym/Guess-Token-v0")
rt = env.unwrapped.runtime
pol = CausalLMPolicy(
    tiny_causal_lm(rt.vocab_size, n_layer=2, n_embd=64, n_positions=128, seed=0),
    tokenizer=rt.tokenizer,
    action_ids=rt.action_ids,
    value_head=False,
)
tr = MultiTurnPG(
    env, pol, MultiTurnPGConfig(seed=0, episodes_per_update=16, learning_rate=float(sys.argv[2]))
)
t = time.time()
for k in range(int(sys.argv[1])):
    tr.learn(1)
    if k % 10 == 0:
        print(
            k,
            round(np.mean([h["charts/score"] for h in tr.history[-10:]]), 3),
            round(time.time() - t, 1),
            flush=True,
        )
