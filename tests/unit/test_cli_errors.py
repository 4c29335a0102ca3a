"""Which errors ``qed`` prints as one message (the user's to fix) and which keep their
traceback (bugs)."""
from __future__ import annotations

import json

import pytest

from qed_lightning.cli.errors import user_error_message
from qed_lightning.errors import QedUserError
from qed_lightning.judging.answer import extract_answer
from qed_lightning.seeding import run_seed


def caught(fn, *args, **kwargs) -> BaseException:
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return info.value


class BadSetting(QedUserError, ValueError):
    pass


def raise_user_error():
    raise BadSetting("train.jsonl:3: column 'rubric' is empty (set rubric_column)")


def raise_value_error_here():
    raise ValueError("raised by a test, not by the package")


def test_user_errors_become_their_message():
    assert user_error_message(caught(raise_user_error)) == "train.jsonl:3: column 'rubric' is empty (set rubric_column)"
    # the package's own validation: a raise statement in qed_lightning
    assert user_error_message(caught(extract_answer, "x", mode="bogus")) == (
        "answer mode must be one of ('after_think', 'whole'), got 'bogus'")
    assert "no/such.jsonl" in user_error_message(caught(open, "no/such.jsonl"))


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "abc")
    assert user_error_message(caught(run_seed, None)) is None  # int("abc") inside the package: no raise statement
    assert user_error_message(caught(json.loads, "{")) is None  # a library's ValueError
    assert user_error_message(caught(raise_value_error_here)) is None  # not the package's code
    assert user_error_message(caught(lambda: {}["key"])) is None
    assert user_error_message(caught(lambda: 1 / 0)) is None


def test_inside_lightnings_loop_only_declared_user_errors_count():
    loop = {"__name__": "lightning.pytorch.trainer.trainer"}
    exec("def _run_stage(fn):\n    fn()\n", loop)  # a frame named like Lightning's training loop
    assert user_error_message(caught(loop["_run_stage"], lambda: extract_answer("x", mode="bogus"))) is None
    assert user_error_message(caught(loop["_run_stage"], lambda: open("no/such.jsonl"))) is None
    assert user_error_message(caught(loop["_run_stage"], raise_user_error)).startswith("train.jsonl:3:")
