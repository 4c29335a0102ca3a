"""The malformed-input corpus (tests/data/malformed) through every loader and command,
under both ``on_bad_row`` settings: ``error`` names file, row and column; ``skip``
counts each bad row under its reason and every good row is used, none lost."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qed_lightning.data.bad_rows import DataSourceError
from qed_lightning.data.rendering import IGNORE_INDEX
from qed_lightning.data.sft import SFTDataModule
from qed_lightning.evaluation.benchmarks import load_benchmark_with_report
from qed_lightning.judging import LLMJudge
from qed_lightning.judging.client import JudgeReply
from qed_lightning.judging.grade_file import grade_file
from qed_lightning.rollouts.datamodule import RolloutDataModule

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "malformed"
HINT = r" \(on_bad_row: skip would leave such rows out and count them\)"


class ScriptedClient:
    """A grader that gives every proof 7 and keeps the prompts it was sent."""

    def __init__(self):
        self.prompts = []

    def complete(self, requests):
        self.prompts += [r.prompt for r in requests]
        return [JudgeReply("<score>7</score>") for _ in requests]

    def fingerprint(self):
        return {"model": "scripted"}


class RecordingLogger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((dict(metrics), step))


def fake_trainer(judge=None, tokenizer=None, logger=None):
    module = SimpleNamespace(judge=judge, tokenizer=tokenizer)
    return SimpleNamespace(lightning_module=module, global_rank=0, world_size=1, loggers=[logger] if logger else [])


# ----------------------------------------------------------------------------- SFT

SFT_GOOD = {  # id -> the trained completion (the tiny Qwen3-style template opens <think> in the prompt)
    "good-1": "Count on from 2.\n</think>\n\nProof. 2 + 2 = 4 by counting.<|im_end|>",
    "good-null-reasoning": "\n</think>\n\nProof. Reflexivity.<|im_end|>",
    "good-empty-reasoning": "\n</think>\n\nProof. 3 = 2 + 1.<|im_end|>",
    "good-blank-reasoning": "\n</think>\n\nProof. 1 = 0 + 1.<|im_end|>",
    "good-no-reasoning-key": "\n</think>\n\nProof. 5 = 2 * 2 + 1.<|im_end|>",
    "good-2": "6 = 2 * 3.\n</think>\n\nProof. 6 = 2 * 3.<|im_end|>",
}


def sft_module(source, tokenizer, on_bad_row, logger=None, **kw):
    kw.setdefault("id_column", "id")
    dm = SFTDataModule(source=str(source), on_bad_row=on_bad_row, max_length=512,
                       micro_batch_tokens=512, samples_per_step=2, shuffle=False, seed=0, **kw)
    dm.trainer = fake_trainer(tokenizer=tokenizer, logger=logger)
    return dm


def completions(dm, tokenizer):
    return {e.id: tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in dm.train_examples}


def test_sft_jsonl_skip_counts_every_bad_row_and_trains_every_good_one(tiny_qwen3_tokenizer):
    logger = RecordingLogger()
    dm = sft_module(CORPUS / "sft.jsonl", tiny_qwen3_tokenizer, "skip", logger)
    dm.setup("fit")
    assert completions(dm, tiny_qwen3_tokenizer) == SFT_GOOD  # empty/null/blank/absent reasoning: empty think block
    assert dm.bad_rows.counts == {"missing_column": 1, "empty": 2, "wrong_type": 2, "invalid_json": 2,
                                  "not_an_object": 1, "does_not_render": 1}
    assert dm.stats.rows == 15 and dm.stats.skipped_bad_rows == 9 and dm.stats.empty_reasoning == 4
    first = dm.bad_rows.first
    assert first["missing_column"] == [
        "sft.jsonl:6: column 'proof' is missing (the row has: 'id', 'problem', 'reasoning_content')"]
    assert first["empty"] == ["sft.jsonl:7: column 'problem' is empty (null); expected text",
                              "sft.jsonl:8: column 'problem' is empty (blank); expected text"]
    assert first["wrong_type"] == [
        "sft.jsonl:9: column 'proof' holds a list (['step 1', 'step 2']); expected text",
        "sft.jsonl:10: column 'reasoning_content' holds a list (['a', 'b']); expected text"]
    assert first["does_not_render"][0].startswith("sft.jsonl:13: example 'bad-eos-in-proof': text follows")
    assert [m.split(":")[1] for m in first["invalid_json"]] == ["11", "15"]
    assert logger.logged == [({"data/skipped_rows": 9.0, "data/skipped/does_not_render": 1.0, "data/skipped/empty": 2.0,
                               "data/skipped/invalid_json": 2.0, "data/skipped/missing_column": 1.0,
                               "data/skipped/not_an_object": 1.0, "data/skipped/wrong_type": 2.0}, 0)]


def test_sft_error_names_the_first_bad_row(tiny_qwen3_tokenizer):
    dm = sft_module(CORPUS / "sft.jsonl", tiny_qwen3_tokenizer, "error")
    with pytest.raises(DataSourceError, match=r"^sft.jsonl:6: column 'proof' is missing \(the row has: 'id', "
                                              r"'problem', 'reasoning_content'\)" + HINT + "$"):
        dm.setup("fit")


def test_sft_csv_short_and_long_rows(tiny_qwen3_tokenizer):
    dm = sft_module(CORPUS / "sft.csv", tiny_qwen3_tokenizer, "skip", id_column=None)
    dm.setup("fit")
    assert sorted(completions(dm, tiny_qwen3_tokenizer)) == ["sft.csv:2", "sft.csv:3", "sft.csv:5", "sft.csv:8"]
    assert dm.bad_rows.counts == {"wrong_field_count": 2} and dm.stats.empty_reasoning == 1
    error = sft_module(CORPUS / "sft.csv", tiny_qwen3_tokenizer, "error", id_column=None)
    with pytest.raises(DataSourceError, match=r"^sft.csv:4: the row has 2 fields but the header has 3"):
        error.setup("fit")


def test_sft_wrong_header(tiny_qwen3_tokenizer):
    with pytest.raises(DataSourceError, match=r"^sft_wrong_header.csv:2: column 'problem' is missing "
                                              r"\(the row has: 'question', 'answer'\)"):
        sft_module(CORPUS / "sft_wrong_header.csv", tiny_qwen3_tokenizer, "error").setup("fit")
    with pytest.raises(DataSourceError, match=r"sft_wrong_header.csv: no usable SFT rows: 2 bad rows skipped "
                                              r"\(missing_column: 2\); first of each: sft_wrong_header.csv:2: "):
        sft_module(CORPUS / "sft_wrong_header.csv", tiny_qwen3_tokenizer, "skip").setup("fit")


def test_sft_reasoning_column_no_row_has_is_an_error(tiny_qwen3_tokenizer, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"id": "a", "problem": "P", "proof": "Q"}) + "\n")
    with pytest.raises(DataSourceError, match=r"plain.jsonl: no row has the reasoning column 'reasoning_content' "
                                              r"\(set reasoning_column: null"):
        sft_module(path, tiny_qwen3_tokenizer, "skip").setup("fit")
    dm = sft_module(path, tiny_qwen3_tokenizer, "skip", reasoning_column=None)
    dm.setup("fit")
    assert completions(dm, tiny_qwen3_tokenizer) == {"a": "\n</think>\n\nQ<|im_end|>"}


# ------------------------------------------------------------------------------ RL

def rl_module(source, on_bad_row, judge=None, logger=None, **kw):
    dm = RolloutDataModule(str(source), id_column="id", on_bad_row=on_bad_row, prompts_per_step=2, seed=0, **kw)
    dm.trainer = fake_trainer(judge=judge, logger=logger)
    return dm


def rl_judge():
    return LLMJudge(ScriptedClient(), template="rl_strict")


def test_rl_skip_counts_every_bad_row_and_keeps_every_good_problem():
    logger = RecordingLogger()
    dm = rl_module(CORPUS / "rl.jsonl", "skip", judge=rl_judge(), logger=logger, difficulty_filter=True)
    dm.setup("fit")
    assert [p.id for p in dm.problems] == ["p1", "p2", "p4-schema-rubric", "p13"]
    assert dm.problems[2].rubric == "# Order (7 points)\nDescription: uses 1 = 0 + 1"
    assert dm.filtered == 1  # p11, too easy; the NaN/inf rows are bad rows, not filtered
    assert dm.bad_rows.counts == {"wrong_type": 3, "not_finite": 2, "missing_column": 1, "judge_needs": 2,
                                  "not_an_object": 1, "invalid_json": 1}
    first = dm.bad_rows.first
    why = " (the difficulty filter needs it; or set difficulty_filter: false)"
    assert first["not_finite"] == [f"rl.jsonl:5: column 'reward_std' is nan{why}; expected a finite number",
                                   f"rl.jsonl:6: column 'reward_mean' is inf{why}; expected a finite number"]
    assert first["wrong_type"] == [
        "rl.jsonl:3: column 'rubrics' holds a list (['a', 'b']); expected text or a list of {title, points, desc} "
        "checkpoints",
        f"rl.jsonl:7: column 'reward_mean' is 'high'{why}; expected a number",
        "rl.jsonl:12: column 'problem' holds an int (12); expected text"]
    assert first["judge_needs"] == [
        f"rl.jsonl:{n}: column 'rubrics': problem {pid!r} has no rubric but judge template 'rl_strict' needs it "
        "for {{marking_scheme}}" for n, pid in ((9, "p9-null-rubric"), (10, "p10-blank-rubric"))]
    assert logger.logged[0][0]["data/skipped_rows"] == 10.0


def test_rl_error_names_the_row_and_the_judge_check_runs_at_setup():
    with pytest.raises(DataSourceError, match=r"^rl.jsonl:3: column 'rubrics' holds a list \(\['a', 'b'\]\)"):
        rl_module(CORPUS / "rl.jsonl", "error", difficulty_filter=True).setup("fit")
    judge = rl_judge()
    with pytest.raises(DataSourceError, match=r"^rl_no_rubric.jsonl:3: column 'rubrics': problem 'n3' has no rubric "
                                              r"but judge template 'rl_strict' needs it for \{\{marking_scheme\}\}"
                                              + HINT):
        rl_module(CORPUS / "rl_no_rubric.jsonl", "error", judge=judge).setup("fit")
    assert judge.client.prompts == []  # nothing was graded (or generated) first
    no_judge = rl_module(CORPUS / "rl_no_rubric.jsonl", "error")
    no_judge.setup("fit")  # the rubric is the judge's need, not the loader's
    assert [p.rubric for p in no_judge.problems] == ["7 points: counts correctly.", "7 points: reflexivity.", None]


def test_rl_csv_nan_text_and_short_row():
    dm = rl_module(CORPUS / "rl.csv", "skip", judge=rl_judge(), difficulty_filter=True)
    dm.setup("fit")
    assert [p.id for p in dm.problems] == ["c1", "c4"]
    assert dm.bad_rows.counts == {"not_finite": 1, "wrong_field_count": 1}
    assert dm.bad_rows.first["wrong_field_count"][0].startswith("rl.csv:4: the row has 4 fields but the header has 5")


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_duplicate_problem_ids_are_an_error_in_both_modes(on_bad_row):
    with pytest.raises(DataSourceError, match=r"^rl_duplicate_ids.jsonl:3: duplicate problem id 'd1' "
                                              r"\(first at rl_duplicate_ids.jsonl:1\); ids key records and caches"):
        rl_module(CORPUS / "rl_duplicate_ids.jsonl", on_bad_row).setup("fit")


@pytest.mark.parametrize("name", ["empty.jsonl", "header_only.csv"])
def test_empty_inputs_are_errors_naming_the_file_in_every_loader(name, tiny_qwen3_tokenizer, tmp_path):
    path = CORPUS / name
    match = rf"{name}: the file has no rows$"
    with pytest.raises(DataSourceError, match=match):
        sft_module(path, tiny_qwen3_tokenizer, "skip").setup("fit")
    with pytest.raises(DataSourceError, match=match):
        rl_module(path, "skip").setup("fit")
    with pytest.raises(DataSourceError, match=match):
        load_benchmark_with_report("custom", str(path), on_bad_row="skip")
    judge = rl_judge()
    with pytest.raises(DataSourceError, match=match):
        grade_file(judge, str(path), str(tmp_path / "out.jsonl"), on_bad_row="skip")
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------------- evaluation

def test_benchmark_csv_both_modes():
    with pytest.raises(DataSourceError, match=r"^bench.csv:3 \(id 'B-2'\): problem column 'Problem' is empty \(blank\); "
                                              r"expected text" + HINT):
        load_benchmark_with_report("imo_proofbench", str(CORPUS / "bench.csv"))
    report = load_benchmark_with_report("imo_proofbench", str(CORPUS / "bench.csv"), on_bad_row="skip")
    assert [p.id for p in report.problems] == ["B-1", "B-5"] and report.rows == 5
    assert report.skipped_by_reason == {"empty": 2, "wrong_field_count": 1}
    assert report.skipped[:2] == [
        "bench.csv:3 (id 'B-2'): problem column 'Problem' is empty (blank); expected text",
        "bench.csv:4 (id 'B-3'): rubric column 'Grading guidelines' is empty (blank) "
        "(judge template 'imo_proofbench' needs it); expected text"]
    assert report.skipped[2].startswith("bench.csv:5: the row has 6 fields but the header has 8")


def test_benchmark_jsonl_types_and_the_judge_check():
    columns = {"id": "uid", "problem": "question", "rubric": "scheme"}
    judge = rl_judge()
    report = load_benchmark_with_report("custom", str(CORPUS / "bench.jsonl"), columns=columns, on_bad_row="skip",
                                        judge=judge)
    assert [p.id for p in report.problems] == ["1", "3"]
    assert report.problems[1].rubric == "# Order (7 points)\nDescription: 3 = 2 + 1"
    assert report.skipped_by_reason == {"wrong_type": 2, "invalid_json": 1, "judge_needs": 1}
    assert "bench.jsonl:2 (id '2'): rubric column 'scheme' holds a list (['reflexivity', 'symmetry'])" in report.skipped[0]
    assert report.skipped[1] == "bench.jsonl:4: id column 'uid' holds a float (4.5); expected text or an integer"
    assert report.skipped[3].startswith("bench.jsonl:5: column 'scheme': problem '5' has no rubric")
    # without the judge, the rubric-less problem is a problem: only its grader needs a rubric
    plain = load_benchmark_with_report("custom", str(CORPUS / "bench.jsonl"), columns=columns, on_bad_row="skip")
    assert [p.id for p in plain.problems] == ["1", "3", "5"]
    with pytest.raises(ValueError, match=r"'raise' is now called 'error'"):
        load_benchmark_with_report("custom", str(CORPUS / "bench.jsonl"), columns=columns, on_bad_row="raise")


class ScriptedPolicy:
    def __init__(self):
        self.statements = []

    def generator(self, role, sample_index):
        from qed_lightning.reasoning_cache.trajectory import TurnOutput

        def generate(messages):
            self.statements += messages
            return [TurnOutput("<think>x</think>eee proof", 5) for _ in messages]
        return generate

    def count_tokens(self, text):
        return len(text.split())

    def max_prompt_tokens(self):
        return None


def test_evaluation_checks_the_judge_before_generating_and_reports_skipped_rows(tmp_path):
    from qed_lightning.evaluation.runner import evaluate

    policy, judge = ScriptedPolicy(), rl_judge()
    summary = evaluate(policy, "custom", source=str(CORPUS / "bench.jsonl"), on_bad_row="skip", judge=judge,
                       columns={"id": "uid", "problem": "question", "rubric": "scheme"}, samples=1,
                       output_dir=str(tmp_path), progress=False, model_label="m")
    assert summary["skipped_rows"] == 4
    assert summary["skipped_by_reason"] == {"wrong_type": 2, "invalid_json": 1, "judge_needs": 1}
    assert summary["graded"] == 2 and len(policy.statements) == 2 and len(judge.client.prompts) == 2  # 1 and 3
    report = (tmp_path / "custom" / "m" / "report.md").read_text()
    assert ("Benchmark rows skipped as bad (on_bad_row: skip): 4 (invalid_json: 1, judge_needs: 1, wrong_type: 2)"
            in report)


# --------------------------------------------------------------------------- judge

def test_qed_judge_input_both_modes(tmp_path, capsys):
    out = tmp_path / "verdicts.jsonl"
    judge = LLMJudge(ScriptedClient(), template="rl_strict", answer_mode="whole")
    with pytest.raises(DataSourceError, match=r"^judge.jsonl:3: proof column 'proof' is empty \(null\); expected text"):
        grade_file(judge, str(CORPUS / "judge.jsonl"), str(out))
    assert judge.client.prompts == [] and not out.exists()  # stopped before any call
    metrics = grade_file(judge, str(CORPUS / "judge.jsonl"), str(out), on_bad_row="skip")
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(v["id"], v["score"]) for v in graded] == [("j1", 7), ("j2", 0), ("j7", 7)]  # j2's empty proof: 0, no call
    assert len(judge.client.prompts) == 2
    assert {k: v for k, v in metrics.items() if k.startswith("data/")} == {
        "data/skipped_rows": 5.0, "data/skipped/empty": 1.0, "data/skipped/invalid_json": 1.0,
        "data/skipped/judge_needs": 1.0, "data/skipped/wrong_type": 2.0}
    printed = capsys.readouterr().out
    assert "judge.jsonl: 5 bad rows skipped (empty: 1, invalid_json: 1, judge_needs: 1, wrong_type: 2)" in printed


def test_qed_judge_checks_every_row_before_the_first_call(tmp_path):
    rows = [json.loads(line) for line in (CORPUS / "judge.jsonl").read_text().splitlines()[:7:4]]  # j1, j5
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = LLMJudge(ScriptedClient(), template="rl_strict", answer_mode="whole")
    with pytest.raises(DataSourceError, match=r"^two.jsonl:2: column 'rubric': problem 'j5' has no rubric"):
        grade_file(judge, str(path), str(tmp_path / "out.jsonl"))
    assert judge.client.prompts == []  # j1 was not graded first


def test_qed_judge_command_refuses_an_empty_file(tmp_path, monkeypatch, capsys):
    from qed_lightning.cli import main

    monkeypatch.chdir(tmp_path)  # the judge config's cache directory is relative
    args = ["judge", "--config", str(ROOT / "configs/judge/local_vllm.yaml"), f"--input={CORPUS / 'empty.jsonl'}",
            f"--output={tmp_path / 'out.jsonl'}"]
    try:
        main(args)
    except SystemExit as exit_:  # the command line may print the error and exit
        assert exit_.code not in (0, None)
        message = capsys.readouterr().err
    except DataSourceError as err:
        message = str(err)
    else:
        pytest.fail("qed judge on an empty file succeeded")
    assert "empty.jsonl: the file has no rows" in message
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------- qed fit data setup

def connected(cli):
    """The CLI's datamodule attached to its trainer and module, as ``fit`` does first."""
    cli.trainer.strategy.connect(cli.model)
    cli.datamodule.trainer = cli.trainer
    return cli.datamodule


