"""CleanRL-style PPO, in one file, on an aligngym token-level env: proof that the env is an ordinary Gymnasium env.

Nothing from aligngym is used but the env ids (``import aligngym.envs`` registers them): the env is made with
``gym.make_vec``, episode statistics come from Gymnasium's vector ``RecordEpisodeStatistics``, and the agent is a small
torch actor-critic over the observed token ids. Gymnasium's default NEXT_STEP autoreset is handled as Gymnasium
documents it: the step after an episode ends is a reset step, whose transition is left out of the update.

    python benchmarks/examples/cleanrl_ppo_token.py --env-id aligngym/Target-Token-v0 --total-timesteps 8000
    python benchmarks/examples/cleanrl_ppo_token.py --env-id aligngym/Sentiment-Token-v0 \\
        --action-vocab " good" " great" " bad" " the" "." "<|endoftext|>" --total-timesteps 4000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions.categorical import Categorical

import aligngym.envs  # noqa: F401  (registers the aligngym/... ids; nothing else is used)


@dataclass
class Args:
    env_id: str = "aligngym/Target-Token-v0"
    action_vocab: list[str] | None = None  # restricted action vocabulary (token strings), e.g. for Sentiment
    vectorization_mode: str | None = None  # None: the id's default (aligngym's native vector env); or "sync"
    total_timesteps: int = 8000
    num_envs: int = 8
    num_steps: int = 16  # rollout length per env per update
    learning_rate: float = 5e-3
    anneal_lr: bool = True
    gamma: float = 1.0  # episodes are short and end by themselves; the score is paid at the end
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    embed_dim: int = 32
    hidden: int = 128
    seed: int = 1
    torch_threads: int = 1
    eval_episodes: int = 64
    tensorboard: str | None = None  # a run directory for TensorBoard scalars (charts/*, losses/*); None: none
    extra: dict = field(default_factory=dict)  # more gym.make_vec options (Python use only)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Token embeddings (masked) -> flattened over positions -> MLP trunk -> policy logits and value."""

    def __init__(self, vocab_size: int, seq_len: int, n_actions: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.trunk = nn.Sequential(
            layer_init(nn.Linear(seq_len * embed_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
        )
        self.actor = layer_init(nn.Linear(hidden, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) * mask.unsqueeze(-1).float()  # (B, L, E)
        return self.trunk(x.flatten(1))

    def get_value(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(ids, mask)).squeeze(-1)

    def get_action_and_value(
        self, ids: torch.Tensor, mask: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(ids, mask)
        probs = Categorical(logits=self.actor(h))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(h).squeeze(-1)


def make_envs(args: Args) -> gym.vector.VectorEnv:
    kwargs: dict[str, Any] = {"action_vocab": args.action_vocab} if args.action_vocab else {}
    if args.vectorization_mode:
        kwargs["vectorization_mode"] = args.vectorization_mode
    envs = gym.make_vec(args.env_id, num_envs=args.num_envs, **kwargs, **args.extra)
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), (
        "a token-level (-Token-v0) env is expected"
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def to_tensors(obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(obs["input_ids"], dtype=torch.long), torch.as_tensor(obs["attention_mask"])


def evaluate(agent: Agent, envs: gym.vector.VectorEnv, episodes: int, seed: int) -> float:
    """Mean return of greedy (argmax) episodes."""
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    running = np.zeros(envs.num_envs)
    autoreset = np.zeros(envs.num_envs, dtype=bool)
    while len(returns) < episodes:
        with torch.no_grad():
            logits = agent.actor(agent.features(*to_tensors(obs)))
        obs, reward, term, trunc, _ = envs.step(logits.argmax(-1).numpy())
        running[~autoreset] += reward[~autoreset]
        done = (term | trunc) & ~autoreset
        returns.extend(running[done].tolist())
        running[done] = 0.0
        autoreset = term | trunc
    return float(np.mean(returns[:episodes]))


def train(args: Args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(args.torch_threads)
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard)

    envs = make_envs(args)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    assert isinstance(obs_space, gym.spaces.Dict) and isinstance(act_space, gym.spaces.Discrete)
    ids_space = obs_space["input_ids"]
    assert isinstance(ids_space, gym.spaces.Box)
    vocab_size, seq_len = int(ids_space.high.max()) + 1, int(ids_space.shape[0])
    n_actions = int(act_space.n)
    agent = Agent(vocab_size, seq_len, n_actions, args.embed_dim, args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    T, N = args.num_steps, args.num_envs
    batch_size = T * N
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // batch_size)
    ids_buf = torch.zeros((T, N, seq_len), dtype=torch.long)
    mask_buf = torch.zeros((T, N, seq_len), dtype=torch.long)
    actions = torch.zeros((T, N), dtype=torch.long)
    logprobs = torch.zeros((T, N))
    rewards = torch.zeros((T, N))
    dones = torch.zeros((T, N))  # the step at t ended its episode
    valid = torch.zeros((T, N))  # 0 for NEXT_STEP reset steps (their action is ignored by the env)
    values = torch.zeros((T, N))

    global_step = 0
    episodic_returns: list[float] = []
    start = time.time()
    obs, _ = envs.reset(seed=args.seed)
    next_ids, next_mask = to_tensors(obs)
    autoreset = torch.zeros(N, dtype=torch.bool)

    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        for step in range(T):
            global_step += N
            ids_buf[step], mask_buf[step] = next_ids, next_mask
            valid[step] = (~autoreset).float()
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_ids, next_mask)
            values[step], actions[step], logprobs[step] = value, action, logprob
            obs, reward, term, trunc, infos = envs.step(action.numpy())
            done = np.logical_or(term, trunc)
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32) * valid[step]
            dones[step] = torch.as_tensor(done, dtype=torch.float32) * valid[step]
            next_ids, next_mask = to_tensors(obs)
            autoreset = torch.as_tensor(done)
            if "episode" in infos:
                for r in infos["episode"]["r"][infos["_episode"]]:
                    episodic_returns.append(float(r))
                    if writer is not None:
                        writer.add_scalar("charts/episodic_return", float(r), global_step)

        # GAE; a reset step (valid=0) breaks the chain and gets no advantage
        with torch.no_grad():
            next_value = agent.get_value(next_ids, next_mask)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(N)
            for t in reversed(range(T)):
                nextvalues = next_value if t == T - 1 else values[t + 1]
                nonterminal = 1.0 - dones[t]
                delta = rewards[t] + args.gamma * nextvalues * nonterminal - values[t]
                lastgaelam = (delta + args.gamma * args.gae_lambda * nonterminal * lastgaelam) * valid[t]
                advantages[t] = lastgaelam
            returns = advantages + values

        b_ids, b_mask = ids_buf.reshape(-1, seq_len), mask_buf.reshape(-1, seq_len)
        b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
        b_adv, b_returns = advantages.reshape(-1), returns.reshape(-1)
        b_valid = valid.reshape(-1)
        b_inds = np.arange(batch_size)
        for _ in range(args.update_epochs):
            rng.shuffle(b_inds)
            for s in range(0, batch_size, minibatch_size):
                mb = b_inds[s : s + minibatch_size]
                w = b_valid[mb]
                if w.sum() == 0:
                    continue
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_ids[mb], b_mask[mb], b_actions[mb]
                )
                ratio = (newlogprob - b_logprobs[mb]).exp()
                mb_adv = b_adv[mb]
                mean = (mb_adv * w).sum() / w.sum()
                std = (((mb_adv - mean) ** 2 * w).sum() / w.sum()).sqrt()
                mb_adv = (mb_adv - mean) / (std + 1e-8)
                pg_loss = (
                    torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef))
                    * w
                ).sum() / w.sum()
                v_loss = 0.5 * (((newvalue - b_returns[mb]) ** 2) * w).sum() / w.sum()
                ent = (entropy * w).sum() / w.sum()
                loss = pg_loss - args.ent_coef * ent + v_loss * args.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
        if writer is not None:
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/entropy", ent.item(), global_step)
            writer.add_scalar("charts/SPS", int(global_step / (time.time() - start)), global_step)

    greedy = evaluate(agent, envs, args.eval_episodes, seed=args.seed + 10_000)
    envs.close()
    if writer is not None:
        writer.close()
    tail = episodic_returns[-max(1, len(episodic_returns) // 10) :]
    result = {
        "env_id": args.env_id,
        "global_step": global_step,
        "episodes": len(episodic_returns),
        "first_10pct_return": float(np.mean(episodic_returns[: max(1, len(episodic_returns) // 10)])),
        "last_10pct_return": float(np.mean(tail)),
        "greedy_return": greedy,
        "seconds": round(time.time() - start, 1),
    }
    print(result)
    return result


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Args()
    for name, value in vars(defaults).items():
        if name == "extra":
            continue
        flag = "--" + name.replace("_", "-")
        if name == "action_vocab":
            p.add_argument(flag, nargs="+", default=None, help="restricted action vocabulary (token strings)")
        elif isinstance(value, bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=value)
        elif value is None:
            p.add_argument(flag, default=None)
        else:
            p.add_argument(flag, type=type(value), default=value)
    return Args(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    train(parse_args())
