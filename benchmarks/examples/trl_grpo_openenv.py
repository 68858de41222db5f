"""TRL's GRPO rewarded by an aligngym env served over OpenEnv (optional extras ``trl`` and ``serve``).

TRL's environment mode needs a chat model with tool calls; a plain completion model is trained here with a
``reward_funcs`` entry that sends each (prompt index, completion) to the OpenEnv server and returns the env's reward.
Pass ``--url`` of a running ``aligngym serve aligngym/Sentiment-Sequence-v0`` or let the example serve it in a thread:

    python benchmarks/examples/trl_grpo_openenv.py --max-steps 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


class OpenEnvReward:
    """A TRL reward function backed by an OpenEnv server: one WebSocket session, one self-contained step per completion.

    TRL calls it as ``f(prompts=..., completions=..., completion_ids=..., prompt_index=[...], trainer_state=...)``;
    the dataset column ``prompt_index`` tells the server which prompt each completion answers.
    """

    def __init__(self, url: str) -> None:
        from aligngym.envs.serving import AlignGymClient

        self.__name__ = "openenv_reward"  # TRL names the reward column after it
        self.url = url
        self._client = AlignGymClient(base_url=url).sync()
        self._client.connect()

    def __call__(
        self, prompts: list[Any], completions: list[Any], prompt_index: list[int], **kwargs: Any
    ) -> list[float | None]:
        from aligngym.envs.serving import CompletionAction

        rewards: list[float | None] = []
        for i, completion in zip(prompt_index, completions):
            text = completion if isinstance(completion, str) else completion[-1]["content"]
            result = self._client.step(CompletionAction(completion=text, prompt_index=int(i)))
            rewards.append(float(result.reward))
        return rewards

    def close(self) -> None:
        self._client.close()


def train(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(Path(__file__).parent))
    from trl_grpo_sentiment import build_model, build_tokenizer

    from aligngym.envs.tasks import get_task, load_prompt_rows

    rows = load_prompt_rows(
        get_task("Sentiment"), split="train"
    )  # the server's prompt set, in the same order
    dataset = Dataset.from_list([{"prompt": r["prompt"], "prompt_index": i} for i, r in enumerate(rows)])
    tokenizer = build_tokenizer()
    model, model_name = build_model(tokenizer)
    reward = OpenEnvReward(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = GRPOConfig(
                output_dir=tmp,
                use_cpu=True,
                max_steps=args.max_steps,
                per_device_train_batch_size=args.batch_size,
                num_generations=args.num_generations,
                max_completion_length=16,
                learning_rate=1e-4,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                seed=args.seed,
                disable_tqdm=True,
            )
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[reward],
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
            trainer.train()
            rewards = [round(float(h["reward"]), 4) for h in trainer.state.log_history if "reward" in h]
    finally:
        reward.close()
    print(f"model: {model_name}; env server: {url}")
    print(f"mean env reward per step: {rewards}")
    return {"model": model_name, "rewards": rewards}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server of aligngym/Sentiment-Sequence-v0")
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.url:
        return train(args.url, args)
    from aligngym.envs.serving import ServerThread, create_server_app

    with ServerThread(create_server_app("aligngym/Sentiment-Sequence-v0")) as server:
        return train(server.url, args)


if __name__ == "__main__":
    main()
