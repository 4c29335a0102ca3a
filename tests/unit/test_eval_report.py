"""The evaluation report: hand-computed numbers in the paper-shaped table, the paper's avg@3
numbers in columns of their own, the PB-Basic / PB-Advanced split, judges kept apart,
failed gradings shown under both rules, plots written, records round-trip, and no crash
without matplotlib."""
import dataclasses
import json
import statistics
import sys

import pytest

from qed_lightning.evaluation.paper_results import PAPER_JUDGE, PAPER_RESULTS, paper_results
from qed_lightning.evaluation.records import EvalRecord
from qed_lightning.evaluation.report import NO_PLOTS, write_report

PROOF_JUDGE = "gpt-oss-20b / proofbench.txt"
ANSWER_JUDGE = "answer-check"
# (model, benchmark) -> {problem: ((category, level), [score of sample 0, sample 1])}
SCORES = {
    ("alpha", "imo_proofbench"): {"p1": (("Algebra", "IMO-easy"), [7, 7]), "p2": (("Geometry", "IMO-hard"), [0, None])},
    ("beta", "imo_proofbench"): {"p1": (("Algebra", "IMO-easy"), [7, 6]), "p2": (("Geometry", "IMO-hard"), [1, 0])},
    ("alpha", "answerbench"): {"a1": (("Algebra", None), [7, 0]), "a2": (("Combinatorics", None), [7, 7])},
    ("beta", "answerbench"): {"a1": (("Algebra", None), [0, None]), "a2": (("Combinatorics", None), [7, 0])},
}


def make_records():
    out = []
    for (model, bench), problems in SCORES.items():
        judge = ANSWER_JUDGE if bench == "answerbench" else PROOF_JUDGE
        for pid, ((category, level), scores) in problems.items():
            for sample, score in enumerate(scores):
                error = None if score is not None else ("timeout: no reply" if bench != "answerbench" else "parse: x")
                out.append(EvalRecord(bench, model, pid, sample, f"text {pid}", "ans", 100 * (sample + 1) + len(pid),
                                      "stop", score, error, category, level, judge))
    return out


def summarize(records, k, failed_gradings):
    """A small reference summary with the report's keys (the real one lives in metrics);
    failed gradings left out."""
    graded = [r for r in records if r.score is not None]

    def pct(rs):
        return 100 * sum(r.score for r in rs) / (7 * len(rs)) if rs else None

    runs = [pct([r for r in graded if r.sample == i]) for i in range(k)]
    by = lambda attr: {v: pct([r for r in graded if getattr(r, attr) == v])  # noqa: E731
                       for v in dict.fromkeys(getattr(r, attr) for r in graded) if v is not None}
    return {
        "avg": statistics.mean(runs), "spread": statistics.pstdev(runs), "runs": runs,
        "pass_at_1": 50.0, "pass_at_k": 100.0,
        "accuracy": 100 * sum(r.score == 7 for r in graded) / len(graded),
        "tokens_mean": statistics.mean(r.tokens for r in records),
        "calls_mean": statistics.mean(r.calls for r in records),
        "failure_rate": 1 - len(graded) / len(records), "graded": len(graded), "total": len(records),
        "by_category": by("category"), "by_level": by("level"),
    }


KINDS = {"imo_proofbench": "proof", "answerbench": "answer"}


@pytest.fixture
def report(tmp_path):
    paths = write_report(make_records(), tmp_path / "out", k=2, summarize=summarize, benchmark_kinds=KINDS,
                         failed_gradings="leave_out")
    return paths, paths.markdown.read_text()


def test_headline_table_has_hand_computed_rows(report):
    _, md = report
    assert "| Model | Source | Judge | imo_proofbench avg@2 (std) | answerbench accuracy % |" in md
    both = f"imo_proofbench: {PROOF_JUDGE}; answerbench: {ANSWER_JUDGE}"
    # alpha proofs: run0 (7+0)/14 = 50%, run1 7/7 = 100% (p2's failed grading left out) -> 75.0 (25.0)
    # alpha answers: 3 of 4 correct -> 75.0
    assert f"| alpha | this evaluation (k=2) | {both} | 75.0 (25.0); 1 failed | 75.0 |" in md
    # beta proofs: run0 8/14 = 57.14%, run1 6/14 = 42.86% -> 50.0 (7.1); answers: 1 of 3 graded -> 33.3
    assert f"| beta | this evaluation (k=2) | {both} | 50.0 (7.1) | 33.3; 1 failed |" in md
    assert "are left out of every mean (`failed_gradings: leave_out`)" in md


