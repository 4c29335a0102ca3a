"""Short-answer checking (IMO-AnswerBench): pull the final boxed answer out of a
completion as the paper's evaluation does (every box on the last line holding one) and
decide whether it equals the reference, by math equivalence (math-verify over sympy),
a plain-sympy fallback, or a string compare for prose.

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
# (so the literal braces of \boxed{} need no escaping). As the paper's run prompt: the
# problem, then a request to reason step by step and box the final answer.
ANSWER_PROMPT = "{problem}\n\nReason step by step, and write your final answer inside \\boxed{}."
FLOAT_ROUNDING = 10
TIMEOUT_S = 5.0  # one answers_match call: parsing both sides and comparing

_BOX_OPEN = re.compile(r"(?:boxed|fbox)\{")  # as released: no backslash needed, no space before "{"
_INNER_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\{")


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index of the brace closing ``text[open_at]`` (a ``{``), or None. Every brace
    counts, escaped or not: ``\\{1\\}`` inside a box is balanced, as in the released
    extraction."""
    depth = 0
    for j in range(open_at, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def _boxes(text: str, opener: re.Pattern = _BOX_OPEN) -> list[tuple[int, int, int]]:
    """``(start, content_start, close)`` of each closed box, left to right, not nested:
    a box inside another is part of the outer one's content. An unclosed box is no
    box, but a closed box inside it still counts."""
    found, pos = [], 0
    while (m := opener.search(text, pos)) is not None:
        close = _closing_brace(text, m.end() - 1)
        if close is None:
            pos = m.start() + 1
            continue
        found.append((m.start(), m.end(), close))
        pos = close + 1
    return found


def _unbox(content: str) -> str:
    """One level of ``\\boxed{x}`` / ``\\fbox{x}`` inside an answer replaced by ``x``."""
    pieces, pos = [], 0
    for start, inner, close in _boxes(content, _INNER_BOX_OPEN):
        pieces += [content[pos:start], content[inner:close]]
        pos = close + 1
    return "".join(pieces) + content[pos:]


def last_boxed(text: str) -> str | None:
    """The final boxed answer of ``text`` as the paper's evaluation extracts it, or None.

    A box is ``boxed{...}`` or ``fbox{...}`` with balanced braces (``\\boxed 5`` and
    ``\\boxed {5}`` are not boxes). One box: its content. Several: the contents of every
    box on the last line that holds a whole box, joined by "," with no space, so
    ``$\\boxed{1}$ and $\\boxed{2}$`` gives ``1,2`` (multi-part answers); a box written
    across lines then counts only when no line holds a whole box. A box left unclosed
    (a cut-off answer) is no box, so an earlier closed one is taken. Boxes nested in the
    answer lose one level of wrapping. The content is not stripped.
    """
    boxes = _boxes(text)
    if not boxes:
        return None
    if len(boxes) > 1:
        for line in reversed(text.split("\n")):
            on_line = _boxes(line)
            if on_line:
                return _unbox(",".join(line[inner:close] for _, inner, close in on_line))
    _, inner, close = boxes[-1]
    return _unbox(text[inner:close])


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


# Units after a number: olympiad answers are unitless, so "5 cm" is the answer 5.
_UNIT = (r"(?:(?:sq\.?|square|cubic)\s+)?(?:(?:milli|centi|kilo)?met(?:er|re)s?|[mck]?m|dm|inch(?:es)?"
         r"|ft|f(?:oo|ee)t|yd|yards?|mi(?:les?)?|units?|deg(?:rees?)?|rad(?:ians?)?|s(?:ec(?:onds?)?)?"
         r"|min(?:utes?)?|h|hrs?|hours?|days?|weeks?|months?|years?|k?g|(?:kilo)?grams?|m?l|lit(?:er|re)s?"
         r"|dollars?|cents?|mph|km/h|m/s)(?:\s*\^\s*\{?[23]\}?|[²³])?")
# in a text command: \text{ cm}, \mathrm{cm}^2 after a number, a brace or a parenthesis
_TEXT_UNIT = re.compile(r"(?<=[\d})])\s*\\(?:text|textrm|textnormal|mathrm|mbox|rm)\s*\{\s*" + _UNIT
                        + r"\s*\}(?:\s*\^\s*\{?[23]\}?)?(?![A-Za-z])", re.IGNORECASE)
# plain words after a space, at the end of the answer or of a list item; no one-letter
# units here ("2 m" may be a product)
_PLAIN_UNIT = re.compile(r"(?<=[\d}])\s+(?:(?:sq\.?|square|cubic)\s+)?(?:(?:milli|centi|kilo)?met(?:er|re)s?|[mck]m"
                         r"|inch(?:es)?|ft|feet|yards?|miles?|units?|degrees?|seconds?|minutes?|hours?|days?|weeks?"
                         r"|months?|years?|kg|grams?|dollars?|cents?)(?:\s*\^\s*\{?[23]\}?|[²³])?"
                         r"(?=\s*(?:$|[,;)\]]|\\\}))", re.IGNORECASE)
# \text{no} -> no: text commands are wrappers, what they hold is the answer
_TEXT = re.compile(r"\\(?:text|textrm|textnormal|textbf|textit|textsf|mbox)\s*\{([^{}]*)\}")


def normalize_answer(text: str) -> str:
    """Trivial LaTeX clean-up shared by both sides: ``$``, ``\\left``/``\\right``,
    ``\\dfrac``, spacing commands, degrees, units after a number (``5 \\text{ cm}``,
    ``12 cm^2``), text commands (``\\text{no}`` is ``no``), a trailing period, an
    ``x =`` prefix."""
    s = text.strip().replace("$", "")
    s = re.sub(r"^\\[\[(]|\\[\])]$", "", s.strip())
    for pattern, repl in _SUBS:
        s = pattern.sub(repl, s)
    s = _PLAIN_UNIT.sub("", _TEXT_UNIT.sub("", s))
    s = _TEXT.sub(r" \1 ", s)
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
    """Check the final boxed answer of ``completion_text`` (:func:`last_boxed`; pass the
    post-``</think>`` text) against ``reference``."""
    extracted = last_boxed(completion_text)
    if extracted is None:
        return AnswerCheck(None, False, "no_box")
    correct = answers_match(extracted, reference)
    reason = {True: "match", False: "mismatch", None: "unparsable"}[correct]
    return AnswerCheck(extracted, correct, reason)
