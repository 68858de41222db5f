"""Train the shipped default tokenizer: byte-level BPE on ``corpus.txt`` (``python -m aligngym.envs.data.build_tokenizer``).

Byte-level, so any unicode text encodes without an unknown token. Special tokens: ``<|pad|>`` (id 0) and
``<|endoftext|>`` (id 1, end of sequence and beginning of text, as in GPT-2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).parent


def build(corpus: Path, vocab_size: int = 2048) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<|pad|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus.txt")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=HERE / "tokenizer.json")
    args = parser.parse_args()
    tok = build(args.corpus, args.vocab_size)
    tok.save(str(args.out))
    print(f"wrote {args.out} with {tok.get_vocab_size()} tokens")


if __name__ == "__main__":
    main()
