"""Could any answer meet both Preference bars? Diversity and fluency of the preference pairs' chosen answers.

The alignment bar (issue 22) asks distinct-2 >= 0.8 x the reference's and perplexity under the reference LM <= 1.3 x
the reference's own on the 20 test prompts (with the one-line prompts: 0.738 -> 0.590 and 3.19 -> 4.15; with the
newline prompts before 00605e6: 0.933 -> 0.746 and 3.17 -> 4.12). This script measures both on the
human-written chosen answers of the shipped preference pairs, cut like the leaderboard's completions (16 tokens,
EOS after a shorter answer), 20 answers at a time (as many as the test prompts; 200 random draws, seed 0)::

    python docs/scripts/alignment/preference_chosen.py

The reference LM was pretrained on train-split lines only, so the train answers are text it has seen and the test
answers are not.
"""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.agents.sft import demonstrations
from aligngym.benchmarks.metrics import distinct_n, perplexity, reference_of
from aligngym.envs.runtime import runtime_of

MAX_NEW_TOKENS = 16
DRAW = 20
DRAWS = 200


def main() -> None:
    print("| chosen answers | n | distinct-2 (20 at a time: mean, 5-95 %) | ref ppl (pooled) |")
    print("|---|---:|---|---:|")
    for split in ("train", "test"):
        env = gym.make(
            "aligngym/Preference-Sequence-v0", split=split, max_new_tokens=MAX_NEW_TOKENS, gold=False
        )
        rt = runtime_of(env)
        tok = rt.tokenizer
        demos = demonstrations(rt)
        contexts = [list(tok.encode(p)) for p, _ in demos]
        completions = []
        for _, answer in demos:
            ids = list(tok.encode(answer))
            completions.append(ids[:MAX_NEW_TOKENS] if len(ids) >= MAX_NEW_TOKENS else [*ids, rt.eos_id])
        logprobs = reference_of(rt).token_logprobs(contexts, completions)
        rng = random.Random(0)
        d2 = [distinct_n(rng.sample(completions, DRAW), 2) for _ in range(DRAWS)]
        lo, hi = np.percentile(d2, [5, 95])
        print(
            f"| {split} | {len(demos)} | {np.mean(d2):.3f} ({lo:.3f}-{hi:.3f}) | {perplexity(logprobs):.1f} |"
        )
        env.close()


if __name__ == "__main__":
    main()
