"""Token-exactness check for docs/multiturn.md: sampled conversations with the shipped reference GPT-2,
observation ids vs the rebuilt history and recomputed vs sampling log-probs. Run: python exact.py"""

import gymnasium as gym
import numpy as np
import torch

from aligngym.agents.multiturn import history_from_transcript, history_logprobs
from aligngym.agents.policies import CausalLMPolicy

torch.set_num_threads(1)
env = gym.make("aligngym/Dialogue-Token-v0", turn_scorer="length", max_turns=3, max_turn_tokens=12)
rt = env.unwrapped.runtime
policy = CausalLMPolicy(
    "default", tokenizer=rt.tokenizer, value_head=False
).eval()  # the shipped reference GPT-2
gen = torch.Generator().manual_seed(0)
diffs, tokens, matches = [], 0, 0
for seed in range(5):
    obs, info = env.reset(seed=seed)
    sampled = []
    with torch.no_grad():
        while True:
            logits = policy(
                torch.as_tensor(obs["input_ids"])[None], torch.as_tensor(obs["attention_mask"])[None]
            )
            logits = logits.masked_fill(~torch.as_tensor(info["action_mask"])[None], float("-inf"))
            logp = torch.log_softmax(logits, -1)[0]
            a = int(torch.multinomial(logp.exp(), 1, generator=gen))
            sampled.append(
                float(
                    torch.log_softmax(
                        policy(
                            torch.as_tensor(obs["input_ids"])[None],
                            torch.as_tensor(obs["attention_mask"])[None],
                        ),
                        -1,
                    )[0, a]
                )
            )
            obs, _, done, _, info = env.step(a)
            if done:
                break
        ids, asst = history_from_transcript(info["transcript"], rt.user_sep, rt.assistant_sep)
        n = int(obs["attention_mask"].sum())
        matches += obs["input_ids"][:n].tolist() == ids[:n]
        x = torch.as_tensor(ids)[None]
        re = history_logprobs(policy, x, torch.ones_like(x), torch.as_tensor(asst)[None])[0][
            torch.as_tensor(asst)
        ]
    diffs.append(float(np.max(np.abs(np.array(sampled) - re.numpy()))))
    tokens += len(sampled)
print(
    f"5 conversations, {tokens} sampled tokens; observation == rebuilt history in {matches}/5; max |logp diff| = {max(diffs):.2e}"
)
