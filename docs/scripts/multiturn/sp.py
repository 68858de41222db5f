"""Self-play on the referential game, for docs/multiturn.md.
Run: python sp.py N_CANDIDATES MESSAGE_LEN EPISODES LR [easy] [gru|tabular] [NUM_ENVS]."""

import sys
import time

import torch

from aligngym.agents.selfplay import SelfPlayConfig, SelfPlayTrainer
from aligngym.envs.multiagent import referential_parallel_env

torch.set_num_threads(1)

kw = dict(
    n_candidates=int(sys.argv[1]),
    message_len=int(sys.argv[2]),
    **(
        dict(animals=[" cat"], vocab=[" red", " green", " blue", " yellow"])
        if len(sys.argv) > 5 and sys.argv[5] == "easy"
        else {}
    ),
)


def fn():
    return referential_parallel_env(**kw)


tr = SelfPlayTrainer(
    fn,
    SelfPlayConfig(
        seed=0,
        num_envs=int(sys.argv[7]) if len(sys.argv) > 7 else 32,
        learning_rate=float(sys.argv[4]),
        policy=sys.argv[6] if len(sys.argv) > 6 else "gru",
        policy_kwargs={}
        if len(sys.argv) > 6 and sys.argv[6] == "tabular"
        else {"embed_dim": 32, "hidden_size": 64},
    ),
)
print("before", tr.evaluate(200, deterministic=False))
t = time.time()


def cb(tr, m):
    if tr.num_updates % 10 == 0:
        print(
            tr.num_episodes,
            round(m["charts/listener_0/episodic_return"], 3),
            round(time.time() - t, 1),
            flush=True,
        )


tr.learn(int(sys.argv[3]), callback=cb)
print("train s", time.time() - t)
print("after greedy", tr.evaluate(200))
print("after sample", tr.evaluate(200, deterministic=False))
