"""TRL's GRPO on aligngym's Sentiment prompts, rewarded by aligngym's sentiment scorer (optional extra ``trl``).

The scorer is used exactly as TRL uses any reward function: ``make_scorer("sentiment").as_trl_reward_func()``. The
policy is the shipped reference GPT-2 (``aligngym/envs/data/reference_lm``) with the default tokenizer wrapped as a
``transformers`` fast tokenizer; a tiny random GPT-2 stands in if that model is absent. CPU, tiny budget:

    python benchmarks/examples/trl_grpo_sentiment.py --max-steps 4
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch


def build_tokenizer() -> Any:
    """The shipped default tokenizer as a ``PreTrainedTokenizerFast`` (left padding, as TRL generates)."""
    from transformers import PreTrainedTokenizerFast

    from aligngym.envs.tokenization import DEFAULT_EOS, DEFAULT_PAD, default_tokenizer_path

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(default_tokenizer_path()),
        eos_token=DEFAULT_EOS,
        bos_token=DEFAULT_EOS,
        pad_token=DEFAULT_PAD,
    )
    tok.padding_side = "left"
    return tok


def build_model(tokenizer: Any) -> tuple[Any, str]:
    """The shipped reference LM if present (and its vocabulary matches), else a tiny GPT-2 from a config."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from aligngym.envs.tasks import data_path

    ref_dir = data_path("reference_lm")
    if (ref_dir / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(ref_dir), local_files_only=True)
        if model.config.vocab_size == len(tokenizer):
            return model, f"shipped reference LM ({ref_dir})"
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(cfg), "tiny random GPT-2 (2x64)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-steps", type=int, default=4, help="optimizer steps")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (the GRPO group)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="completions per step (a multiple of the group size)"
    )
    p.add_argument("--max-completion-length", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--output-dir", default=None, help="checkpoints and logs (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from aligngym.envs.scorers import make_scorer
    from aligngym.envs.tasks import get_task, load_prompt_rows

    torch.set_num_threads(1)
    rows = load_prompt_rows(get_task("Sentiment"), split="train")
    dataset = Dataset.from_list([{"prompt": r["prompt"], "prompt_index": i} for i, r in enumerate(rows)])
    tokenizer = build_tokenizer()
    model, model_name = build_model(tokenizer)
    reward = make_scorer(
        "sentiment"
    ).as_trl_reward_func()  # f(prompts=..., completions=..., **kw) -> list[float]

    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            output_dir=args.output_dir or tmp,
            use_cpu=True,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            learning_rate=args.learning_rate,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer
        )
        trainer.train()
        history = [h for h in trainer.state.log_history if "reward" in h]
    rewards = [round(float(h["reward"]), 4) for h in history]
    print(f"model: {model_name}; prompts: {len(rows)}; steps: {len(history)}")
    print(f"mean sentiment reward per step: {rewards}")
    return {"model": model_name, "rewards": rewards, "steps": len(history)}


if __name__ == "__main__":
    main()
