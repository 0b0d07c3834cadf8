"""Which watched brands/topics a post belongs to: any keyword, @handle or #hashtag, optional language.

Matching is word-boundary and case-insensitive; one compiled regex per watch keeps it fast enough
for the ingest hot path (thousands of posts/s against hundreds of watches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WatchSpec:
    id: int
    name: str
    keywords: tuple[str, ...] = ()
    handles: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()


def _alt(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


@dataclass
class WatchMatcher:
    specs: list[WatchSpec]
    _compiled: list[tuple[int, re.Pattern[str] | None, frozenset[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for w in self.specs:
            parts = []
            kws = [k.strip().lower() for k in w.keywords if k.strip()]
            if kws:
                parts.append(rf"(?<![\w@#])(?:{_alt(kws)})(?!\w)")
            handles = [h.strip().lstrip("@").lower() for h in w.handles if h.strip()]
            if handles:
                parts.append(rf"@(?:{_alt(handles)})(?!\w)")
            tags = [t.strip().lstrip("#").lower() for t in w.hashtags if t.strip()]
            if tags:
                parts.append(rf"#(?:{_alt(tags)})(?!\w)")
            rx = re.compile("|".join(parts), re.IGNORECASE) if parts else None
            self._compiled.append((w.id, rx, frozenset(lang.lower() for lang in w.languages)))

    def match(self, text: str, lang: str | None = None, author_handle: str | None = None) -> list[int]:
        """Ids of the watches this post matches (a post by a watched handle matches too)."""
        out = []
        low_handle = (author_handle or "").lstrip("@").lower()
        for (wid, rx, langs), spec in zip(self._compiled, self.specs, strict=True):
            if langs and (lang or "").lower().split("-")[0] not in langs:
                continue
            by_author = bool(low_handle) and low_handle in {h.lstrip("@").lower() for h in spec.handles}
            if by_author or (rx is not None and rx.search(text)):
                out.append(wid)
        return out
