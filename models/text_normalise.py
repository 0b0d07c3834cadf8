"""Text as people write it, made readable for a WordPiece encoder (training and serving alike).

Why: MiniLM's and MPNet's vocabularies hold no emoji, so every emoji became `[UNK]` and 😍, 😡
and 💔 all read the same. Here, before tokenisation:
- HTML entities are unescaped (`&amp;` -> `&`; the airline and SemEval texts carry them);
- URLs become `http` and @mentions `@user` (TweetEval's own convention: the identity of a
  link or a handle says nothing about sentiment, and a bare URL must not look like a word);
- emoji become their CLDR names as words (`😍` -> ` smiling face with heart-eyes `,
  skin tones dropped), via the `emoji` package's Unicode table;
- common ASCII emoticons become words (`:)` -> ` smiling face `, `:(` -> ` frowning face `),
  so they share meaning with their emoji;
- runs of one repeated emoji are kept up to three (intensity survives, length does not explode).

`PREPROCESS` names this exact recipe; a head records the recipe it was trained with, and its
encoder applies the same at serving (`models.text_encoder.encoder_for_head`).
"""

from __future__ import annotations

import html
import re

PREPROCESS = "social-v1"
RAW = "raw"

_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w{1,30}")
_SKIN = re.compile(r"_?(?:light|medium-light|medium|medium-dark|dark)_skin_tone")
_SPACE = re.compile(r"\s+")
_REPEAT = re.compile(r"((?:\s:[a-z0-9_&.'’-]+:\s)\s?)\1{3,}")  # 4+ identical emoji in a row
# longest first, so ":-)" is not read as ":-" then ")"; only standing alone (not inside "http://x:)")
_EMOTICONS = {
    ":-)": "smiling face",
    ":)": "smiling face",
    "(:": "smiling face",
    "=)": "smiling face",
    ":-D": "grinning face",
    ":D": "grinning face",
    "xD": "grinning squinting face",
    "XD": "grinning squinting face",
    ";-)": "winking face",
    ";)": "winking face",
    ":-(": "frowning face",
    ":(": "frowning face",
    "):": "frowning face",
    "=(": "frowning face",
    ":'(": "crying face",
    ":'-(": "crying face",
    ":-P": "face with tongue",
    ":P": "face with tongue",
    ":p": "face with tongue",
    ":-/": "confused face",
    ":/": "confused face",
    ":-|": "neutral face",
    ":|": "neutral face",
    "<3": "red heart",
    "</3": "broken heart",
}
_EMOTICON = re.compile(
    r"(?<!\S)(" + "|".join(re.escape(e) for e in sorted(_EMOTICONS, key=len, reverse=True)) + r")(?=\s|$|[.!?,])"
)


def _emoji_words(text: str) -> str:
    import emoji

    if not emoji.emoji_count(text):
        return text
    text = emoji.demojize(text, delimiters=(" :", ": "))
    text = _SKIN.sub("", text)
    text = _REPEAT.sub(lambda m: m.group(1) * 3, text)
    return re.sub(r":([a-z0-9_&.'’-]+):", lambda m: m.group(1).replace("_", " "), text, flags=re.IGNORECASE)


def unescape_entities(text: str) -> str:
    """HTML character references (`&amp;`, `&lt;`, `&#39;`) as the characters they stand for, one
    level only (`&amp;amp;` -> `&amp;`); a bare `&` or an unterminated `&notice` stays as written.

    Twitter's API escaped `&`, `<` and `>` in tweet texts, so the airline CSV carries them; this is
    the one definition, used at ingest (`services.ingest.records`), by the reason head's training
    data (`pipelines.reasons`) and by `normalise`.
    """
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text) if "&" in text else text


def normalise(text: str) -> str:
    """The `social-v1` form of one post (see the module docstring); idempotent."""
    if not text:
        return ""
    t = unescape_entities(text)
    t = _URL.sub(" http ", t)
    t = _MENTION.sub("@user", t)
    t = _EMOTICON.sub(lambda m: f" {_EMOTICONS[m.group(1)]} ", t)
    t = _emoji_words(t)
    return _SPACE.sub(" ", t).strip()


def preprocess(texts: list[str], recipe: str) -> list[str]:
    """`texts` under `recipe` (`raw` leaves them alone)."""
    if recipe == RAW:
        return texts
    if recipe != PREPROCESS:
        raise ValueError(f"unknown text preprocessing {recipe!r}; known: {RAW!r}, {PREPROCESS!r}")
    return [normalise(t) for t in texts]
