"""Decontamination: planted near-duplicates are found, a clean set is left alone, and
the command writes the filtered set and a per-benchmark report."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from qed_lightning.data_pipeline.decontaminate import Against, decontaminate
from qed_lightning.data_pipeline.overlap import BenchmarkIndex, normalise, sentence_key, tokens

IMOBENCH = Path(__file__).resolve().parents[2].parent / "shared/data/imobench"
PROOFBENCH = IMOBENCH / "proofbench_v2.csv"
needs_imobench = pytest.mark.skipif(not PROOFBENCH.is_file(),
                                    reason=f"IMO-ProofBench CSV not found under {IMOBENCH} (not shipped)")

BENCH = {
    "b1": r"Let $n \geq 2$ be an integer. Prove that $\sum_{k=1}^{n} \frac{1}{k^{2}} < 2$. "
          r"Determine when equality can hold in the weaker bound $\sum_{k=1}^{n} \frac{1}{k(k+1)} < 1$.",
    "b2": "A triangle ABC has circumcircle omega and incenter I. The line AI meets omega again at M. "
          "Prove that MB = MI = MC and that the circle through B, I and C is centred at M.",
    "b3": "Find all functions f from the reals to the reals such that f(x + f(y)) = f(x) + y for all real x and y.",
}
CLEAN = [
    "Prove that there are infinitely many primes of the form 4k + 3.",
    "Let a, b, c be positive reals with abc = 1. Show that a^2 + b^2 + c^2 >= a + b + c.",
    "A convex polygon has 2024 vertices. Prove that some diagonal splits it into two polygons of equal area.",
    "Find all integers n such that n^2 + 2n + 4 is a perfect square, and prove that your list is complete.",
    "In a tournament every two players meet once. Prove that some player beat everyone who beat them within two steps.",
]
PLANTED = {
    # whitespace and line breaks
    "ws": "  Find all   functions f from the reals\n to the reals such that f(x + f(y)) = f(x) + y "
          "for all real x and y.  ",
    # LaTeX spacing, \left/\right, braces and $ delimiters differ
    "latex": r"Let $n\geq 2$ be an integer.\ Prove that $\sum_{k=1}^n\frac1{k^2}<2$. "
             r"Determine when equality can hold in the weaker bound $\sum_{k = 1}^{n}\,\frac{1}{k\left(k+1\right)}<1$.",
    # the same sentences, reordered (short ones: no 13-gram survives the reordering)
    "reordered": "The line AI meets omega again at M. Prove that MB = MI = MC and that the circle through B, "
                 "I and C is centred at M. A triangle ABC has circumcircle omega and incenter I.",
    # the benchmark problem inside a longer training problem, plus casing
    "embedded": "Source: an old olympiad. FIND ALL FUNCTIONS f FROM THE REALS TO THE REALS SUCH THAT "
                "f(x + f(y)) = f(x) + y FOR ALL REAL x AND y. Hint: show f is injective first.",
}


def test_normalisation_removes_spacing_and_latex_noise():
    assert tokens(r"$x^{2} \, + \; 1$") == tokens("x^2+1") == ["x", "^", "2", "+", "1"]
    assert tokens(r"\left( a \right)") == ["(", "a", ")"]
    assert normalise("A  B") == "a  b" and tokens("A  B\n C") == ["a", "b", "c"]
    assert sentence_key("B c. A b.") == sentence_key("a b.\nb c")


def _index(n: int = 13, min_overlap: float = 0.5) -> BenchmarkIndex:
    index = BenchmarkIndex(n, min_overlap)
    assert index.add("bench", BENCH.items()) == 3
    return index


def test_planted_near_duplicates_are_found_with_the_method_that_finds_them():
    index = _index()
    found = {name: index.matches(text) for name, text in PLANTED.items()}
    assert [(m.benchmark_id, m.method) for m in found["ws"]] == [("b3", "exact")]
    assert [(m.benchmark_id, m.method) for m in found["latex"]] == [("b1", "exact")]
    assert [(m.benchmark_id, m.method) for m in found["reordered"]] == [("b2", "sentences")]
    [embedded] = found["embedded"]
    assert (embedded.benchmark_id, embedded.method) == ("b3", "ngram") and embedded.score == 1.0


def test_a_clean_set_matches_nothing():
    index = _index()
    assert [index.matches(t) for t in CLEAN] == [[] for _ in CLEAN]


def test_ngram_share_threshold():
    index = _index(n=5, min_overlap=0.9)
    half = " ".join(BENCH["b2"].split()[:18]) + " and then something else entirely different happens here."
    assert index.matches(half) == []  # under 90% of the shorter text's 5-grams shared
    [match] = _index(n=5, min_overlap=0.3).matches(half)
    assert match.method == "ngram" and 0.3 <= match.score < 0.9


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_command_writes_filtered_set_and_report(tmp_path, monkeypatch):
    bench = _write(tmp_path / "bench.jsonl", [{"id": k, "problem": v} for k, v in BENCH.items()])
    train = [{"id": f"c{i}", "problem": t, "extra": i} for i, t in enumerate(CLEAN)]
    train += [{"id": name, "problem": t, "extra": -1} for name, t in PLANTED.items()]
    summary = decontaminate(_write(tmp_path / "train.jsonl", train), str(tmp_path / "out"),
                            [Against("mine", bench, benchmark="custom")], id_column="id")
    kept = [json.loads(line) for line in (tmp_path / "out/train.jsonl").read_text().splitlines()]
    assert kept == train[:len(CLEAN)]  # every column kept, order kept
    removed = [json.loads(line) for line in (tmp_path / "out/removed.jsonl").read_text().splitlines()]
    assert [r["id"] for r in removed] == list(PLANTED)
    report = json.loads((tmp_path / "out/report.json").read_text())["benchmarks"]["mine"]
    assert report["indexed"] == 3 and report["matched_train_rows"] == 4 and report["matched_benchmark_rows"] == 3
    assert report["by_method"] == {"exact": 2, "sentences": 1, "ngram": 1}
    assert summary["kept"] == 5 and summary["dropped"] == {"contaminated": 4}
    assert json.loads((tmp_path / "out/summary.json").read_text())["kept"] == 5
    # two forked workers, chunks of 3 rows: the same outputs
    from qed_lightning.data_pipeline import decontaminate as module
    monkeypatch.setattr(module._all_matches, "__defaults__", (3,))
    decontaminate(str(tmp_path / "train.jsonl"), str(tmp_path / "out2"), [Against("mine", bench, benchmark="custom")],
                  id_column="id", workers=2)
    for name in ("train.jsonl", "removed.jsonl", "report.json"):
        assert (tmp_path / "out2" / name).read_text() == (tmp_path / "out" / name).read_text()


@needs_imobench
def test_real_imo_proofbench_rows_planted_in_a_training_set_are_removed(tmp_path):
    with PROOFBENCH.open(encoding="utf-8") as f:
        bench = list(csv.DictReader(f))
    picked = [bench[3], bench[40]]
    planted = [{"problem": "  " + picked[0]["Problem"].replace(" ", "  ") + "\n"},
               {"problem": picked[1]["Problem"].replace("$", "").upper()}]
    train = [{"problem": t} for t in CLEAN] + planted
    summary = decontaminate(_write(tmp_path / "t.jsonl", train), str(tmp_path / "out"),
                            [Against("imo_proofbench", str(PROOFBENCH))])
    report = json.loads((tmp_path / "out/report.json").read_text())["benchmarks"]["imo_proofbench"]
    assert report["indexed"] == len(bench)
    assert sorted(p["benchmark_id"] for p in report["pairs"]) == sorted(r["Problem ID"] for r in picked)
    assert summary["kept"] == len(CLEAN)


def test_output_folder_gets_a_dataset_card(tmp_path, monkeypatch):
    """The card's metadata parses, names the data files as configs, and its counts and
    columns are the run's; a credential in the environment never reaches it."""
    import yaml

    canary = "hf_CANARY_dataset_card_secret_123"
    monkeypatch.setenv("HF_TOKEN", canary)
    bench = _write(tmp_path / "bench.jsonl", [{"id": k, "problem": v} for k, v in BENCH.items()])
    train = [{"id": f"c{i}", "problem": t, "extra": i} for i, t in enumerate(CLEAN)]
    train += [{"id": name, "problem": t, "extra": -1} for name, t in PLANTED.items()]
    decontaminate(_write(tmp_path / "train.jsonl", train), str(tmp_path / "out"),
                  [Against("mine", bench, benchmark="custom")], id_column="id")
    card = (tmp_path / "out" / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["configs"] == [{"config_name": "train", "data_files": "train.jsonl"}]
    assert meta["size_categories"] == ["n<1K"] and "qed-data-decontaminate" in meta["tags"]
    assert "| `train.jsonl` | 5 | `id`, `problem`, `extra` |" in body
    assert "| kept | 5 |" in body and "contaminated 4" in body
    # whatever a step's settings hold, a credential never reaches the card
    from qed_lightning.hub.dataset_card import write_dataset_card

    path = write_dataset_card(tmp_path / "out", {"command": "distill", "kept": 1, "settings": {
        "api_key": "sk-literal-key-0042", "base_url": f"http://127.0.0.1:8000/{canary}/v1"}})
    written = path.read_text()
    assert canary not in written and "sk-literal-key-0042" not in written and "<redacted>" in written