def test_paper_numbers_sit_in_their_own_avg3_columns(report):
    _, md = report
    # this run's k is 2: the paper's avg@3 is never under an avg@2 header
    paper_table = md[md.index("## Published numbers"):md.index("## imo_proofbench")]
    assert "| Model | Source | Judge | imo_proofbench avg@3 (paper) | answerbench accuracy % (paper) |" in paper_table
    assert "avg@2" not in md[md.index("| Model | Source | Judge | imo_proofbench avg@3"):][:200]
    qed = f"| paper: QED-Nano | model card (matches the paper per third parties) | {PAPER_JUDGE} | 40.0 (0.6) | 67.5 |"
    assert qed in paper_table
    assert f"| paper: QED-Nano (Agent) | model card | {PAPER_JUDGE} | 54.0 (3.7) | – |" in paper_table
    assert "| paper: QED-Nano + RSA scaffold | paper, via third-party notes (unverified; its 76.5 presumably" in md
    headline = md[:md.index("## Published numbers")]
    assert "paper:" not in headline and "40.0 (0.6)" not in headline
    assert "proofbench avg" not in md.replace("imo_proofbench avg", "")  # only evaluated benchmarks
    assert "published numbers" in md and "for reference only" in md and "this evaluation's are avg@2" in md


def test_the_headline_says_this_runs_k(tmp_path):
    for k in (1, 3):
        recs = [r for r in make_records() if r.sample < k]
        md = write_report(recs, tmp_path / str(k), k=k, benchmark_kinds=KINDS).markdown.read_text()
        assert f"| Model | Source | Judge | imo_proofbench avg@{k} (std) | answerbench accuracy % |" in md
        assert f"over this evaluation's {k} runs" in md
        assert ("this evaluation's are avg@" in md) == (k != 3)


def test_detail_shows_passes_tokens_breakdowns_and_failures(report):
    _, md = report
    assert "| Model | Judge | avg@2 (std) | runs % | pass@1 | pass@2 | tokens/sample | calls/sample | failed gradings |" in md
    # alpha imo tokens: samples 0/1 -> 102, 202 per problem -> mean 152
    assert f"| alpha | {PROOF_JUDGE} | 75.0 (25.0) | 50.0, 100.0 | 50.0 | 100.0 | 152 | 1.0 | 1 of 4 (25.0%) |" in md
    assert f"| beta | {ANSWER_JUDGE} | 33.3 | 50.0, 0.0 | 50.0 | 100.0 | 152 | 1.0 | 1 of 4 (25.0%) |" in md
    assert "- alpha: timeout x1" in md and "- beta: parse x1" in md
    # beta imo levels: IMO-easy 13/14 = 92.9%, IMO-hard 1/14 = 7.1%; alpha IMO-hard 0/7 = 0.0
    assert "| IMO-easy | 100.0 | 92.9 |" in md and "| IMO-hard | 0.0 | 7.1 |" in md
    assert "| Combinatorics | 100.0 | 50.0 |" in md


def test_plots_are_real_pngs(report):
    paths, md = report
    assert len(paths.plots) == 8  # 2 per (model, benchmark)
    for p in paths.plots:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
        assert f"]({p.name})" in md
    try:
        from PIL import Image
    except ImportError:
        return
    for p in paths.plots:
        with Image.open(p) as im:
            im.verify()


def test_records_jsonl_round_trips(report):
    paths, _ = report
    lines = paths.jsonl.read_text().splitlines()
    assert [EvalRecord.from_dict(json.loads(line)) for line in lines] == make_records()


