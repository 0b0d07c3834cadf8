"""Word error rate, with the text normalisation it is computed after (stated in docs/asr.md).

Normalisation: Unicode NFKC, lowercase, every character that is not a letter or a digit becomes
a space (so punctuation, quotes and hyphens split or vanish), whitespace collapsed. Umlauts and
"ß" are kept as they are; numbers are not spelled out.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


def normalise(text: str) -> list[str]:
    """Text -> the word list WER compares."""
    t = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch if ch.isalnum() else " " for ch in t).split()


@dataclass
class Alignment:
    """Edit counts of one hypothesis against one reference (word level, Levenshtein)."""

    ref_words: int
    hyp_words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        return self.ref_words - self.substitutions - self.deletions

    def __add__(self, o: Alignment) -> Alignment:
        return Alignment(
            self.ref_words + o.ref_words,
            self.hyp_words + o.hyp_words,
            self.substitutions + o.substitutions,
            self.deletions + o.deletions,
            self.insertions + o.insertions,
        )


def align(ref: list[str], hyp: list[str]) -> Alignment:
    """Minimum-edit alignment; ties prefer substitutions (the usual convention)."""
    n, m = len(ref), len(hyp)
    # cost, S, D, I per cell; one row at a time
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            c, s, d, ins = prev[j - 1]
            if ref[i - 1] == hyp[j - 1]:
                best = (c, s, d, ins)
            else:
                best = (c + 1, s + 1, d, ins)
            c, s, d, ins = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, ins)
            c, s, d, ins = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, ins + 1)
            cur.append(best)
        prev = cur
    _, s, d, ins = prev[m]
    return Alignment(n, m, s, d, ins)


def wer(pairs: list[tuple[str, str]]) -> Alignment:
    """Corpus alignment of (reference, hypothesis) texts; `.errors / .ref_words` is the WER."""
    total = Alignment(0, 0, 0, 0, 0)
    for ref, hyp in pairs:
        total = total + align(normalise(ref), normalise(hyp))
    return total