@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
def test_qed_fit_rl_checks_the_judge_at_data_setup(on_bad_row, tiny_model_dir, tmp_path):
    from qed_lightning.cli import run_cli

    cli = run_cli(["--config", str(ROOT / "configs/demo/rl.yaml"), f"--model.init_args.model={tiny_model_dir}",
                   # an HTTP grader that is never called: the demo's would start an engine
                   "--model.init_args.judge.init_args.client=qed_lightning.judging.openai_client.OpenAICompatibleClient",
                   "--model.init_args.judge.init_args.client.init_args.base_url=http://127.0.0.1:9/v1",
                   "--model.init_args.judge.init_args.client.init_args.model=unused",
                   f"--data.init_args.source={CORPUS / 'rl_no_rubric.jsonl'}", "--data.init_args.rubric_column=rubrics",
                   f"--data.init_args.on_bad_row={on_bad_row}", "--data.init_args.prompts_per_step=2",
                   "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"], run=False)
    dm = connected(cli)
    if on_bad_row == "error":
        with pytest.raises(DataSourceError, match=r"^rl_no_rubric.jsonl:3: column 'rubrics': problem 'n3' has no "
                                                  r"rubric but judge template 'rl_strict' needs it"):
            dm.setup("fit")
        return
    dm.setup("fit")
    assert [p.id for p in dm.problems] == ["n1", "n2"] and dm.bad_rows.counts == {"judge_needs": 1}