def test_without_matplotlib_the_report_still_renders(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    paths = write_report(make_records(), tmp_path, k=2, summarize=summarize, benchmark_kinds=KINDS,
                         failed_gradings="leave_out")
    md = paths.markdown.read_text()
    assert paths.plots == [] and NO_PLOTS in md and "| alpha |" in md
    assert not list(tmp_path.glob("*.png"))


def test_kinds_default_by_name_and_unknown_benchmark_has_no_paper_rows(tmp_path):
    recs = [r for r in make_records() if r.benchmark == "answerbench"]
    for r in recs:
        r.benchmark = "my_answers"
    md = write_report(recs, tmp_path, k=2, summarize=summarize).markdown.read_text()
    assert "my_answers accuracy %" in md and "paper:" not in md and "## Published numbers" not in md
    assert "published no numbers" in md


def test_paper_results_are_the_recipe_table():
    assert len({r.model for r in PAPER_RESULTS}) == 12
    assert {r.benchmark for r in PAPER_RESULTS} == {"imo_proofbench", "proofbench", "answerbench"}
    gemini = {r.benchmark: (r.value, r.spread) for r in PAPER_RESULTS if r.model == "Gemini 3 Pro"}
    assert gemini == {"imo_proofbench": (58.7, 2.9), "proofbench": (66.7, 3.1), "answerbench": (83.2, None)}
    assert all(r.judge == PAPER_JUDGE for r in PAPER_RESULTS)
    assert [r.model for r in paper_results(["answerbench"])][:3] == ["Qwen3-4B-Thinking-2507", "QED-Nano-SFT", "QED-Nano"]


def test_the_real_summarize_feeds_the_report(tmp_path):
    metrics = pytest.importorskip("qed_lightning.evaluation.metrics")
    if not hasattr(metrics, "summarize_records"):
        pytest.skip("metrics.summarize_records not written yet")
    md = write_report(make_records(), tmp_path, k=2, benchmark_kinds=KINDS).markdown.read_text()
    assert "| alpha | this evaluation (k=2) |" in md and "| beta | this evaluation (k=2) |" in md


IMOBENCH = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imobench"


@pytest.mark.skipif(not (IMOBENCH / "proofbench_v2.csv").is_file(), reason="IMO-Bench CSVs not present")
def test_imo_proofbench_is_split_into_basic_and_advanced_with_the_real_ids(tmp_path):
    from qed_lightning.evaluation.benchmarks import load_benchmark

    problems = load_benchmark("imo_proofbench", source=str(IMOBENCH / "proofbench_v2.csv"))
    # every PB-Basic problem scores 7 in both runs; PB-Advanced 1 in run 0 and 6 in run 1,
    # except PB-Advanced-001, whose run-1 grading failed
    records = []
    for p in problems:
        basic = p.id.startswith("PB-Basic")
        for run in range(2):
            score = 7 if basic else (1, 6)[run]
            if p.id == "PB-Advanced-001" and run == 1:
                score = None
            records.append(EvalRecord("imo_proofbench", "m", p.id, run, "", "", 1, "stop", score,
                                      None if score is not None else "no_verdict: x", judge="J"))
    ids = [p.id for p in problems]
    assert sum(i.startswith("PB-Basic") for i in ids) == sum(i.startswith("PB-Advanced") for i in ids) == 30
    md = write_report(records, tmp_path, k=2, benchmark_kinds={"imo_proofbench": "proof"}).markdown.read_text()
    assert ("| Model | Source | Judge | imo_proofbench avg@2 (std) | imo_proofbench PB-Basic avg@2 "
            "| imo_proofbench PB-Advanced avg@2 |") in md
    # zero rule: run 0 (30*7 + 30*1)/60 = 4 of 7; run 1 (30*7 + 29*6 + 0)/60 = 6.4 of 7
    # -> avg 5.2/7 = 74.29 %, std |6.4 - 4| / sqrt 2 / 7 = 24.24 %; left out: run 1 = 384/59
    # -> (4 + 384/59)/2/7 = 75.06 %, std (384/59 - 4)/sqrt 2/7 = 25.34 %
    # PB-Basic 100.0; PB-Advanced: runs 1 and 174/30 = 5.8 -> 3.4/7 = 48.57 %; left out 6 -> 50.0
    row = "| m | this evaluation (k=2) | J | 74.3 (24.2); 1 failed; 75.1 (25.3) without failed | 100.0 " \
          "| 48.6; 50.0 without failed |"
    assert row in md
    assert "| Split | m |\n|---|---|\n| PB-Basic | 100.0 |\n| PB-Advanced | 48.6 |" in md


def test_two_judges_of_one_model_get_rows_of_their_own(tmp_path):
    # the same (problem, sample) items graded by judge A (all 7) and judge B (all 0 but one 7)
    recs = [EvalRecord("imo_proofbench", "m", f"p{i}", run, "", "", 1, "stop", 7, judge="A")
            for i in range(2) for run in range(2)]
    recs += [EvalRecord("imo_proofbench", "m", f"p{i}", run, "", "", 1, "stop", 7 if (i, run) == (0, 0) else 0,
                        judge="B") for i in range(2) for run in range(2)]
    md = write_report(recs, tmp_path, k=2, benchmark_kinds={"imo_proofbench": "proof"}).markdown.read_text()
    assert "| m | this evaluation (k=2) | A | 100.0 (0.0) |" in md
    # B: run 0 (7+0)/14 = 50 %, run 1 0 % -> 25.0, std 50/sqrt 2 = 35.4; mixed would be 62.5
    assert "| m | this evaluation (k=2) | B | 25.0 (35.4) |" in md
    assert "62.5" not in md
    assert "| m | A | 100.0 (0.0) |" in md and "| m | B | 25.0 (35.4) |" in md  # the detail table too
    assert "| Level | m (A) | m (B) |" not in md  # no levels here; breakdown columns are per judge:
    md2 = write_report([dataclasses.replace(r, category="Algebra") for r in recs], tmp_path / "c", k=2,
                       benchmark_kinds={"imo_proofbench": "proof"}).markdown.read_text()
    assert "| Category | m (A) | m (B) |\n|---|---|---|\n| Algebra | 100.0 | 25.0 |" in md2
