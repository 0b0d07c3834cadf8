"""EfficientNet-Lite0: strict weight load, shapes, and sane ImageNet predictions on real photos."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from models.image_encoder import IMAGE_DIM, EfficientNetLite0, ImageEncoder, weights_path
from tests.conftest import dataset_path

DOGS = range(151, 269)  # ImageNet-1k dog breeds


@pytest.fixture(scope="module")
def enc() -> ImageEncoder:
    torch.manual_seed(0)
    return ImageEncoder()


def test_strict_load_covers_every_key() -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    res = net.load_state_dict(state, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert set(net.state_dict()) == set(state)
    assert all(net.state_dict()[k].shape == v.shape for k, v in state.items())


def test_shapes_and_preprocess(enc: ImageEncoder) -> None:
    img = Image.new("RGB", (400, 300), (200, 30, 30))
    x = enc.preprocess(img)
    assert x.shape == (3, 224, 224) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    b = torch.stack([x, x])
    assert enc.feature_map(b).shape == (2, IMAGE_DIM, 7, 7)
    e = enc.encode(b)
    assert e.shape == (2, IMAGE_DIM) and torch.isfinite(e).all()
    assert torch.allclose(e, enc.feature_map(b).mean((2, 3)), atol=1e-5)
    assert enc.classify(b).shape == (2, 1000)
    assert isinstance(enc.version, str) and enc.version


def test_encoder_stays_frozen(enc: ImageEncoder) -> None:
    enc.train()
    assert not enc.net.training
    assert not any(p.requires_grad for p in enc.parameters())


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(-1)
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def test_predictions_on_real_photos(enc: ImageEncoder) -> None:
    imgs = dataset_path("mvsa-single") / "images"
    # 1005: a black Great Dane-like dog; 1007: a husky puppy meme; 104: a wrist watch
    x = torch.stack([enc.preprocess(Image.open(imgs / f"{i}.jpg")) for i in ("1005", "1007", "104")])
    logits = enc.classify(x)
    top1 = logits.argmax(-1).tolist()
    assert top1[0] in DOGS and top1[1] in DOGS
    assert {409, 531, 826} & set(logits[2].topk(5).indices.tolist())  # analog clock / digital watch / stopwatch
    noise = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert _entropy(logits).mean() < 0.5 * _entropy(enc.classify(noise)).mean()
    assert logits.softmax(-1).max(-1).values.min() > 0.5
