"""Media loading refuses what it should, with a reason, and loads real photos."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from services.scorer.media import MediaError, MediaPolicy, load_image


def _jpeg(tmp_path, name="a.jpg", size=(64, 48)):
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG")
    p = tmp_path / name
    p.write_bytes(buf.getvalue())
    return p


def test_loads_image_under_allowed_root_and_checks_hash(tmp_path):
    p = _jpeg(tmp_path)
    pol = MediaPolicy(allowed_roots=(tmp_path,))
    assert load_image(str(p), pol).size == (64, 48)
    assert load_image(f"file://{p}", pol, hashlib.sha256(p.read_bytes()).hexdigest()).mode == "RGB"
    with pytest.raises(MediaError, match="sha256"):
        load_image(str(p), pol, "0" * 64)


@pytest.mark.parametrize(
    "case,needle",
    [
        ("outside", "outside the allowed roots"),
        ("missing", "not found"),
        ("big", "larger than"),
        ("notimage", "undecodable"),
        ("scheme", "unsupported media scheme"),
        ("private", "private or loopback"),
    ],
)
def test_refusals_say_why(tmp_path, case, needle):
    pol = MediaPolicy(allowed_roots=(tmp_path / "ok",), max_bytes=10_000)
    (tmp_path / "ok").mkdir()
    uri = {
        "outside": str(_jpeg(tmp_path)),
        "missing": str(tmp_path / "ok" / "nope.jpg"),
        "big": str(_jpeg(tmp_path / "ok", "big.jpg", (3000, 3000))),
        "scheme": "ftp://example.org/a.jpg",
        "private": "http://127.0.0.1:9/a.jpg",
    }.get(case)
    if case == "notimage":
        uri = str(tmp_path / "ok" / "x.jpg")
        (tmp_path / "ok" / "x.jpg").write_bytes(b"not an image at all")
    with pytest.raises(MediaError, match=needle):
        load_image(uri, pol)


def test_real_mvsa_photo_loads(data_dir):
    from tests.conftest import dataset_path

    img = next((dataset_path("mvsa-single") / "images").glob("*.jpg"))
    assert min(load_image(str(img), MediaPolicy(allowed_roots=(data_dir,))).size) >= 200
