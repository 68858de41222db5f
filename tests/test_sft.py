"""SFTTrainer: corpus and (prompt, completion) training lower held-out loss; masking, optimizers, schedule, save."""

from __future__ import annotations

import math

import pytest
import torch

from aligngym.agents.policies import CausalLMPolicy, tiny_causal_lm
from aligngym.agents.sft import SFTConfig, SFTTrainer
from aligngym.envs.tokenization import load_tokenizer

DOCS = [
    f"The {a} was {b} and the {c} was {d}."
    for a in ("soup", "room", "film", "staff")
    for b in ("good", "great")
    for c in ("bread", "view", "plot")
    for d in ("warm", "fine")
] * 3


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("default")


def _model(tok):
    return tiny_causal_lm(len(tok), eos_token_id=tok.eos_id, seed=0)


def test_corpus_training_lowers_eval_loss(tok):
    cfg = SFTConfig(
        max_steps=60,
        batch_size=8,
        block_size=32,
        learning_rate=3e-3,
        warmup_steps=5,
        eval_fraction=0.1,
        device="cpu",
    )
    trainer = SFTTrainer(_model(tok), tok, cfg, corpus=DOCS)
    before = trainer.evaluate()
    after = trainer.train()
    assert after["eval_loss"] < before["eval_loss"] - 1.0
    assert math.isclose(after["perplexity"], math.exp(after["eval_loss"]), rel_tol=1e-6)


def test_pairs_mask_the_prompt_tokens(tok):
    trainer = SFTTrainer(_model(tok), tok, SFTConfig(device="cpu"), pairs=[("Say hi:", " hi there")])
    prompt, completion = trainer.train_pairs[0]
    _ids, mask, labels = trainer._pairs_batch([(prompt, completion)])
    supervised = labels[0][labels[0] != -100].tolist()
    assert supervised == completion  # the completion tokens and the EOS after them, nothing of the prompt
    assert completion[-1] == tok.eos_id and int(mask.sum()) == len(prompt) + len(completion) - 1


def test_pairs_training_learns_the_completion(tok):
    pairs = [(f"Q: colour of item {i}?", " red") for i in range(20)]
    cfg = SFTConfig(
        max_steps=60,
        batch_size=8,
        learning_rate=1e-2,
        warmup_steps=2,
        eval_fraction=0.2,
        optimizer="adam",
        device="cpu",
    )
    trainer = SFTTrainer(_model(tok), tok, cfg, pairs=pairs)
    before = trainer.evaluate()["eval_loss"]
    assert trainer.train()["eval_loss"] < before / 4


def test_sgd_option_trains(tok):
    cfg = SFTConfig(
        max_steps=30,
        batch_size=8,
        block_size=32,
        learning_rate=0.1,
        optimizer="sgd",
        warmup_steps=1,
        eval_fraction=0.1,
        device="cpu",
    )
    trainer = SFTTrainer(_model(tok), tok, cfg, corpus=DOCS)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    before = trainer.evaluate()["eval_loss"]
    assert trainer.train()["eval_loss"] < before


def test_bad_options_are_refused(tok):
    with pytest.raises(ValueError, match="optimizer"):
        SFTConfig(optimizer="lion")
    with pytest.raises(ValueError, match="exactly one"):
        SFTTrainer(_model(tok), tok, SFTConfig(device="cpu"))
    with pytest.raises(ValueError, match="vocabulary"):
        SFTTrainer(tiny_causal_lm(100), tok, SFTConfig(device="cpu"), corpus=DOCS)


def test_learning_rate_warms_up_then_decays(tok):
    cfg = SFTConfig(learning_rate=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, device="cpu")
    trainer = SFTTrainer(_model(tok), tok, cfg, corpus=DOCS)
    assert trainer.lr_at(0) == pytest.approx(0.1) and trainer.lr_at(9) == pytest.approx(1.0)
    assert trainer.lr_at(60) == pytest.approx(0.55) and trainer.lr_at(110) == pytest.approx(0.1)


def test_trained_policy_saves_and_loads(tok, tmp_path):
    policy = CausalLMPolicy(_model(tok), tokenizer=tok)
    cfg = SFTConfig(max_steps=5, batch_size=4, block_size=16, warmup_steps=1, device="cpu")
    trainer = SFTTrainer(policy, tok, cfg, corpus=DOCS)
    trainer.train()
    trainer.save(tmp_path / "sft")
    back = CausalLMPolicy.from_pretrained(tmp_path / "sft", tokenizer=tok)
    ids = torch.tensor([tok.encode("The soup was")])
    torch.testing.assert_close(back(ids, torch.ones_like(ids)), policy(ids, torch.ones_like(ids)))


def test_corpus_demonstrations_are_new_keyword_rows_from_train_documents():
    import gymnasium as gym

    import aligngym.envs  # noqa: F401  (registers the ids)
    from aligngym.agents.pretrain_reference import load_split
    from aligngym.agents.sft import SFTAgentConfig, corpus_demonstrations
    from aligngym.envs.core import runtime_of
    from aligngym.envs.data import data_path
    from aligngym.envs.scorers import make_scorer

    rt = runtime_of(gym.make("aligngym/Keywords-Sequence-v0", gold=False))
    test_rt = runtime_of(gym.make("aligngym/Keywords-Sequence-v0", split="test", gold=False))
    pairs = corpus_demonstrations(rt, 50)
    assert len(pairs) == 50 and pairs == corpus_demonstrations(rt, 50)  # deterministic
    assert corpus_demonstrations(rt, 0) == []
    task_prompts = {r["prompt"] for r in rt.rows + test_rt.rows}
    assert not task_prompts & {p for p, _ in pairs}
    train_docs, held_out, _ = load_split(data_path("corpus.txt"), data_path("corpus_split.json"))
    train_set, held_set = set(train_docs), set(held_out)
    assert all(c.strip() in train_set and c.strip() not in held_set for _, c in pairs)
    assert all(p.startswith("Write a sentence using: ") and c.startswith(" ") for p, c in pairs)
    keywords = [p[len("Write a sentence using: ") : -1].split(", ") for p, _ in pairs]
    coverage = make_scorer("keywords")([p for p, _ in pairs], [c for _, c in pairs], keywords=keywords)
    assert float(coverage.min()) == 1.0  # every demonstration uses its three keywords
    with pytest.raises(ValueError, match="Keywords"):
        corpus_demonstrations(runtime_of(gym.make("aligngym/Sentiment-Sequence-v0", gold=False)), 5)
    with pytest.raises(ValueError, match="corpus_demonstrations"):
        SFTAgentConfig(corpus_demonstrations=-1)
