"""Text overlap between a training set and benchmarks: pure functions, no model.

Every text is normalised first: Unicode NFKC, lower case, LaTeX spacing and
delimiters removed (``\\,`` ``\\;`` ``\\quad`` ``~`` ``$`` ``\\(`` ``\\left``... and
braces, so ``x^{2}`` and ``x^2`` agree), then cut into tokens: runs of letters and
digits, LaTeX command names, and single symbols. Three detectors run on the tokens:

- ``exact``: the same token sequence;
- ``sentences``: the same multiset of sentences in another order (sentences end at
  ``.``, ``?``, ``!``, ``;`` or a line break);
- ``ngram``: a share of n-grams (n = 13 by default, the usual choice in dataset
  decontamination) in common of at least ``min_ngram_overlap``, measured on the
  shorter text (a benchmark problem pasted into a longer training problem counts).
  A text shorter than n tokens is one n-gram, its whole token sequence.

The benchmark side is indexed once (n-gram -> benchmark rows); each training
text is then one pass over its own n-grams, so the cost grows with the training
set's size, not with the product of the two sizes.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["BenchmarkIndex", "Match", "ngrams", "normalise", "sentence_key", "tokens"]

_LATEX_NOISE = re.compile(
    r"\\(?:left|right|big|Big|bigg|Bigg|displaystyle|textstyle|quad|qquad|[,;:! ])|\\[()\[\]]|[$~{}]")
_TOKEN = re.compile(r"\\[a-z]+|[a-z0-9]+|\n|[^\sa-z0-9]")
_SENTENCE_CUT = re.compile(r"(?:^| )[.?!;\n](?= |$)")


def normalise(text: str) -> str:
    """Lower-cased NFKC text with LaTeX spacing, delimiters and braces removed (line
    breaks stay: they end sentences)."""
    if not text.isascii():  # NFKC leaves ASCII text as it is: skip the call for most problems
        text = unicodedata.normalize("NFKC", text)
    return _LATEX_NOISE.sub(" ", text.lower())


def tokens(text: str) -> list[str]:
    """The normalised tokens of ``text``, with ``\\n`` tokens marking line breaks removed
    (they only end sentences)."""
    return [t for t in _tokens_with_breaks(text) if t != "\n"]


def _tokens_with_breaks(text: str) -> list[str]:
    return _TOKEN.findall(normalise(text))


def sentence_key(text: str) -> tuple[str, ...]:
    """The sorted sentences of ``text`` (each its tokens joined): equal for reorderings."""
    return _sentence_key(_tokens_with_breaks(text))


def _split(text: str) -> tuple[list[str], tuple[str, ...]]:
    """(tokens, sentence key) from one tokenisation."""
    with_breaks = _tokens_with_breaks(text)
    return [t for t in with_breaks if t != "\n"], _sentence_key(with_breaks)


def _sentence_key(with_breaks: list[str]) -> tuple[str, ...]:
    # tokens never hold spaces: join, cut at the sentence ends, all in C
    parts = _SENTENCE_CUT.split(" ".join(with_breaks))
    return tuple(sorted(p for p in (q.strip() for q in parts) if p))


def ngrams(toks: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The distinct n-grams of ``toks`` (the whole sequence when shorter)."""
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return set(zip(*(toks[i:] for i in range(n))))  # built and hashed in C, not per position in Python


@dataclass(frozen=True)
class Match:
    """A training row found in a benchmark: ``method`` is ``exact``, ``sentences`` or
    ``ngram``; ``score`` is the n-gram share in common (1.0 for the other two)."""

    benchmark: str
    benchmark_id: str
    method: str
    score: float


class BenchmarkIndex:
    """The benchmark side, indexed.

    Args:
        n: n-gram length in tokens.
        min_ngram_overlap: Share of the shorter text's n-grams that must be shared for
            an ``ngram`` match (0 < x <= 1).
    """

    def __init__(self, n: int = 13, min_ngram_overlap: float = 0.5) -> None:
        if n < 1 or not 0 < min_ngram_overlap <= 1:
            raise ValueError(f"decontamination needs ngram >= 1 and 0 < min_ngram_overlap <= 1, got {n}, "
                             f"{min_ngram_overlap}")
        self.n, self.min_ngram_overlap = n, min_ngram_overlap
        self.entries: list[tuple[str, str]] = []  # (benchmark, id)
        self.sizes: list[int] = []  # distinct n-grams per entry
        self.exact: dict[tuple[str, ...], list[int]] = {}
        self.sentences: dict[tuple[str, ...], list[int]] = {}
        self.grams: dict[tuple[str, ...], list[int]] = {}

    def add(self, benchmark: str, items: Iterable[tuple[str, str]]) -> int:
        """Indexes ``(id, text)`` pairs of one benchmark; returns how many."""
        count = 0
        for bid, text in items:
            toks, sentences = _split(text)
            if not toks:
                continue
            e = len(self.entries)
            self.entries.append((benchmark, bid))
            grams = ngrams(toks, self.n)
            self.sizes.append(len(grams))
            self.exact.setdefault(tuple(toks), []).append(e)
            self.sentences.setdefault(sentences, []).append(e)
            for g in grams:
                self.grams.setdefault(g, []).append(e)
            count += 1
        return count

    def matches(self, text: str) -> list[Match]:
        """Every benchmark row ``text`` matches, strongest method first per row."""
        toks, sentences = _split(text)
        if not toks:
            return []
        found: dict[int, Match] = {}
        for e in self.exact.get(tuple(toks), ()):
            found[e] = Match(*self.entries[e], "exact", 1.0)
        for e in self.sentences.get(sentences, ()):
            found.setdefault(e, Match(*self.entries[e], "sentences", 1.0))
        grams = ngrams(toks, self.n)
        hits: dict[int, int] = {}
        for g in grams & self.grams.keys():  # most n-grams are in no benchmark: a set intersection in C
            for e in self.grams[g]:
                hits[e] = hits.get(e, 0) + 1
        for e, shared in hits.items():
            if e in found:
                continue
            score = shared / min(len(grams), self.sizes[e])
            if score >= self.min_ngram_overlap:
                found[e] = Match(*self.entries[e], "ngram", round(score, 4))
        return list(found.values())
