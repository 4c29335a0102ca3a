"""The filter classifier's JSON and the keep rule."""
from __future__ import annotations

import pytest

from qed_lightning.data_pipeline.classify import KeepRule, parse_flags

FLAGS = '{"incomplete": false, "difficulty": 6, "gaps": true, "wrong": false, "disagreement": false, ' \
        '"computational": false}'


def test_fenced_block_then_last_object():
    assert parse_flags(f"thinking {{not json}}\n```json\n{FLAGS}\n```")[0]["difficulty"] == 6
    flags, why = parse_flags(f"<think>{{\"difficulty\": 1}}</think> Verdict: {FLAGS} done")
    assert why is None and flags["gaps"] is True and flags["difficulty"] == 6


@pytest.mark.parametrize("reply, why", [
    ("I cannot tell.", "no JSON object"),
    ("```json\n{\"incomplete\": false,}\n```", "not valid JSON"),
    ('{"incomplete": false}', "missing keys"),
    (FLAGS.replace('"gaps": true', '"gaps": "yes"'), "keys ['gaps'] are not true/false"),
    (FLAGS.replace('"difficulty": 6', '"difficulty": 11'), "difficulty 11"),
    (FLAGS.replace('"difficulty": 6', '"difficulty": 6.5'), "difficulty 6.5"),
])
def test_unparseable_replies_say_why(reply, why):
    flags, reason = parse_flags(reply)
    assert flags is None and reason.startswith(why)


def test_keep_rule():
    flags = parse_flags(FLAGS)[0]
    assert KeepRule().reasons(flags) == []
    assert KeepRule(drop_flags=("gaps",)).reasons(flags) == ["gaps"]
    assert KeepRule(min_difficulty=7).reasons(flags) == ["too_easy"]
    assert KeepRule(max_difficulty=5).reasons(flags) == ["too_hard"]
    assert KeepRule().reasons({**flags, "computational": True, "wrong": True}) == ["wrong", "computational"]
    assert KeepRule().reasons(None) == ["unparseable"]
    assert KeepRule(on_unparseable="keep").reasons(None) == []
    with pytest.raises(ValueError, match="unknown flags"):
        KeepRule(drop_flags=("hard",))
