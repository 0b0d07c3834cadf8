"""What sets an alert window apart from its baseline: distinguishing phrases and the reason mix.

Phrases are class-based TF-IDF (c-TF-IDF, as BERTopic uses it) with two classes, the window's
posts and the baseline windows' posts, each joined into one document: a term scores by how
often it occurs in the window, weighted by how rare it is across both. Words common all the
time ("flight", the brand's own name) thus sink, words the window adds rise. With only two
classes that weight is mild, so a term must also be over-represented: its share of window posts
at least ``min_lift`` times its share of baseline posts. Uni- and bi-grams,
English stop-words, @handles, URLs and numbers out; a term must occur in at least
``min_posts`` window posts, so one chatty post cannot make a theme.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

_NOISE = re.compile(r"https?://\S+|www\.\S+|@\w+|&\w+;|\d+")
#: Words of the medium, not of any complaint (retweet marks, "via", ...).
EXTRA_STOP_WORDS = frozenset({"rt", "via", "amp", "dm", "pls", "please", "just", "im", "u", "thanks", "thank"})
_STOP = sorted(ENGLISH_STOP_WORDS | EXTRA_STOP_WORDS)


def clean(text: str) -> str:
    """Lower-cased text without URLs, @handles, HTML entities and numbers."""
    return _NOISE.sub(" ", text.lower()).replace("'", "").replace("\u2019", "")


def distinguishing_terms(
    window: Sequence[str], baseline: Sequence[str], top: int = 8, min_posts: int = 2, min_lift: float = 1.5
) -> list[dict[str, Any]]:
    """The `top` terms of `window` against `baseline`, best first: term, score, posts in each.

    A term inside a better-ranked one (``bag`` under ``lost bag``) is skipped,
    so the list reads as phrases rather than their words again.
    """
    if not window:
        return []
    vec = CountVectorizer(
        preprocessor=clean, stop_words=_STOP, ngram_range=(1, 2), token_pattern=r"(?u)\b[a-z][a-z]+\b", binary=True
    )
    try:
        docs = vec.fit_transform([*window, *baseline])
    except ValueError:  # nothing but stop-words and handles
        return []
    terms = vec.get_feature_names_out()
    n_win = len(window)
    in_win = docs[:n_win].sum(axis=0).A1
    in_base = docs[n_win:].sum(axis=0).A1 if baseline else [0] * len(terms)
    words_win, words_base = max(1.0, float(in_win.sum())), float(sum(in_base))
    avg_words = (words_win + words_base) / (2 if baseline else 1)
    scored = []
    for j, term in enumerate(terms):
        if in_win[j] < min_posts or (baseline and _lift(in_win[j], n_win, in_base[j], len(baseline)) < min_lift):
            continue
        tf = in_win[j] / words_win
        idf = math.log(1 + avg_words / (in_win[j] + in_base[j]))
        scored.append((tf * idf, term, int(in_win[j]), int(in_base[j])))
    scored.sort(key=lambda t: (-t[0], t[1]))
    picked: list[dict[str, Any]] = []
    for score, term, nw, nb in scored:
        if any(_overlaps(term, p["term"]) for p in picked):
            continue
        picked.append(
            {
                "term": str(term),
                "score": round(float(score), 5),
                "window_posts": nw,
                "baseline_posts": nb,
                "window_share": round(nw / n_win, 4),
                "baseline_share": round(nb / len(baseline), 4) if baseline else None,
            }
        )
        if len(picked) >= top:
            break
    return picked


def _lift(n_win: float, posts_win: int, n_base: float, posts_base: int) -> float:
    """How many times more often the term's posts are in the window than in the baseline (add-one)."""
    return ((n_win + 1) / (posts_win + 1)) / ((n_base + 1) / (posts_base + 1))


def _overlaps(a: str, b: str) -> bool:
    wa, wb = a.split(), b.split()
    return set(wa) <= set(wb) or set(wb) <= set(wa)


def reason_mix(reasons: Iterable[str | None]) -> list[dict[str, Any]]:
    """Share of each reason among the posts that have one, largest first."""
    counts = Counter(r for r in reasons if r)
    total = sum(counts.values())
    return [
        {"reason": r, "posts": n, "share": round(n / total, 4)}
        for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def compare_mix(window: Iterable[str | None], baseline: Iterable[str | None]) -> list[dict[str, Any]]:
    """The window's reason mix beside the baseline's share of each reason (0 where it had none)."""
    base = {m["reason"]: m["share"] for m in reason_mix(baseline)}
    return [{**m, "baseline_share": base.get(m["reason"], 0.0)} for m in reason_mix(window)]
