"""Feature cache: hits, misses, and the encoder version being part of the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipelines.feature_cache import FeatureStore, cached_features, cached_image_features, cached_text_features


class FakeTextEncoder:
    """Deterministic 'encoder' that counts how many texts it was asked to encode."""

    def __init__(self, version: str = "fake@1") -> None:
        self.version = version
        self.calls = 0

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls += len(texts)
        return torch.tensor([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=torch.float32)


def test_miss_then_hit(tmp_path: Path) -> None:
    enc = FakeTextEncoder()
    texts = ["good flight", "lost my bag", "good flight", "ok"]
    a = cached_text_features(enc, texts, tmp_path)
    assert enc.calls == 3  # the duplicate is encoded once
    assert torch.equal(a[0], a[2])
    b = cached_text_features(enc, list(reversed(texts)), tmp_path)
    assert enc.calls == 3  # everything came from the cache
    assert torch.equal(b, a.flip(0))
    c = cached_text_features(enc, ["ok", "brand new"], tmp_path)
    assert enc.calls == 4 and torch.equal(c[0], a[3])


def test_version_is_part_of_the_key(tmp_path: Path) -> None:
    v1, v2 = FakeTextEncoder("fake@1"), FakeTextEncoder("fake@2")
    cached_text_features(v1, ["same text"], tmp_path)
    cached_text_features(v2, ["same text"], tmp_path)
    assert v1.calls == 1 and v2.calls == 1
    assert len(FeatureStore(tmp_path, "fake@1")) == 1 and len(FeatureStore(tmp_path, "fake@2")) == 1


def test_persisted_across_processes_and_batches(tmp_path: Path) -> None:
    seen: list[list[int]] = []

    def compute(idx: list[int]) -> np.ndarray:
        seen.append(idx)
        return np.array([[float(i)] for i in idx], dtype=np.float32)

    contents = [str(i).encode() for i in range(10)]
    out = cached_features("v", contents, compute, tmp_path, batch_size=4)
    assert [len(s) for s in seen] == [4, 4, 2]
    assert out[:, 0].tolist() == [float(i) for i in range(10)]
    assert len(list((tmp_path / "v").glob("shard-*.npz"))) == 3  # one shard per finished batch
    store = FeatureStore(tmp_path, "v")  # a fresh reader sees everything
    assert len(store) == 10


def test_image_features_keyed_by_file_bytes(tmp_path: Path) -> None:
    from PIL import Image

    class FakeImageEncoder:
        version = "img@1"
        calls = 0

        @staticmethod
        def preprocess(img) -> torch.Tensor:
            return torch.tensor(np.asarray(img.convert("RGB").resize((4, 4)), dtype=np.float32)).permute(2, 0, 1)

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += len(x)
            return x.mean((2, 3))

    paths = []
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (255, 0, 0)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), color).save(p)
        paths.append(p)
    enc = FakeImageEncoder()
    f = cached_image_features(enc, paths, tmp_path / "cache")
    assert enc.calls == 2  # identical bytes under two names: encoded once
    assert f.shape == (3, 3) and torch.equal(f[0], f[2])
    cached_image_features(enc, paths, tmp_path / "cache")
    assert enc.calls == 2
