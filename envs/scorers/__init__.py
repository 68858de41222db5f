"""Alignment scorers: batched reward functions ``(prompts, completions, **context) -> float32 (B,)``.

``make_scorer("sentiment")`` builds a registered scorer; ``make_scorer({"sentiment": 1.0, "length": 0.2})`` a weighted
composite; ``register_scorer(name, factory)`` adds one. Families live one per file; heavy ones import on first use.
"""

from aligngym.envs.scorers.base import (
    BaseScorer,
    CompositeScorer,
    FunctionScorer,
    Scorer,
    ScorerError,
    TRLRewardFunction,
    list_scorers,
    make_scorer,
    register_scorer,
    validate_scores,
)

_BUILTIN = {
    "sentiment": "aligngym.envs.scorers.sentiment:SentimentScorer",
    "keywords": "aligngym.envs.scorers.rules:KeywordsScorer",
    "regex": "aligngym.envs.scorers.rules:RegexScorer",
    "length": "aligngym.envs.scorers.rules:LengthScorer",
    "blocklist": "aligngym.envs.scorers.rules:BlocklistScorer",
    "bleu": "aligngym.envs.scorers.overlap:BleuScorer",
    "chrf": "aligngym.envs.scorers.overlap:ChrfScorer",
    "rouge_l": "aligngym.envs.scorers.overlap:RougeLScorer",
    "exact_match": "aligngym.envs.scorers.success:ExactMatchScorer",
    "target": "aligngym.envs.scorers.success:TargetScorer",
    "verifier": "aligngym.envs.scorers.success:VerifierScorer",
    "embedding": "aligngym.envs.scorers.embedding:EmbeddingSimilarityScorer",
    "reward_model": "aligngym.envs.scorers.reward_model:RewardModelScorer",
    "preference_rm": "aligngym.envs.scorers.reward_model:PreferenceRewardScorer",
    "classifier": "aligngym.envs.scorers.classifier:ClassifierScorer",
    "fluency": "aligngym.envs.scorers.fluency:FluencyScorer",
    "human": "aligngym.envs.scorers.human:HumanFeedbackScorer",
}
for _name, _entry in _BUILTIN.items():
    register_scorer(_name, _entry)
from aligngym.envs.scorers import gold as _gold  # noqa: E402,F401  (registers the gold scorers)

__all__ = [
    "BaseScorer",
    "CompositeScorer",
    "FunctionScorer",
    "Scorer",
    "ScorerError",
    "TRLRewardFunction",
    "list_scorers",
    "make_scorer",
    "register_scorer",
    "validate_scores",
]
