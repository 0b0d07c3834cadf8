"""Text as people write it: emoji and emoticons as words, links and handles normalised, and long
posts read head and tail."""

from __future__ import annotations

import pytest

from models.text_normalise import PREPROCESS, normalise, preprocess


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("😍😍😍", "smiling face with heart-eyes smiling face with heart-eyes smiling face with heart-eyes"),
        ("😡", "enraged face"),
        ("💔😭", "broken heart loudly crying face"),
        ("great 👍🏽!", "great thumbs up !"),
        ("@united thanks :) http://t.co/abc", "@user thanks smiling face http"),
        ("delayed again :( &amp; no info", "delayed again frowning face & no info"),
        ("mail me at a@b.com", "mail me at a@b.com"),
        ("x:) stays, as does 10:30", "x:) stays, as does 10:30"),
        ("", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected
    assert normalise(expected) == expected  # idempotent


def test_long_emoji_runs_keep_three() -> None:
    assert normalise("😂" * 12 + " lol") == " ".join(["face with tears of joy"] * 3) + " lol"


def test_raw_leaves_text_alone_and_unknown_recipes_fail() -> None:
    assert preprocess(["😍 @x"], "raw") == ["😍 @x"]
    assert preprocess(["😍 @x"], PREPROCESS) == ["smiling face with heart-eyes @user"]
    with pytest.raises(ValueError, match="unknown text preprocessing"):
        preprocess(["x"], "social-v9")


def test_head_tail_keeps_the_end_of_a_long_post() -> None:
    from models.text_encoder import TextEncoder

    enc = TextEncoder().reading(PREPROCESS, True)
    long = "The crew was lovely and the seats were fine. " * 60 + "Then they lost my bag and laughed at me."
    ids = enc.token_ids([long, "short 😍"])["input_ids"]
    assert len(ids[0]) == enc.max_length and len(ids[1]) < 12
    assert "laughed at me" in enc.tokenizer.decode(ids[0][-12:])
    assert "crew" in enc.tokenizer.decode(ids[0][:12])
    padded = enc.tokenize([long, "short 😍"])
    assert padded["input_ids"].shape == (2, enc.max_length)
    assert padded["attention_mask"][1].sum() == len(ids[1])
    assert enc.version.endswith("~social-v1~headtail") and TextEncoder().version != enc.version
