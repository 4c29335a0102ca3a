"""Judges: grading proofs 0-7 against a rubric.

The HTTP client (``judging.openai_client``), the in-process engine client
(``judging.engine_client``) and the fault server are imported by name, only when a
config or a test uses them.
"""
from qed_lightning.judging.answer import ExtractedAnswer, extract_answer, strip_self_evaluation
from qed_lightning.judging.base import BaseJudge, JudgeUnavailableError, rewards_from_verdicts
from qed_lightning.judging.client import CompletionClient, JudgeReply, JudgeRequest
from qed_lightning.judging.llm_judge import LLMJudge
from qed_lightning.judging.rule_judge import RuleJudge
from qed_lightning.judging.templates import BUILTIN_TEMPLATES, PromptTemplate, load_template
from qed_lightning.judging.verdicts import VERDICT_FORMATS, parse_verdict

__all__ = [
    "BUILTIN_TEMPLATES", "VERDICT_FORMATS", "BaseJudge", "CompletionClient", "ExtractedAnswer", "JudgeReply",
    "JudgeRequest", "JudgeUnavailableError", "LLMJudge", "PromptTemplate", "RuleJudge", "extract_answer",
    "load_template", "parse_verdict", "rewards_from_verdicts", "strip_self_evaluation",
]
