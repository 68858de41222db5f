"""Scorers: known inputs give known scores, composites add up, bad output raises naming the scorer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from aligngym.envs.scorers import (
    BaseScorer,
    CompositeScorer,
    ScorerError,
    list_scorers,
    make_scorer,
    register_scorer,
)
from aligngym.envs.scorers.success import VerifierScorer

RULE_SCORERS = [
    "sentiment",
    "keywords",
    "regex",
    "length",
    "blocklist",
    "bleu",
    "chrf",
    "rouge_l",
    "exact_match",
    "target",
]
CONTEXT = {
    "keywords": [["dog", "ball"], ["dog", "ball"]],
    "reference": ["a dog runs", "a dog runs"],
    "target": ["red", "red"],
}


def test_builtin_scorers_are_registered() -> None:
    assert set(RULE_SCORERS) <= set(list_scorers())


@pytest.mark.parametrize("name", RULE_SCORERS)
def test_every_rule_scorer_returns_float32_per_completion(name: str) -> None:
    scores = make_scorer(name)(["p", "q"], ["a dog runs with a ball", ""], **CONTEXT)
    assert scores.dtype == np.float32 and scores.shape == (2,)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", RULE_SCORERS)
def test_rule_scorers_pickle(name: str) -> None:
    scorer = make_scorer(name)
    clone = pickle.loads(pickle.dumps(scorer))
    args = (["p"], ["a dog runs with a ball"])
    ctx = {k: v[:1] for k, v in CONTEXT.items()}
    assert np.array_equal(clone(*args, **ctx), scorer(*args, **ctx))


def test_sentiment_positive_beats_negative() -> None:
    s = make_scorer("sentiment")(
        ["", ""], ["I loved it, wonderful and great!", "Awful, I hated every minute."]
    )
    assert s[0] > 0.5 and s[1] < -0.5


def test_sentiment_include_prompt_scores_the_whole_text() -> None:
    scorer = make_scorer("sentiment", include_prompt=True)
    assert scorer(["It was wonderful"], [""])[0] > 0.3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The dog catches the frisbee in the park.", 1.0),
        ("Dogs run.", 1 / 3),
        ("A hotdog near a parking lot.", 0.0),
        ("She was catching a frisbee.", 2 / 3),
        ("", 0.0),
    ],
)
def test_keyword_coverage_counts_exactly(text: str, expected: float) -> None:
    scorer = make_scorer("keywords")
    got = scorer(["p"], [text], keywords=[["dog", "frisbee", "catch"]])
    assert got[0] == pytest.approx(expected)


def test_keyword_inflections_with_e_drop_and_doubling() -> None:
    scorer = make_scorer("keywords", keywords=["bake", "run", "stop"])
    assert scorer(["p"], ["baking while running then stopped"])[0] == pytest.approx(1.0)


def test_keywords_without_keywords_raises() -> None:
    with pytest.raises(ScorerError, match="no keywords"):
        make_scorer("keywords")(["p"], ["x"])


def test_regex_length_blocklist_rules() -> None:
    assert make_scorer("regex", pattern=r"^\s*yes\b", flags=2)(
        ["p", "p"], [" Yes indeed", "no"]
    ).tolist() == [1.0, 0.0]
    length = make_scorer("length", min_words=2, max_words=3, tolerance=2)
    assert length(["p"] * 4, ["a", "a b", "a b c d", "a b c d e f g"]).tolist() == [0.5, 1.0, 0.5, 0.0]
    block = make_scorer("blocklist", words=("darn",))
    assert block(["p", "p"], ["Darn it", "darnation"]).tolist() == [-1.0, 0.0]


def test_length_scorer_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="min_words"):
        make_scorer("length", min_words=5, max_words=2)


def test_reference_overlap_identical_beats_unrelated() -> None:
    ref = ["the cat sat on the warm mat"]
    for name in ("bleu", "chrf", "rouge_l"):
        scorer = make_scorer(name)
        same = scorer(["p"], ["the cat sat on the warm mat"], reference=ref)[0]
        other = scorer(["p"], ["stocks fell sharply in early trading"], reference=ref)[0]
        assert same == pytest.approx(1.0, abs=1e-3), name
        assert other < 0.2, name


def test_reference_overlap_accepts_several_references() -> None:
    got = make_scorer("rouge_l")(["p"], ["a b c"], reference=[["x y z", "a b c"]])
    assert got[0] == pytest.approx(1.0)


def test_overlap_scorer_without_reference_names_the_column() -> None:
    with pytest.raises(ValueError, match="'bleu' needs the context column 'reference'"):
        make_scorer("bleu")(["p"], ["x"])


def test_exact_match_and_target() -> None:
    em = make_scorer("exact_match")
    assert em(["p", "p"], [" Red!", "red blue"], target=["red", "red"]).tolist() == [1.0, 0.0]
    tg = make_scorer("target")
    got = tg(["p"] * 4, ["red blue", "red", "blue red", "red blue green"], target=["red blue"] * 4)
    assert got.tolist() == pytest.approx([1.0, 0.5, 0.0, 2 / 3])


def test_verifier_sees_row_context() -> None:
    scorer = VerifierScorer(lambda prompt, completion, answer: completion.strip() == str(answer), name="math")
    assert scorer(["2+2=", "3+3="], [" 4", " 5"], answer=[4, 6]).tolist() == [1.0, 0.0]
    with pytest.raises(TypeError, match="callable"):
        VerifierScorer(3)


def test_composite_is_the_weighted_sum_and_reports_components() -> None:
    comp = make_scorer({"sentiment": 1.0, "length": 0.5})
    assert isinstance(comp, CompositeScorer)
    prompts, completions = ["p", "p"], ["What a great day it was", "bad"]
    total, parts = comp.score_with_components(prompts, completions)
    expected = parts["sentiment"] + 0.5 * parts["length"]
    assert np.allclose(total, expected)
    assert np.allclose(comp(prompts, completions), expected)
    assert set(parts) == {"sentiment", "length"}


def test_composite_zero_weight_component_is_reported_but_not_paid() -> None:
    comp = make_scorer({"length": 1.0, "sentiment": 0.0})
    total, parts = comp.score_with_components(["p"], ["Wonderful, great, lovely day"])
    assert parts["sentiment"][0] > 0.5 and total[0] == parts["length"][0]


def test_composite_duplicate_names_get_suffixes_and_bad_weights_raise() -> None:
    comp = CompositeScorer({"length": 1.0, make_scorer("length", min_words=1, max_words=1): 2.0})
    assert comp.component_names == ["length", "length_2"]
    with pytest.raises(ValueError, match="finite number"):
        make_scorer({"length": float("nan")})
    with pytest.raises(ValueError, match="at least one"):
        make_scorer({})


def test_make_scorer_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown scorer 'nope'.*sentiment"):
        make_scorer("nope")
    with pytest.raises(TypeError, match="registered name"):
        make_scorer(3.5)


def test_make_scorer_caches_named_scorers() -> None:
    assert make_scorer("sentiment") is make_scorer("sentiment")
    assert make_scorer("length", min_words=1) is not make_scorer("length", min_words=2)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([float("nan"), 1.0], "non-finite"),
        ([float("inf"), 1.0], "non-finite"),
        ([1.0], r"shape \(1,\)"),
        ([[1.0, 2.0]], r"shape \(1, 2\)"),
        (["a", "b"], "dtype"),
        (None, "returned None"),
        ([object(), object()], "dtype object"),
    ],
)
def test_bad_scorer_output_raises_naming_the_scorer(output, message: str) -> None:
    def my_scorer(prompts, completions):
        return output

    with pytest.raises(ScorerError, match=f"'my_scorer'.*{message}"):
        make_scorer(my_scorer)(["p", "q"], ["a", "b"])


def test_int_and_bool_scores_are_accepted_as_float32() -> None:
    scorer = make_scorer(lambda prompts, completions: [True, 0])
    assert scorer(["p", "q"], ["a", "b"]).dtype == np.float32


def test_user_scorer_gets_only_the_context_it_accepts() -> None:
    seen = {}

    def wants_reference(prompts, completions, reference):
        seen["reference"] = reference
        return [0.0] * len(completions)

    make_scorer(wants_reference)(["p"], ["c"], reference=["r"], keywords=[["k"]])
    assert seen == {"reference": ["r"]}


def test_mismatched_prompt_and_completion_lengths_raise() -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        make_scorer("length")(["a", "b"], ["c"])


def test_register_scorer_adds_and_refuses_silent_overwrite() -> None:
    class Shouty(BaseScorer):
        name = "shouty"

        def score(self, prompts, completions, **context):
            return [c.count("!") for c in completions]

    register_scorer("shouty_test", Shouty)
    assert make_scorer("shouty_test")(["p"], ["hi!!"])[0] == 2.0
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("shouty_test", lambda: Shouty())
    register_scorer("shouty_test", lambda: Shouty(), overwrite=True)


def test_trl_reward_function_is_called_the_way_trl_calls_it() -> None:
    fn = make_scorer("keywords").as_trl_reward_func()
    assert fn.__name__ == "keywords"
    out = fn(
        prompts=["Write with: dog", [{"role": "user", "content": "Write with: dog"}]],
        completions=["A dog.", [{"role": "assistant", "content": "No animals here."}]],
        completion_ids=[[1, 2], [3]],
        keywords=[["dog"], ["dog"]],
        trainer_state=object(),
        log_extra=lambda *a: None,
        log_metric=lambda *a: None,
    )
    assert out == [1.0, 0.0] and all(type(x) is float for x in out)
    assert pickle.loads(pickle.dumps(fn))(prompts=["p"], completions=["dog"], keywords=[["dog"]]) == [1.0]
