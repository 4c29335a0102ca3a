"""Judge prompt templates: package data or a user's file, validated when loaded.

A template is a Markdown file with a front matter that names its placeholders, its
verdict format and its score scale, and optionally where the prompt asks for the
verdict and a checklist of the grading rules the text must carry::

    ---
    placeholders: [problem, marking_scheme, proof]
    verdict: score_tag
    verdict_at: last        # first | last (default): which verdict tag is read
    scale: [0, 1, 2, 3, 4, 5, 6, 7]
    rules:                  # rule id -> a piece of one line of the text that states it
      partial_credit: "earns conservative partial credit"
    ---
    ...{{problem}}...{{marking_scheme}}...{{proof}}...

Placeholders are ``{{name}}`` (single braces are common in LaTeX). A template whose
body and declaration disagree, that lacks ``problem`` or ``proof``, or whose text no
longer contains a line its checklist names, is refused when the judge is built, not
when the first batch is graded.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping

import yaml

from qed_lightning.contracts import Problem
from qed_lightning.judging.verdicts import VERDICT_POSITIONS, VerdictFormat, get_verdict_format

__all__ = ["BUILTIN_TEMPLATES", "FIELDS", "PromptTemplate", "load_template", "proof_fence_tag"]

# name -> package file under qed_lightning/prompts
BUILTIN_TEMPLATES = {
    "rl_strict": "judge_rl_strict.md",
    "imo_proofbench": "judge_imo_proofbench.md",
    "proofbench": "judge_proofbench.md",
    # AnswerBench's fallback for final answers the checker cannot decide
    "answer_match": "judge_answer_match.md",
}
# placeholder -> Problem attribute it is filled from ("proof" is the graded answer)
FIELDS = {
    "problem": "statement",
    "marking_scheme": "rubric",
    "grading_guidelines": "rubric",
    "reference_solution": "reference_solution",
    "proof": None,
}
REQUIRED = ("problem", "proof")
KEYS, OPTIONAL_KEYS = {"placeholders", "verdict", "scale"}, {"verdict_at", "rules"}
_RULE_ID = re.compile(r"[a-z][a-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def proof_fence_tag(proof: str) -> str:
    """The tag of the proof's fence: 16 hex digits hashed from the proof itself.

    A proof cannot close its own fence: it would have to contain its own hash (and a tag
    that does occur in it is hashed again with a counter). Derived rather than random, so
    the same proof always makes the same prompt, and a seeded grader gives the same
    verdict from run to run.
    """
    attempt = 0
    while True:
        tag = _digest(f"{attempt}:{proof}")
        if tag not in proof:
            return tag
        attempt += 1


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    body: str
    placeholders: tuple[str, ...]
    verdict: VerdictFormat
    scale: tuple[int, ...]
    # rule id -> the piece of the body that states it (the front matter's checklist)
    rules: Mapping[str, str] = field(default_factory=dict, compare=False)

    def check_problem(self, problem: Problem) -> None:
        """Raises if ``problem`` lacks a field this template needs (e.g. a rubric)."""
        for ph in self.placeholders:
            attr = FIELDS[ph]
            if attr is not None and not getattr(problem, attr):
                raise ValueError(
                    f"problem {problem.id!r} has no {attr} but judge template {self.name!r} "
                    f"needs it for {{{{{ph}}}}}"
                )

    def render(self, problem: Problem, proof: str, fence_tag: str) -> str:
        """The prompt for one item, the proof fenced with ``fence_tag``."""
        self.check_problem(problem)
        fenced = f"BEGIN PROOF {fence_tag}\n{proof}\nEND PROOF {fence_tag}"
        values = {ph: (fenced if FIELDS[ph] is None else getattr(problem, FIELDS[ph])) for ph in self.placeholders}
        # One pass over the template: a value containing "{{problem}}" stays literal.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.body)


def _parse(text: str, source: str) -> PromptTemplate:
    m = _FRONT_MATTER.match(text)
    if not m:
        raise ValueError(f"judge template {source}: missing front matter (--- placeholders/verdict/scale ---)")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"judge template {source}: front matter is not YAML: {err}") from None
    unknown = set(meta) - KEYS - OPTIONAL_KEYS
    missing = KEYS - set(meta)
    if unknown or missing:
        raise ValueError(f"judge template {source}: front matter keys missing {sorted(missing)}, unknown {sorted(unknown)}")
    declared = tuple(meta["placeholders"] or ())
    body = text[m.end():]
    used = set(_PLACEHOLDER.findall(body))
    problems = []
    if bad := sorted(set(declared) - set(FIELDS)):
        problems.append(f"unknown placeholders {bad} (valid: {sorted(FIELDS)})")
    if absent := sorted(set(declared) - used):
        problems.append(f"declared but not in the text: {['{{%s}}' % p for p in absent]}")
    if undeclared := sorted(used - set(declared)):
        problems.append(f"used but not declared: {['{{%s}}' % p for p in undeclared]}")
    if need := [p for p in REQUIRED if p not in declared]:
        problems.append(f"a judge template must contain {['{{%s}}' % p for p in need]}")
    scale = tuple(int(s) for s in meta["scale"] or ())
    if not scale or any(not 0 <= s <= 7 for s in scale):
        problems.append(f"scale must be a non-empty list within 0..7, got {meta['scale']!r}")
    at = meta.get("verdict_at", "last")
    if not isinstance(at, str) or at not in VERDICT_POSITIONS:
        problems.append(f"verdict_at must be one of {sorted(VERDICT_POSITIONS)}, got {at!r}")
    rules = meta.get("rules") or {}
    problems += _check_rules(rules, body)
    if problems:
        raise ValueError(f"judge template {source}: " + "; ".join(problems))
    return PromptTemplate(source, body, declared, get_verdict_format(meta["verdict"], at), scale, dict(rules))


def _check_rules(rules: object, body: str) -> list[str]:
    """What is wrong with the checklist: each rule's line must still be in the text,
    so a rewrite cannot drop a grading rule without also dropping it from the list."""
    if not isinstance(rules, dict):
        return [f"rules must map a rule id to a piece of the text that states it, got {type(rules).__name__}"]
    problems = []
    for rule, line in rules.items():
        if not isinstance(rule, str) or not _RULE_ID.fullmatch(rule):
            problems.append(f"rule id {rule!r} must be lower_snake_case")
        elif not isinstance(line, str) or not line.strip() or "\n" in line:
            problems.append(f"rule {rule!r} must name a non-empty piece of one line of the text, got {line!r}")
        elif line not in body:
            problems.append(f"rule {rule!r} is in the checklist but its line is not in the text: {line!r}")
    return problems


def load_template(name_or_path: str) -> PromptTemplate:
    """A built-in template by name (:data:`BUILTIN_TEMPLATES`) or a user's file."""
    if name_or_path in BUILTIN_TEMPLATES:
        text = resources.files("qed_lightning").joinpath("prompts", BUILTIN_TEMPLATES[name_or_path]).read_text("utf-8")
        return _parse(text, name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ValueError(
            f"judge template {name_or_path!r} is neither a built-in ({sorted(BUILTIN_TEMPLATES)}) nor an existing file"
        )
    return _parse(path.read_text("utf-8"), str(path))
