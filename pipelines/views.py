"""Which view drove a post's sentiment: words, voice, frames or image (one rule for scorer and API).

The view with the largest fusion weight, averaged over every head that scored the post, each
head counting once: the production head (whose label the post carries) weighs the words (post text
+ transcript) against an image; the tri-modal heads of an audio or video post weigh the words
against the voice and the frames. So voice or frames lead only where the tri-modal heads lean on
them more than the production head leans on the words.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

VIEW_OF = {"text": "words", "audio": "voice", "video": "frames", "image": "image"}


def dominant_view(primary: Mapping[str, float] | None, trimodal: Sequence[Mapping[str, float]] = ()) -> str | None:
    rows = [w for w in (primary, *trimodal) if w]
    sums: dict[str, float] = defaultdict(float)
    for weights in rows:
        for v, w in weights.items():
            sums[VIEW_OF.get(v, v)] += float(w) / len(rows)
    return max(sums, key=sums.__getitem__) if sums else None