def test_qed_fit_sft_data_setup_skips_and_counts(tiny_model_dir, tmp_path):
    from qed_lightning.cli import run_cli

    cli = run_cli(["--config", str(ROOT / "configs/demo/sft.yaml"), f"--model.init_args.model={tiny_model_dir}",
                   f"--data.init_args.source={CORPUS / 'sft.jsonl'}", "--data.init_args.reasoning_column=reasoning_content",
                   "--data.init_args.on_bad_row=skip", "--trainer.logger=false",
                   f"--trainer.default_root_dir={tmp_path}"], run=False)
    dm = connected(cli)
    dm.setup("fit")
    assert sorted(e.id for e in dm.train_examples) == sorted(SFT_GOOD) and dm.stats.skipped_bad_rows == 9


def test_qed_eval_prints_the_skipped_rows_beside_the_report(monkeypatch, capsys):
    from qed_lightning.cli import commands as cli

    summary = {"report": "out/report.md", "skipped_rows": 3, "skipped_by_reason": {"wrong_type": 2, "empty": 1}}
    monkeypatch.setattr(cli, "eval_command", lambda args: summary)
    cli.eval_main([])
    assert capsys.readouterr().out == "skipped rows: 3 (empty: 1, wrong_type: 2)\nreport: out/report.md\n"
