"""``qed judge bench`` end to end: a scripted OpenAI-compatible server answering planned
grades (so every metric is known exactly), resume, --compare, and one run with the
in-process vLLM grader on the shipped demo set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qed_lightning.cli import main
from qed_lightning.testing.fault_server import DEFAULTS, NO_VERDICT_TEXT
from qed_lightning.testing.fault_server_handle import FaultServer

# (human, planned grader score or None = the server gives no verdict), per problem
PLAN = {"p1": [(7, 7), (3, 4), (0, 0)], "p2": [(5, 2), (5, 5)], "p3": [(6, None)]}
ANSWER = DEFAULTS["reply_template"]
TOKENS = len(ANSWER.replace("{score}", "7")) // 4  # the server's usage: characters // 4
FAIL_TOKENS = len(NO_VERDICT_TEXT) // 4
# the second member's template ends with a score tag after the proof: the server's last SCORE= wins
ALWAYS_ONE = """---
placeholders: [problem, marking_scheme, proof]
verdict: score_tag
scale: [0, 1, 2, 3, 4, 5, 6, 7]
---
Grade {{problem}} by {{marking_scheme}}:
{{proof}}
SCORE=1
"""


@pytest.fixture(scope="module")
def server():
    with FaultServer(idle_timeout_s=120) as srv:
        yield srv


def data(tmp_path: Path) -> str:
    rows = [{"id": f"{p}-{i}", "problem_id": p, "problem": "Prove it.", "rubric": "7 points",
             "proof": f"Proof {i}. " + (f"SCORE={g}" if g is not None else "FAULT=no_verdict"), "human_score": h}
            for p, pairs in PLAN.items() for i, (h, g) in enumerate(pairs)]
    path = tmp_path / "graded.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def llm(srv, template: str = "rl_strict") -> dict:
    client = {"class_path": "qed_lightning.judging.openai_client.OpenAICompatibleClient",
              "init_args": {"base_url": srv.base_url, "model": "grader", "max_attempts": 1, "timeout_s": 10}}
    return {"class_path": "qed_lightning.judging.LLMJudge",
            "init_args": {"template": template, "answer_mode": "whole", "client": client}}


def config(tmp_path: Path, judges: dict) -> str:
    path = tmp_path / f"bench_{'_'.join(judges)}.yaml"
    path.write_text(yaml.safe_dump({"judges": judges}, sort_keys=False))
    return str(path)


def bench(*args: str) -> dict:
    main(["judge", "bench", "--n_boot", "200", "--plots", "false", *args])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_planned_grades_give_exact_metrics_tokens_and_paired_differences(server, tmp_path):
    (tmp_path / "one.md").write_text(ALWAYS_ONE)
    ensemble = {"class_path": "qed_lightning.judging.bench.JudgeEnsemble",
                "init_args": {"combine": "mean", "members": [llm(server), llm(server, str(tmp_path / "one.md"))]}}
    out = tmp_path / "run"
    bench("--config", config(tmp_path, {"single": llm(server), "mean2": ensemble}), "--input", data(tmp_path),
          "--output_dir", str(out))
    summary = json.loads((out / "metrics.json").read_text())
    m = summary["judges"]["single"]["metrics"]
    # the hand computations of test_judge_bench_metrics.py's table, now through the server and the judge stack
    assert m["mae"] == pytest.approx(10 / 6) and m["mean_signed_error"] == pytest.approx(-8 / 6)
    assert m["bucket_accuracy"] == pytest.approx(0.5) and m["failure_rate"] == pytest.approx(1 / 6)
    assert m["order_consistency"] == pytest.approx(0.5) and m["order_consistency_le"] == pytest.approx(1.0)
    assert m["advantage_error"] == pytest.approx((4 / 9 + 1.5) / 2)
    assert m["tokens_mean"] == pytest.approx((5 * TOKENS + FAIL_TOKENS) / 6)
    single = summary["judges"]["single"]
    assert single["failures_by_kind"] == {"no_verdict": 1} and single["graded_this_run"] == 6
    assert single["confusion"][6][8] == 1 and single["confusion"][3][4] == 1
    # the ensemble: mean of (planned, 1) rounded halves up -> 4, 3, 1, 2, 3 and a failure (both members)
    e = summary["judges"]["mean2"]
    assert [r["score"] for r in lines(out / "mean2" / "verdicts.jsonl")] == [4, 3, 1, 2, 3, None]
    assert e["metrics"]["mae"] == pytest.approx(15 / 6)
    assert [r["tokens"] for r in lines(out / "mean2" / "verdicts.jsonl")] == [2 * TOKENS] * 5 + [2 * FAIL_TOKENS]
    assert summary["paired"]["mean2"]["mae"]["diff"] == pytest.approx(15 / 6 - 10 / 6)
    report = (out / "report.md").read_text()
    assert "| MAE (points) | lower | 1.667 [" in report and "mean2" in report


def test_a_rerun_resumes_and_regrades_only_failures_then_compare(server, tmp_path):
    src, out = data(tmp_path), tmp_path / "run"
    cfg = config(tmp_path, {"single": llm(server)})
    bench("--config", cfg, "--input", src, "--output_dir", str(out))
    server.reset_stats()
    bench("--config", cfg, "--input", src, "--output_dir", str(out), "--failures", "drop")
    assert server.stats()["requests"] == 1  # only the proof without a verdict went out again
    verdicts = lines(out / "single" / "verdicts.jsonl")
    assert len(verdicts) == 7 and verdicts[-1]["id"] == "p3-0"
    dropped = json.loads((out / "metrics.json").read_text())["judges"]["single"]
    assert dropped["graded_this_run"] == 1 and dropped["metrics"]["mae"] == pytest.approx(4 / 5)
    other = tmp_path / "other"
    bench("--config", config(tmp_path, {"single": llm(server)}), "--input", src, "--output_dir", str(other))
    bench("--compare", f"[{out},{other / 'metrics.json'}]", "--output_dir", str(tmp_path / "cmp"))
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    # B scores failures 0, A leaves them out: the same verdicts, MAE 10/6 against 4/5
    assert compared["paired"]["B:single - A:single"]["mae"]["diff"] == pytest.approx(10 / 6 - 4 / 5)
    assert any("count failures differently" in n for n in compared["notes"])


def test_bad_rows_and_settings_are_named(server, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"id": "a", "problem_id": "p", "problem": "P.", "proof": "x", "human_score": 9}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        bench("--config", config(tmp_path, {"single": llm(server)}), "--input", str(src),
              "--output_dir", str(tmp_path / "o"))
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        bench("--output_dir", str(tmp_path / "o"))  # neither judges nor --compare


@pytest.mark.slow
def test_the_demo_set_with_the_in_process_grader(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm", reason="vllm is not installed (make install)")
    (tmp_path / "short.md").write_text("---\nplaceholders: [problem, marking_scheme, proof]\nverdict: score_tag\n"
                                       "scale: [0, 1, 2, 3, 4, 5, 6, 7]\n---\nProblem: {{problem}}\nScheme: "
                                       "{{marking_scheme}}\n{{proof}}\nGive <score>N</score>.\n")
    client = {"class_path": "qed_lightning.judging.engine_client.InProcessVLLMClient",
              "init_args": {"model": str(tiny_model_dir), "dtype": "float32", "max_model_len": 2048,
                            "kv_cache_memory_bytes": 64 << 20, "max_tokens": 40, "seed": 0}}
    judge = {"class_path": "qed_lightning.judging.LLMJudge",
             "init_args": {"template": str(tmp_path / "short.md"), "answer_mode": "whole",
                           "constrained_verdict": True, "constrained_preamble_chars": 20, "client": client}}
    out = tmp_path / "demo"
    main(["judge", "bench", "--config", config(tmp_path, {"tiny": judge}), "--input", "demo",
          "--output_dir", str(out), "--n_boot", "100"])
    summary = json.loads((out / "metrics.json").read_text())
    verdicts = lines(out / "tiny" / "verdicts.jsonl")
    assert len(verdicts) == 18 and all(v["error"] is None for v in verdicts), [v["error"] for v in verdicts]
    mae = sum(abs(v["score"] - v["human"]) for v in verdicts) / 18
    assert summary["judges"]["tiny"]["metrics"]["mae"] == pytest.approx(mae)
    assert all(1 <= v["tokens"] <= 40 for v in verdicts)  # the engine's own completion lengths
    assert summary["judges"]["tiny"]["tokens_counted"] == 18
    assert (out / "confusion.png").stat().st_size > 0 and (out / "errors.png").stat().st_size > 0


REPO = Path(__file__).resolve().parents[2]


def test_the_paper_config_builds_the_papers_grader_with_and_without_reference(monkeypatch, tmp_path):
    from jsonargparse import ArgumentParser

    from qed_lightning.judging.base import BaseJudge

    monkeypatch.chdir(REPO)  # the with-reference template is a path relative to the repository root
    parser = ArgumentParser()
    parser.add_argument("--judges", type=dict[str, BaseJudge])
    cfg = yaml.safe_load((REPO / "configs/judge/bench_paper.yaml").read_text())
    assert cfg["layout"] == "gradingbench" and cfg["failures"] == "zero"
    for judge in cfg["judges"].values():  # the config's cache is relative to the working directory: not the repo's
        judge["init_args"]["cache_dir"] = str(tmp_path / "judge_cache")
    judges = parser.instantiate(parser.parse_object({"judges": cfg["judges"]})).judges
    without, with_ref = judges.values()
    for judge in judges.values():
        fp = judge.client.fingerprint()
        assert (fp["model"], fp["reasoning_effort"], fp["api"]) == ("openai/gpt-oss-20b", "medium", "responses")
        assert judge.answer_mode == "whole" and judge.client.api_key_env is None
    assert without.template.name == "proofbench" and "reference_solution" not in without.template.placeholders
    assert with_ref.template.placeholders == ("problem", "marking_scheme", "reference_solution", "proof")
    assert with_ref.template.verdict == without.template.verdict
    # the with-reference prompt is the strict prompt plus the reference: every checklisted rule line is in it
    missing = [rule for rule, line in without.template.rules.items() if line not in with_ref.template.body]
    assert len(without.template.rules) > 20 and missing == []


def test_the_demo_config_parses(capsys):
    with pytest.raises(SystemExit) as done:  # --print_config prints without building the engines, then exits
        main(["judge", "bench", "--config", str(REPO / "configs/judge/bench_demo.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert list(printed["judges"]) == ["demo_strict", "demo_strict_median3"]
    ensemble = printed["judges"]["demo_strict_median3"]
    assert ensemble["class_path"].endswith("JudgeEnsemble") and ensemble["init_args"]["samples"] == 3
    assert printed["input"] == "demo"
