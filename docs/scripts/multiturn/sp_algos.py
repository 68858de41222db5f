"""Self-play REINFORCE / PPO / GRPO on the small referential game, several seeds (figures for docs/multiturn.md).
Run: python docs/scripts/multiturn/sp_algos.py ALGO EPISODES [tabular|gru] [LR] [NUM_GENERATIONS] [SEEDS]."""

import sys
import time

import numpy as np
import torch

from aligngym.agents.selfplay import SelfPlayConfig, SelfPlayTrainer
from aligngym.envs.multiagent import referential_parallel_env

torch.set_num_threads(1)
GAME = dict(n_candidates=2, message_len=1, animals=[" cat"], vocab=[" red", " green", " blue", " yellow"])
algo, episodes = sys.argv[1], int(sys.argv[2])
policy = sys.argv[3] if len(sys.argv) > 3 else "tabular"
lr = float(sys.argv[4]) if len(sys.argv) > 4 else (0.3 if policy == "tabular" else 3e-3)
gens = int(sys.argv[5]) if len(sys.argv) > 5 else 8
seeds = range(int(sys.argv[6]) if len(sys.argv) > 6 else 5)
kw = {} if policy == "tabular" else {"embed_dim": 32, "hidden_size": 64}
rows = []
for seed in seeds:
    cfg = SelfPlayConfig(
        seed=seed,
        num_envs=32,
        policy=policy,
        learning_rate=lr,
        algorithm=algo,
        num_generations=gens,
        policy_kwargs=kw,
    )
    tr = SelfPlayTrainer(lambda: referential_parallel_env(**GAME), cfg)
    before = tr.evaluate(500, deterministic=False)["listener_0"]
    t = time.perf_counter()
    tr.learn(episodes)
    secs = time.perf_counter() - t
    after = tr.evaluate(500)["listener_0"]
    rows.append((before, after, secs))
    print(f"{algo} seed={seed} random={before:.3f} after={after:.3f} train_s={secs:.1f}", flush=True)
a = np.array(rows)
print(
    f"{algo} {policy} {episodes} eps: random mean {a[:, 0].mean():.3f}; after mean {a[:, 1].mean():.3f} "
    f"min {a[:, 1].min():.3f} max {a[:, 1].max():.3f}; train s mean {a[:, 2].mean():.1f}"
)
