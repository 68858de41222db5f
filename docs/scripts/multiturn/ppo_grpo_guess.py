"""Multi-turn PPO and GRPO on Guess-Token, and token-exactness of a multi-turn PPO batch, for docs/multiturn.md.

Run from the repository root: python docs/scripts/multiturn/ppo_grpo_guess.py [PPO_STEPS] [GRPO_STEPS]
(the table used 2000 10000). One torch thread; greedy success is exact over the 4 secrets (the replies are
deterministic), random success is over 400 episodes.
"""

import sys
import time

import gymnasium as gym
import numpy as np
import torch

import aligngym.envs  # noqa: F401
from aligngym.agents.multiturn import history_forward
from aligngym.agents.multiturn_grpo import MultiTurnGRPOAgent, MultiTurnGRPOConfig
from aligngym.agents.multiturn_ppo import MultiTurnPPOAgent, MultiTurnPPOConfig

torch.set_num_threads(1)
GUESS = "aligngym/Guess-Token-v0"


def greedy_success(agent, env):
    wins = 0
    for i in range(len(env.unwrapped.runtime.rows)):
        obs, info = env.reset(seed=0, options={"prompt_index": i})
        done = False
        while not done:
            obs, _, done, _, info = env.step(int(agent.predict(obs, deterministic=True)[0]))
        wins += info["success"]
    return wins / len(env.unwrapped.runtime.rows)


def random_success(env, n=400, seed=1000):
    rng = np.random.default_rng(seed)
    wins = 0
    for ep in range(n):
        env.reset(seed=seed + ep)
        done, info = False, {}
        while not done:
            _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(env.unwrapped.action_masks()))))
        wins += info["success"]
    return wins / n


ppo_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
grpo_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
env = gym.make(GUESS)
print("random success", random_success(env))

common = {"policy": "tiny-random", "device": "cpu", "seed": 0}
ppo = MultiTurnPPOAgent(
    gym.make(GUESS),
    MultiTurnPPOConfig(
        **common, num_envs=16, learning_rate=1e-3, init_kl_coef=0.0, adaptive_kl=False, ent_coef=0.01
    ),
)
print("ppo greedy success before", greedy_success(ppo, env))
t = time.perf_counter()
ppo.learn(ppo_steps)
print(
    f"ppo {ppo.num_timesteps} tokens in {time.perf_counter() - t:.0f} s: greedy success {greedy_success(ppo, env)}"
)
mismatches = [r["charts/logprob_mismatch"] for r in ppo.logger.history]
print("ppo max logprob mismatch over the run", max(mismatches) if mismatches else "-")

grpo = MultiTurnGRPOAgent(
    gym.make(GUESS),
    MultiTurnGRPOConfig(
        **common, num_generations=8, prompts_per_update=4, learning_rate=3e-3, beta=0.0, n_epochs=2
    ),
)
t = time.perf_counter()
grpo.learn(grpo_steps)
print(
    f"grpo {grpo.num_timesteps} tokens in {time.perf_counter() - t:.0f} s: greedy success {greedy_success(grpo, env)}"
)

# token-exactness on a dialogue with multi-token turns: 16 conversations, every token turn by turn
dialogue = gym.make(
    "aligngym/Dialogue-Token-v0", turn_scorer="length", max_turn_tokens=8, max_turns=3, max_context_tokens=128
)
agent = MultiTurnPPOAgent(dialogue, MultiTurnPPOConfig(**common, num_envs=16))
batch = agent.collect(agent._vector_env())
with torch.no_grad():
    logp = history_forward(
        agent.policy, batch["input_ids"], batch["attention_mask"], batch["assistant"], 1.0, batch["valid"]
    )[0]
worst, turns = 0.0, 0
for i, c in enumerate(batch["conversations"]):
    pos = [p for p, a in enumerate(c.assistant) if a]
    start = 0
    for n in c.tokens_per_turn:
        got = logp[i, pos[start : start + n]].numpy()
        worst = max(worst, float(np.abs(got - np.asarray(c.sampled_logp[start : start + n])).max()))
        start, turns = start + n, turns + 1
print(
    f"dialogue: {len(batch['conversations'])} conversations, {turns} turns, {batch['num_steps']} tokens: "
    f"observation == rebuilt history at every token (checked in the rollout), max |update - sampling| log-prob "
    f"{worst:.1e}"
)
