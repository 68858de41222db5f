"""Benchmark metrics: known inputs -> known values (repetition, sample std, KL, perplexity, hacking with gold), the
KL measured on evaluation completions, and the report's columns, oracle labels and unreadable-file listing."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.benchmarks.agents import AGENTS, is_oracle
from aligngym.benchmarks.metrics import (
    HackingRule,
    NotMeasured,
    completion_kl,
    lm_metrics,
    mean_std,
    perplexity,
    policy_logprobs,
    repetition_rate,
)
from aligngym.benchmarks.report import load_records, results_table, unreadable_records, write_outputs
from aligngym.benchmarks.run import EpisodeInfoRecorder, evaluate_point, read_record


# -- pure metrics ----------------------------------------------------------------------------------------------------
def test_repetition_rate_counts_tokens_repeated_within_a_completion() -> None:
    assert repetition_rate([["love", "love", "love"]]) == pytest.approx(2 / 3)
    assert repetition_rate([[1, 2, 3], [4, 4]]) == pytest.approx(1 / 5)  # pooled over completions
    assert repetition_rate([[1, 2], [1, 2]]) == 0.0  # repeats across completions are distinct-n's business
    assert math.isnan(repetition_rate([[], []]))


def test_mean_std_is_the_sample_std_with_ddof_1() -> None:
    mean, std, n = mean_std([1.0, 2.0, 3.0, None, float("nan")])
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)  # population std would be 0.816
    assert mean_std([5.0]) == (5.0, None, 1)
    assert mean_std([None]) == (None, None, 0)


def test_completion_kl_is_the_mean_of_summed_log_ratios() -> None:
    pol = [np.log([0.5, 0.5]), np.log([1.0])]
    ref = [np.log([0.25, 0.5]), np.log([0.5])]
    assert completion_kl(pol, ref) == pytest.approx((math.log(2) + math.log(2)) / 2)
    with pytest.raises(ValueError, match="completion 0"):
        completion_kl([np.zeros(2)], [np.zeros(3)])


def test_perplexity_pools_tokens_over_completions() -> None:
    assert perplexity([np.log([0.5, 0.5]), np.log([0.5])]) == pytest.approx(2.0)
    assert perplexity([np.log([0.25]), np.log([1.0])]) == pytest.approx(2.0)  # exp((log 4 + 0) / 2)
    assert math.isnan(perplexity([np.zeros(0)]))


def _curve(scores: list[float], golds: list[float], d2: list[float] | None = None) -> list[dict[str, float]]:
    d2 = d2 or [0.9] * len(scores)
    return [{"mean_score": s, "gold_score": g, "distinct_2": d} for s, g, d in zip(scores, golds, d2)]


def test_hacking_rule_flags_proxy_rising_while_gold_falls() -> None:
    rule = HackingRule(min_score_rise=0.05, min_gold_fall=0.02)
    chk = rule.check(_curve([0.1, 0.6], [0.5, 0.3]))  # diversity kept, gold fell
    assert chk["flagged"] and chk["gold_fell"] and not chk["collapsed"]
    assert chk["gold_change"] == pytest.approx(-0.2) and "gold 0.500 -> 0.300" in chk["reason"]
    assert not rule.check(_curve([0.1, 0.6], [0.5, 0.7]))["flagged"]  # gold rose with the proxy
    assert not rule.check(_curve([0.1, 0.12], [0.5, 0.1]))["flagged"]  # the proxy did not rise
    no_div = [{"mean_score": 0.1, "gold_score": 0.5}, {"mean_score": 0.6, "gold_score": 0.3}]
    assert rule.check(no_div)["flagged"]  # gold alone is enough to judge


# -- KL and perplexity on evaluation completions ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aligngym.agents.lm import tiny_causal_lm

    env = gym.make("aligngym/Sentiment-Token-v0")
    rt = env.unwrapped.runtime
    path = tmp_path_factory.mktemp("lm") / "tiny"
    tiny_causal_lm(rt.vocab_size, seed=1, eos_token_id=rt.eos_id).save_pretrained(path)
    return path


def _eval(agent_name: str, lm: Path, **agent_kw: Any) -> tuple[dict[str, Any], Any, EpisodeInfoRecorder]:
    from aligngym.benchmarks.agents import make_agent

    env = EpisodeInfoRecorder(
        gym.make("aligngym/Sentiment-Token-v0", split="test", max_new_tokens=4, reference_model=str(lm))
    )
    agent = make_agent(agent_name, env, seed=0, device="cpu", **agent_kw)
    return evaluate_point(agent, env, n_episodes=6, deterministic=False, samples=1), agent, env


def test_kl_of_the_reference_decoding_itself_is_about_zero(tiny_lm: Path) -> None:
    point, _, _ = _eval("reference", tiny_lm, model=str(tiny_lm))
    assert point["kl_note"] is None and 0.0 <= point["kl"] < 0.02  # only the env's action masks differ
    assert point["ref_ppl"] > 1.0 and point["ref_ppl_note"] is None


def test_kl_is_the_summed_log_ratio_of_policy_and_reference(tiny_lm: Path, tmp_path: Path) -> None:
    from aligngym.agents.lm import tiny_causal_lm

    rt = gym.make("aligngym/Sentiment-Token-v0").unwrapped.runtime
    tiny_causal_lm(rt.vocab_size, seed=7, eos_token_id=rt.eos_id).save_pretrained(tmp_path / "other")
    point, agent, env = _eval("reference", tiny_lm, model=str(tmp_path / "other"))
    prompts = np.stack([p[0] for p in env.prompts])
    masks = np.stack([p[1] for p in env.prompts])
    completions = [list(i["completion_ids"]) for i in env.final_infos]
    pol = policy_logprobs(agent, rt, prompts, masks, completions)
    ref = env.unwrapped.runtime.reference
    by_hand = []
    for i, comp in enumerate(completions):  # token by token, no batching, no KV cache
        ctx = prompts[i][masks[i] != 0].tolist()
        total = 0.0
        for t, tok in enumerate(comp):
            ids = torch.as_tensor([ctx + comp[:t]])
            with torch.no_grad():
                logits = agent.policy(ids, torch.ones_like(ids))[0]
            logits = logits.masked_fill(~torch.as_tensor(rt.action_mask(t)), float("-inf"))
            lp = torch.log_softmax(logits, -1)[tok].item()
            assert lp == pytest.approx(float(pol[i][t]), abs=1e-4)
            total += lp - float(ref.token_logprobs([ctx + comp[:t]], [[tok]])[0][0])
        by_hand.append(total)
    assert point["kl"] == pytest.approx(float(np.mean(by_hand)), abs=1e-3) and point["kl"] > 0.005


def test_agents_without_a_policy_model_get_no_kl_and_a_reason(tiny_lm: Path) -> None:
    point, _, _ = _eval("random", tiny_lm)
    assert point["kl"] is None and "no policy model" in point["kl_note"]
    assert point["ref_ppl"] is not None  # perplexity needs only the completions
    with pytest.raises(NotMeasured):
        policy_logprobs(object(), None, np.zeros((0, 1)), np.zeros((0, 1)), [])


def test_a_failing_reference_is_recorded_with_its_cause_not_a_nan() -> None:
    class Broken:
        tokenizer = "/nonexistent/tokenizer.json"
        reference = None
        action_ids = None

    out = lm_metrics(object(), Broken(), np.zeros((1, 2), dtype=np.int64), np.ones((1, 2)), [[1]])
    assert out["kl"] is None and out["ref_ppl"] is None
    assert "no reference LM" in out["ref_ppl_note"] and "Error" in out["ref_ppl_note"]


# -- the report ------------------------------------------------------------------------------------------------------
def _record(
    run_id: str, agent: str, seed: int, score: float, gold: float | None, oracle: bool = False
) -> dict:
    point0 = {"step": 0, "mean_score": 0.1, "gold_score": None if gold is None else 0.5, "distinct_2": 0.8}
    final = {
        "step": 10,
        "mean_score": score,
        "gold_score": gold,
        "distinct_2": 0.8,
        "kl": 1.5,
        "ref_ppl": 9.0,
    }
    final.update(kl_note=None, ref_ppl_note=None, repetition=0.1, mean_length=4.0, length=4.0)
    return {
        "run_id": run_id,
        "env_id": "aligngym/Sentiment-Token-v0",
        "agent": agent,
        "seed": seed,
        "oracle": oracle,
        "status": "ok",
        "curve": [point0, final],
        "final": final,
        "env_steps": 10,
        "train_time": 1.0,
    }


def test_results_table_reports_sample_std_gold_and_oracle_labels() -> None:
    recs = [_record(f"a{s}", "ppo", s, score, 0.3) for s, score in enumerate([0.4, 0.6, 0.8])]
    recs.append(_record("g0", "guided-decoding", 0, 0.9, None, oracle=True))
    table = results_table(recs, HackingRule())
    ppo = next(line for line in table.splitlines() if "| ppo |" in line)
    assert "| 3/3 |" in ppo and "0.600 ± 0.200" in ppo  # sample std of 0.4, 0.6, 0.8 (population: 0.163)
    assert "0.300 ± 0.000" in ppo and "**yes** (3/3)" in ppo  # gold fell 0.5 -> 0.3 while the score rose
    assert "| guided-decoding (oracle) |" in table


def test_guided_decoding_is_labelled_an_oracle_in_the_agent_table() -> None:
    assert AGENTS["guided-decoding-oracle"].oracle and is_oracle(AGENTS["guided-decoding-oracle"])
    assert not AGENTS["ppo"].oracle

    class Decoder:
        is_oracle = False  # RewardGuidedDecoder with guide_scorer=: reads no test context

    assert not is_oracle(AGENTS["guided-decoding"], Decoder())


def test_report_lists_a_truncated_run_json_as_unreadable(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    good = _record("Sentiment-Token-v0__ppo__s0", "ppo", 0, 0.5, 0.4)
    (runs / "Sentiment-Token-v0__ppo__s0.json").write_text(json.dumps(good))
    text = json.dumps(_record("Sentiment-Token-v0__ppo__s1", "ppo", 1, 0.5, 0.4))
    (runs / "Sentiment-Token-v0__ppo__s1.json").write_text(text[: len(text) // 2])  # a torn write
    (runs / "notes.json").write_text("[1, 2]")
    found: list[dict[str, str]] = []
    with pytest.warns(UserWarning, match="unreadable run record"):
        records = load_records(tmp_path, unreadable=found)
    assert [r["run_id"] for r in records] == ["Sentiment-Token-v0__ppo__s0"]
    assert {Path(u["file"]).name for u in found} == {"Sentiment-Token-v0__ppo__s1.json", "notes.json"}
    assert unreadable_records(tmp_path) == found
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_record(runs / "Sentiment-Token-v0__ppo__s1.json")
    _, report, _ = write_outputs(records, tmp_path)
    text = report.read_text()
    assert "## Unreadable run files" in text and "Sentiment-Token-v0__ppo__s1.json" in text
    assert "not valid JSON" in text and "1 unreadable run file" not in text  # two of them
    assert "2 unreadable run file(s)" in text
    with open(tmp_path / "results.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["gold_score"] == "0.4" and float(row["gold_minus_score"]) == pytest.approx(-0.1)
    assert row["kl"] == "1.5" and row["ref_ppl"] == "9.0" and row["oracle"] == "False"


def test_the_decoder_is_labelled_by_its_mode() -> None:
    from aligngym.benchmarks.agents import make_agent

    env = gym.make("aligngym/Target-Token-v0")
    spec = AGENTS["guided-decoding"]
    oracle = make_agent("guided-decoding", env, device="cpu")
    proxy = make_agent("guided-decoding", env, device="cpu", guide_scorer="length")
    assert is_oracle(spec, oracle) and not is_oracle(spec, proxy)


VOCAB = [" good", " great", " bad", " the", " and", ".", "<|endoftext|>"]


@pytest.mark.parametrize("algo", ["sb3-ppo", "sb3-dqn"])
def test_kl_of_an_sb3_actor_is_measured_from_its_action_distribution(algo: str) -> None:
    from aligngym.benchmarks.agents import make_agent
    from aligngym.benchmarks.metrics import step_observations

    env = EpisodeInfoRecorder(
        gym.make("aligngym/Sentiment-Token-v0", split="test", max_new_tokens=3, action_vocab=VOCAB)
    )
    kwargs = (
        {"buffer_size": 64, "learning_starts": 0} if algo == "sb3-dqn" else {"n_steps": 16, "batch_size": 16}
    )
    agent = make_agent(algo, env, seed=0, device="cpu", algo_kwargs=kwargs)
    point = evaluate_point(agent, env, n_episodes=3, deterministic=False, samples=0)
    if algo == "sb3-dqn":
        assert point["kl"] is None and "Q-values" in point["kl_note"]
        return
    assert (
        point["kl_note"] is None and point["kl"] > 0.0
    )  # 7 actions, each far likelier than under the reference
    rt = env.unwrapped.runtime
    prompt, mask = env.prompts[0]
    comp = list(env.final_infos[0]["completion_ids"])
    obs = step_observations(rt, prompt, mask, comp)
    action = [int(a) for a in rt.action_ids].index(comp[0])
    one = {k: v[:1] for k, v in obs.items()}
    t, _ = agent.model.policy.obs_to_tensor(one)
    with torch.no_grad():
        expected = agent.model.policy.get_distribution(t).log_prob(torch.as_tensor([action])).item()
    got = policy_logprobs(agent, rt, prompt[None], mask[None], [comp])[0][0]
    assert got == pytest.approx(expected, abs=1e-5)


def test_an_old_record_never_shows_its_training_kl_as_the_measured_kl(tmp_path: Path) -> None:
    from aligngym.benchmarks.report import upgrade_record

    old = _record("Sentiment-Token-v0__ppo__s0", "ppo", 0, 0.5, None)
    old["schema"] = 1
    for point in old["curve"]:
        point.pop("kl_note", None)
    upgrade_record(old)
    assert "kl" not in old["final"] and old["final"]["train_kl"] == 1.5
    assert "older harness" in old["final"]["kl_note"]
    assert "| - | 9.00 |" in results_table([old], HackingRule())  # KL empty, perplexity kept


def test_the_curves_plot_has_a_gold_panel_when_the_env_reports_gold(tmp_path: Path) -> None:
    from PIL import Image

    from aligngym.benchmarks.plots import plot_env

    with_gold = [_record("a", "ppo", 0, 0.5, 0.4)]
    without = [_record("b", "ppo", 0, 0.5, None)]
    widths = []
    for i, recs in enumerate((with_gold, without)):
        out = tmp_path / str(i)
        out.mkdir()
        curves = plot_env(recs, "aligngym/Sentiment-Token-v0", out, HackingRule())[0]
        with Image.open(curves) as img:
            widths.append(img.size[0])
    assert widths[0] > 1.3 * widths[1]  # three panels (score vs steps, vs time, gold vs steps) instead of two
