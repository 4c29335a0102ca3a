"""Short-answer checking (IMO-AnswerBench): pull the last ``\\boxed{}`` out of a
completion and decide whether it equals the reference, by math equivalence
(math-verify over sympy), a plain-sympy fallback, or a string compare for prose.

Decimals: a decimal matches an exact value when both agree to ``FLOAT_ROUNDING``
(10) places, so ``0.5`` and ``1.75`` match ``1/2`` and ``7/4``, but rounded
approximations (``0.333333`` for ``1/3``, ``1.414`` for ``\\sqrt 2``) do not:
olympiad answers are exact, and math-verify's default (6 places) would accept them.
"""
from __future__ import annotations

import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = ["ANSWER_PROMPT", "AnswerCheck", "answers_match", "check_answer", "last_boxed",
           "normalize_answer", "parse_answer"]

# Filled by ``.replace("{problem}", statement)``, like rollouts.prompts.PROOF_PROMPT
# (so the literal braces of \boxed{} need no escaping).
ANSWER_PROMPT = (
    "Solve the following problem. Reason step by step, then give the final answer, "
    "and nothing else, inside \\boxed{} at the end of your response.\n\n{problem}"
)
FLOAT_ROUNDING = 10
TIMEOUT_S = 5.0  # one answers_match call: parsing both sides and comparing

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5``, or None.

    Braces nest; escaped ``\\{ \\}`` do not count, so ``\\boxed{\\{1,2\\}}`` works.
    An unclosed last box (a cut-off answer) is None rather than an earlier box: an
    earlier box is usually an intermediate result, not the final answer.
    """
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    i = matches[-1].end()
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":  # \boxed 5: TeX takes one token
        token = re.match(r"[^\s${}]+", text[i:])
        return token.group(0) if token else None
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2  # \{ and \} are content, not structure
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return text[i + 1:j].strip()
        j += 1
    return None


_SUBS = [  # (pattern, replacement), in order
    (r"\\(?:left|right)\.", ""),  # null delimiters
    (r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])", ""),
    (r"\\[dt]frac(?![A-Za-z])", r"\\frac"),
    (r"\\(?:displaystyle|textstyle)(?![A-Za-z])", ""),
    (r"\\varnothing(?![A-Za-z])", r"\\emptyset"),
    (r"\^\s*\{?\\circ\}?|°", ""),  # degrees: geometry answers are often angles
    (r"(?<=\d)\\,(?=\d{3}(?!\d))", ""),  # 1\,000 is a thousands separator
    (r"\\[,;:! ]|\\q?quad(?![A-Za-z])|~", " "),
    (r"(?<![\\A-Za-z])pi(?![A-Za-z])", r"\\pi"),  # plain-text pi, not p*i
    (r"\*\*", "^"),
]
_SUBS = [(re.compile(p), r) for p, r in _SUBS]
# "x = 3" -> "3": one "=" and no inequality after it ("n = 1, n \\ge 3" stays whole)
_PREFIX = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?![^=]*(?:[=<>]|\\[gl]eq?|\\neq?))")


def normalize_answer(text: str) -> str:
    """Trivial LaTeX clean-up shared by both sides: ``$``, ``\\left``/``\\right``,
    ``\\dfrac``, spacing commands, degrees, a trailing period, an ``x =`` prefix."""
    s = text.strip().replace("$", "")
    s = re.sub(r"^\\[\[(]|\\[\])]$", "", s.strip())
    for pattern, repl in _SUBS:
        s = pattern.sub(repl, s)
    s = " ".join(s.split()).rstrip(".").strip()
    return _PREFIX.sub("", s)


_STOP_WORDS = {"all", "and", "any", "are", "but", "for", "if", "is", "no", "not", "odd",
               "of", "one", "or", "the", "two", "yes"}
_MATH_WORDS = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "sigma", "omega",
               "epsilon", "varphi", "floor", "ceil", "arcsin", "arccos", "arctan", "sinh",
               "cosh", "tanh", "infty", "sqrt", "frac", "cdot", "binom", "ldots", "cdots"}


def _is_prose(s: str) -> bool:
    """True when ``s`` holds English words ("odd $n$", "All powers of 2"), which a
    parser reads as products of letters, or an ellipsis ("1, 2, \\ldots, 1235"), which
    it drops: either way "equal after parsing" would not mean equal answers."""
    if re.search(r"\\[lc]?dots(?![A-Za-z])|\.\.\.", s):
        return True
    s = re.sub(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname)\s*\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\[A-Za-z]+", " ", s)  # commands (\frac, \lambda) are math, not words
    for word in re.findall(r"[A-Za-z]+", s):
        w = word.lower()
        if w in _STOP_WORDS or (len(w) >= 4 and re.search("[aeiouy]", w) and w not in _MATH_WORDS):
            return True
    return False


_PLAIN = re.compile(r"[0-9A-Za-z+\-*/^().,!\s]*")
_PLAIN_NAMES = {"sqrt", "pi", "exp", "log", "ln", "sin", "cos", "tan", "factorial", "binomial", "oo"}


@lru_cache(maxsize=4096)  # a reference is re-parsed for each of its k samples
def parse_answer(s: str):
    """A normalised answer as a sympy object, or None when it does not parse.

    latex2sympy (math-verify's parser) with case-sensitive symbols, since math-verify's
    own ``parse`` lowercases them and ``R - 2r`` would equal ``-r``; no unit stripping,
    since it eats variables (``2 - 2m`` became ``2 - 2``). Plain sympy is the fallback
    for code-like answers (``sqrt(8)/2``).
    """
    from latex2sympy2_extended import latex2sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig
    from latex2sympy2_extended.math_normalization import NormalizationConfig
    from math_verify.grader import should_treat_as_complex

    config = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True,
                                 nits=True, boxed="none", equations=False)
    try:
        return latex2sympy(s, is_real=not should_treat_as_complex(s), normalization_config=config,
                           conversion_config=ConversionConfig(lowercase_symbols=False))
    except Exception:
        pass
    # parse_expr runs eval(): only plain arithmetic, single letters and known names.
    names = re.findall(r"[A-Za-z]+", s)
    if not _PLAIN.fullmatch(s) or any(len(n) > 1 and n not in _PLAIN_NAMES for n in names):
        return None
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application,
                                            parse_expr, standard_transformations)
    try:
        transforms = standard_transformations + (implicit_multiplication_application, convert_xor)
        return parse_expr(s, transformations=transforms, evaluate=False)
    except Exception:
        return None


class _CheckTimeout(BaseException):
    """A BaseException, so the libraries' ``except Exception`` cannot swallow it."""


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM guard (sympy can hang on things like ``10^{10^{10}}!``) that re-arms any
    outer timer (pytest-timeout's), unlike math-verify's, which cancels it. Signals work
    only on the main thread: elsewhere this is a no-op, so run checks there or in a
    process pool."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise _CheckTimeout(f"answer check took over {seconds}s")

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, _raise)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # even if the alarm fires right here, put the outer handler back
            signal.signal(signal.SIGALRM, old_handler)
            if outer > 0:
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def answers_match(predicted: str, reference: str) -> bool | None:
    """Whether ``predicted`` equals ``reference`` as a math answer.

    Numbers, fractions, radicals, pi, sets (order-free), tuples (ordered), intervals
    (open/closed ends matter), equations and expressions compare by value; prose
    compares case-insensitively as text. None when the machine cannot tell (the caller
    may ask the LLM judge): neither side parses, the reference does not, either side is
    prose that differs from the other, or the comparison timed out. False when the
    reference parses and the prediction is empty, fails to parse, or differs.
    """
    pred, ref = normalize_answer(predicted), normalize_answer(reference)
    if not ref:
        return None
    if not pred:
        return False
    if pred.replace(" ", "") == ref.replace(" ", ""):
        return True  # fast path: most self-checks and exact copies skip sympy
    if _is_prose(pred) or _is_prose(ref):
        return True if pred.casefold() == ref.casefold() else None
    return _math_match(pred, ref)


def _math_match(pred: str, ref: str) -> bool | None:
    """Parse both normalised sides and compare by value under the time limit."""
    from math_verify import grader, verify

    grader.TIMEOUT_WARNING_SHOWN = True  # we pass timeout=None because _time_limit guards
    try:
        with _time_limit(TIMEOUT_S):
            ref_expr, pred_expr = parse_answer(ref), parse_answer(pred)
            if ref_expr is None:
                return None
            if pred_expr is None:
                return False
            # math-verify is asymmetric (gold first): it unwraps "x = 3" on either side
            # and solves the gold's relations, so keep the reference as gold.
            return bool(verify(ref_expr, pred_expr, float_rounding=FLOAT_ROUNDING, timeout_seconds=None,
                               allow_set_relation_comp=True))  # x <= 0 matches (-oo, 0]
    except _CheckTimeout:
        return None


@dataclass(frozen=True)
class AnswerCheck:
    """``correct`` is None only for ``unparsable``; ``no_box`` is a counted miss."""

    extracted: str | None
    correct: bool | None
    reason: Literal["match", "mismatch", "no_box", "unparsable"]


def check_answer(completion_text: str, reference: str) -> AnswerCheck:
    """Check the last boxed answer of ``completion_text`` (pass the post-``</think>``
    text) against ``reference``."""
    extracted = last_boxed(completion_text)
    if extracted is None:
        return AnswerCheck(None, False, "no_box")
    correct = answers_match(extracted, reference)
    reason = {True: "match", False: "mismatch", None: "unparsable"}[correct]
    return AnswerCheck(extracted, correct, reason)
