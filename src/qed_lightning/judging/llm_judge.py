"""A judge backed by a grader model: template in, verdict out.

Each item gets a fence around its proof tagged with the proof's own hash (random-looking
to the grader, as the prompts say, and the same in every run), is looked up in the
verdict cache, and otherwise goes to the ``CompletionClient`` (HTTP server or an
in-process engine). Replies are parsed with the template's verdict format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from qed_lightning.contracts import Problem, Verdict
from qed_lightning.judging.base import BaseJudge
from qed_lightning.judging.cache import VerdictCache, cache_key
from qed_lightning.judging.client import CompletionClient, JudgeRequest
from qed_lightning.judging.templates import FIELDS, load_template, proof_fence_tag
from qed_lightning.judging.verdicts import parse_verdict

__all__ = ["LLMJudge"]


class LLMJudge(BaseJudge):
    """Grades with an LLM against a prompt template.

    Args:
        client: What answers the prompts (``OpenAICompatibleClient``, in-process vLLM).
        template: Built-in template name (``rl_strict``, ``imo_proofbench``,
            ``proofbench``) or a path to a user's template file.
        constrained_verdict: Ask the server to constrain the reply to the verdict
            format (vLLM structured outputs). Off by default: for a reasoning grader it
            would constrain the reasoning too.
        constrained_preamble_chars: Characters of free assessment allowed before a
            constrained verdict (keep the grader's max_tokens above it).
        cache_dir: Directory of the verdict cache; None grades everything afresh.
        answer_mode, strip_self_evaluation, on_failure, max_failed_batches: see
            :class:`~qed_lightning.judging.base.BaseJudge`.
    """

    def __init__(
        self,
        client: CompletionClient,
        template: str = "rl_strict",
        constrained_verdict: bool = False,
        constrained_preamble_chars: int = 1000,
        cache_dir: str | Path | None = None,
        answer_mode: str = "after_think",
        strip_self_evaluation: bool = True,
        on_failure: str = "zero",
        max_failed_batches: int = 3,
    ) -> None:
        super().__init__(answer_mode, strip_self_evaluation, on_failure, max_failed_batches)
        self.client = client
        self.template = load_template(template)
        self.constrained_verdict = constrained_verdict
        self.constrained_preamble_chars = constrained_preamble_chars
        self.cache = VerdictCache(cache_dir) if cache_dir is not None else None

    def check_problems(self, problems: Sequence[Problem]) -> None:
        for problem in problems:
            self.template.check_problem(problem)

    def cache_reference(self) -> dict | None:
        """For checkpoints: where the cache is and how big, never its contents."""
        return None if self.cache is None else self.cache.reference()

    def _key(self, problem: Problem, answer: str) -> str:
        fields = {p: getattr(problem, FIELDS[p]) for p in self.template.placeholders if FIELDS[p]}
        # where the verdict is read is part of the key: the same reply read at its other end is another score
        grader = {**self.client.fingerprint(), "constrained": self.constrained_verdict,
                  "preamble": self.constrained_preamble_chars, "verdict_at": self.template.verdict.at}
        return cache_key(self.template.body, fields, answer, grader)

    def _grade_answers(self, problems: Sequence[Problem], answers: Sequence[str]) -> list[Verdict]:
        cache = self.cache  # compared with None: an empty cache is falsy (__len__)
        keys = [self._key(p, a) for p, a in zip(problems, answers)] if cache is not None else [None] * len(answers)
        verdicts: list[Verdict | None] = [cache.get(k) if cache is not None else None for k in keys]
        todo = [i for i, v in enumerate(verdicts) if v is None]
        tags = {i: proof_fence_tag(answers[i]) for i in todo}
        regex = (self.template.verdict.constrained(self.template.scale, self.constrained_preamble_chars)
                 if self.constrained_verdict else None)
        requests = [JudgeRequest(self.template.render(problems[i], answers[i], tags[i]), regex) for i in todo]
        replies = self.client.complete(requests) if requests else []
        fresh = []
        for i, reply in zip(todo, replies, strict=True):
            verdicts[i] = verdict = self._to_verdict(reply, tags[i])
            fresh.append((keys[i], verdict))
        if cache is not None:
            cache.put_many(fresh)
        return verdicts  # type: ignore[return-value]

    def _to_verdict(self, reply, fence_tag: str) -> Verdict:
        timing = dict(latency_s=reply.latency_s, attempts=reply.attempts)
        if reply.error is not None:
            return Verdict(score=None, raw=reply.text, error=reply.error, **timing)
        parsed = parse_verdict(reply.text, self.template.verdict, self.template.scale, fence_tag)
        return Verdict(score=parsed.score, raw=reply.text, error=parsed.error, **timing)
