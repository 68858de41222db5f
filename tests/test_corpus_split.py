"""The reference LM's data: a document split of the corpus with no sentence on both sides, and a step-based run.

Fast: nothing here trains the shipped model (one test takes three steps of a tiny GPT-2 to check that a rerun
reproduces the weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aligngym.agents import pretrain_reference as pr
from aligngym.agents.sft import read_corpus
from aligngym.envs.data import build_corpus as bc
from aligngym.envs.data import data_path


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return read_corpus(data_path("corpus.txt"))


@pytest.fixture(scope="module")
def split_file() -> dict:
    with open(data_path("corpus_split.json"), encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def data() -> pr.ReferenceData:
    return pr.reference_data()


def test_sentences_normalise_case_whitespace_and_speaker_tags() -> None:
    assert bc.sentences("Q: Where  do bees live?\nA: Bees live in hives. Highly   recommended.") == [
        "where do bees live?",
        "bees live in hives.",
        "highly recommended.",
    ]
    # a bare speaker tag is no sentence
    assert bc.sentences("Q: How do I tie a knot?\nA:") == ["how do i tie a knot?"]


def test_documents_join_lines_that_share_a_sentence() -> None:
    toy = ["The soup was cold. One star.", "Great view. One star.", "Nice staff.", "great  VIEW. Fine."]
    assert bc.documents(toy) == [[0, 1, 3], [2]]


def test_document_split_never_puts_a_sentence_on_both_sides() -> None:
    toy = [f"Line {i}. Closer {i % 7}." for i in range(60)] + [f"Alone {i}." for i in range(40)]
    for seed in range(5):
        train, held = bc.document_split(toy, seed=seed, eval_fraction=0.2)
        train_sents = {s for g in train for i in g for s in bc.sentences(toy[i])}
        held_sents = {s for g in held for i in g for s in bc.sentences(toy[i])}
        assert held and not train_sents & held_sents
        assert sorted(i for g in train + held for i in g) == list(range(len(toy)))


def test_document_split_rejects_a_bad_fraction() -> None:
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        bc.document_split(["A."], eval_fraction=1.0)


def test_shipped_split_is_the_seeded_split_of_the_shipped_corpus(lines: list[str], split_file: dict) -> None:
    assert split_file == bc.split_record(lines, split_file["seed"], split_file["eval_fraction"])
    assert split_file["corpus_sha256"] == bc.corpus_sha256(lines)


def test_shipped_split_is_disjoint_by_document(lines: list[str], split_file: dict) -> None:
    held = [n - 1 for doc in split_file["eval_line_numbers"] for n in doc]
    assert len(held) == len(set(held)) == split_file["eval_lines"] > 0
    docs = bc.documents(lines)
    doc_of = {i: d for d, group in enumerate(docs) for i in group}
    held_docs = {doc_of[i] for i in held}
    # every held-out document is held out whole, and no train line belongs to a held-out document
    assert sorted(held) == sorted(i for d in held_docs for i in docs[d])
    train = [i for i in range(len(lines)) if i not in set(held)]
    assert not held_docs & {doc_of[i] for i in train}
    assert len(train) + len(held) == len(lines) == split_file["lines"]


def test_no_eval_line_shares_a_sentence_with_a_training_line(data: pr.ReferenceData) -> None:
    train_sents = {s for line in data.train_lines for s in bc.sentences(line)}
    for line in data.eval_lines + data.eval_keyword_lines:
        shared = [s for s in bc.sentences(line) if s in train_sents]
        assert not shared, f"held-out line {line!r} shares {shared} with a training line"
    assert pr.contaminated(data.train_lines, data.eval_lines) == []


@pytest.mark.parametrize(
    "filename",
    [
        "sentiment.jsonl",
        "keywords.jsonl",
        "similarity.jsonl",
        "preference_prompts.jsonl",
        "preference_pairs.jsonl",
    ],
)
def test_no_task_test_row_is_in_the_reference_training_lines(filename: str, data: pr.ReferenceData) -> None:
    text = "\n".join(" ".join(line.lower().split()) for line in data.train_lines)
    with open(data_path(filename), encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    test_texts = [
        str(r[col])
        for r in rows
        if r.get("split") == "test"
        for col in ("prompt", "reference", "chosen")
        if col in r
    ]
    assert test_texts
    seen = [t for t in test_texts if " ".join(t.lower().split()) in text]
    assert not seen, f"{filename}: test rows inside the reference LM's training lines, e.g. {seen[:2]}"


def test_derived_lines_come_from_train_documents_only(data: pr.ReferenceData) -> None:
    held = {" ".join(line.split()) for line in data.eval_lines}
    copies = [
        line for line in data.train_lines if line.startswith("Write a sentence using:") and ". " in line
    ]
    assert len(copies) > 1000
    for line in copies:
        sentence = line.split(". ", 1)[1]  # the sentence after "Write a sentence using: w1, w2, w3."
        assert " ".join(sentence.split()) not in held


def test_a_contaminated_split_is_refused(tmp_path: Path, lines: list[str], split_file: dict) -> None:
    held = {n - 1 for doc in split_file["eval_line_numbers"] for n in doc}
    # hold out one line of a multi-line train document: its sentence stays in a train line
    docs = bc.documents(lines)
    victim = next(g for g in docs if len(g) > 1 and g[0] not in held)
    bad = {**split_file, "eval_line_numbers": [*split_file["eval_line_numbers"], [victim[0] + 1]]}
    path = tmp_path / "corpus_split.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="contaminated"):
        pr.reference_data(split=path)


def test_a_split_of_another_corpus_is_refused(tmp_path: Path, split_file: dict) -> None:
    path = tmp_path / "corpus_split.json"
    path.write_text(json.dumps({**split_file, "corpus_sha256": "0" * 64}), encoding="utf-8")
    with pytest.raises(ValueError, match="another corpus"):
        pr.reference_data(split=path)


def test_training_stops_by_step_count_not_wall_clock() -> None:
    args = pr.parser().parse_args([])
    cfg = pr.training_config(args)
    assert cfg.max_seconds == 0.0 and cfg.max_steps == args.steps
    assert cfg.eval_fraction == 0.0  # the held-out set is the document split, not a line split inside SFT
    options = {a for action in pr.parser()._actions for a in action.option_strings}
    assert not {o for o in options if "second" in o or "time" in o}


def test_shipped_metadata_describes_the_shipped_weights(data: pr.ReferenceData, split_file: dict) -> None:
    from transformers import AutoModelForCausalLM

    root = data_path("reference_lm")
    meta = json.loads((root / pr.METADATA_FILE).read_text(encoding="utf-8"))
    defaults = pr.parser().parse_args([])
    assert meta["command"].startswith(pr.COMMAND)
    assert meta["training"]["steps"] == defaults.steps and meta["training"]["seed"] == defaults.seed
    assert meta["training"]["torch_threads"] == defaults.threads
    assert meta["data"]["split_seed"] == split_file["seed"]
    assert meta["data"]["eval_lines_sha256"] == data.record["eval_lines_sha256"]
    assert meta["data"]["shared_sentences_train_eval"] == 0
    assert math.isfinite(meta["heldout"]["perplexity"]) and meta["heldout"]["perplexity"] > 1.0
    model = AutoModelForCausalLM.from_pretrained(str(root), local_files_only=True)
    assert pr.weights_sha256(model) == meta["model"]["weights_sha256"]


def test_a_rerun_reproduces_the_weights(data: pr.ReferenceData) -> None:
    small = pr.ReferenceData(data.train_lines[:400], data.eval_lines[:20], data.eval_keyword_lines[:5], {})
    tiny = "--steps 3 --n-layer 1 --n-embd 16 --n-head 2 --threads 1 --block-size 16"
    args = pr.parser().parse_args(tiny.split())
    hashes = {pr.weights_sha256(pr.train(args, small, log=False)[0]) for _ in range(2)}
    assert len(hashes) == 1


def test_recorded_command_leaves_out_the_output_directory() -> None:
    assert pr.recorded_command(["--out", "/tmp/x", "--steps", "10"]) == f"{pr.COMMAND} --steps 10"
    assert pr.recorded_command(["--out=/tmp/x"]) == pr.COMMAND
