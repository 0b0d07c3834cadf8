"""ERC loaders: COSMIC pickles, MELD CSVs with named speakers, DialogueRNN feature pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from pipelines.datasets import erc
from tests.conftest import dataset_path


def _write_dialoguernn(path: Path, n_train: int = 20, n_test: int = 4) -> None:
    """A tiny file in exactly the IEMOCAP_features_raw.pkl layout (a 9-tuple of dicts/lists)."""
    rng = np.random.default_rng(0)
    vids = [f"Ses0{1 + i % 4}F_impro0{i}" for i in range(n_train)]
    vids += [f"Ses05M_script0{i}" for i in range(n_test)]
    ids, spk, lab, txt, aud, vis, sent = {}, {}, {}, {}, {}, {}, {}
    for v in vids:
        n = int(rng.integers(2, 6))
        ids[v] = [f"{v}_{'FM'[j % 2]}{j:03d}" for j in range(n)]
        spk[v] = ["FM"[j % 2] for j in range(n)]
        lab[v] = [int(x) for x in rng.integers(0, 6, n)]
        txt[v] = [rng.standard_normal(100).astype(np.float32) for _ in range(n)]
        aud[v] = [rng.standard_normal(1582).astype(np.float32) for _ in range(n)]
        vis[v] = [rng.standard_normal(342).astype(np.float32) for _ in range(n)]
        sent[v] = [f"utterance {j} it\x92s" for j in range(n)]
    obj = (ids, spk, lab, txt, aud, vis, sent, vids[:n_train], vids[n_train:])
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_dialoguernn_features_format(tmp_path: Path) -> None:
    p = tmp_path / "IEMOCAP_features_raw.pkl"
    _write_dialoguernn(p)
    ds = erc.load_dialoguernn_features(p, "iemocap", erc.IEMOCAP_LABELS, val_fraction=0.1, seed=0)
    counts = ds.counts()
    assert counts["train"][0] == 18 and counts["val"][0] == 2 and counts["test"][0] == 4
    d = ds.split("test")[0]
    assert d.features["text"].shape == (len(d), 100)
    assert d.features["audio"].shape == (len(d), 1582) and d.features["visual"].shape == (len(d), 342)
    assert d.speakers[0] == "Ses05F" and d.texts[0].endswith("it\u2019s")
    again = erc.load_dialoguernn_features(p, "iemocap", val_fraction=0.1, seed=0)
    assert [x.id for x in again.split("val")] == [x.id for x in ds.split("val")]
    assert [x.split for x in ds.dialogues][-4:] == ["test"] * 4  # time order: train/val, then test


def test_dialoguernn_meld_one_hot_speakers(tmp_path: Path) -> None:
    p = tmp_path / "MELD_features_raw.pkl"
    obj = (
        {0: ["a", "b"], 1: ["c"]},
        {0: [[1, 0, 0], [0, 1, 0]], 1: [[0, 0, 1]]},
        {0: [0, 4], 1: [6]},
        {0: np.zeros((2, 600)), 1: np.zeros((1, 600))},
        {0: np.zeros((2, 300)), 1: np.zeros((1, 300))},
        {0: np.zeros((2, 342)), 1: np.zeros((1, 342))},
        {0: ["hi", "yo"], 1: ["x"]},
        [0],
        [1],
        None,
    )
    with p.open("wb") as f:
        pickle.dump(obj, f)
    ds = erc.load_dialoguernn_features(p, "meld", erc.MELD_EMOTIONS)
    assert ds.split("test")[0].speakers == ["1:p2"] and ds.split("train")[0].speakers == ["0:p0", "0:p1"]


def test_cosmic_iemocap() -> None:
    data = dataset_path("erc").parent
    ds = erc.load_cosmic_iemocap(data)
    c = ds.counts()
    assert (c["train"][0], c["val"][0], c["test"][0]) == (108, 12, 31) and c["test"][1] == 1623
    actors = {s for d in ds.dialogues for s in d.speakers}
    assert len(actors) == 10
    assert {lab for d in ds.dialogues for lab in d.labels} == set(range(6))


def test_cosmic_meld_and_csv_agree() -> None:
    data = dataset_path("erc").parent
    dataset_path("meld")
    cosmic = erc.load_cosmic_meld(data, "emotion")
    csv = erc.load_meld_csv(data, "emotion")
    for ds in (cosmic, csv):
        c = ds.counts()
        assert (c["train"][1], c["val"][1], c["test"][1]) == (9989, 1109, 2610)
    assert not any("\x92" in t for d in cosmic.dialogues for t in d.texts)
    assert [d.labels for d in cosmic.split("test")] == [d.labels for d in csv.split("test")]
    named = {s for d in csv.split("train") for s in d.speakers}
    assert "meld:Joey" in named and len(named) == 260
    sent = erc.load_meld_csv(data, "sentiment")
    assert {lab for d in sent.dialogues for lab in d.labels} == {0, 1, 2}
