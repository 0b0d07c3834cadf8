"""Batched inference for the stream: frozen encoders once per post, then the configured head.

I/O-free on purpose: the scorer service feeds it posts and per-user state, the benchmark and
`voxpop predict` feed it files. Precision is chosen per deployment: fp32, bf16 autocast (the
text encoder's Linear weights cast once), or dynamic int8 for those Linear layers
(pipelines/quantize.py); fp32 and bf16 may also be compiled (pipelines/compiled.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from models.registry import ScoringHead
from models.text_encoder import TextEncoder, encoder_for_head
from pipelines.compiled import compile_text_encoder
from pipelines.quantize import bf16_linear_weights, cpu_has_native_bf16, quantize_text_model

PRECISIONS = ("fp32", "bf16", "int8")
AUTO_BF16_MIN_SPEEDUP = 1.25  # bf16 must beat fp32 by this much in the start-up probe
log = logging.getLogger("voxpop.scoring")


TokenIds = dict[str, list[int]]  # one post's tokenizer output, unpadded: input_ids, attention_mask, ...


@dataclass
class Encoded:
    x: dict[str, Tensor]  # view -> [B, D] float32 (zeros where absent)
    mask: dict[str, Tensor]  # view -> [B] bool


@dataclass
class Scored:
    probs: Tensor  # [B, C]
    modality_weights: dict[str, Tensor]  # view -> [B]


class InferenceEngine:
    def __init__(
        self,
        head: ScoringHead,
        precision: str = "fp32",
        device: str = "cpu",
        text_encoder: TextEncoder | None = None,
        image_encoder=None,
        bucket_call_tokens: int = 0,
        compile: bool = False,
        model_dir: Path | None = None,
        fixed_shapes: bool = False,
    ) -> None:
        if precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be auto or one of {PRECISIONS}, not {precision!r}")
        self.head = head.to(device).eval()
        self.device = torch.device(device)
        # a head with its own LoRA text adapter gets a merged copy (same speed as the frozen one);
        # a shared frozen `text_encoder` is never modified
        self.frozen_text = text_encoder or TextEncoder(device=device)  # for heads that need the frozen one
        # model_dir: where a large encoder a head names is assembled (Settings.large_encoder_dir)
        self.text = encoder_for_head(head, self.frozen_text, device, model_dir)
        if precision == "auto":
            precision, why = auto_precision(self.text, self.device)
            log.info("precision auto -> %s: %s", precision, why)
        self.precision = precision
        if precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            log.warning(
                "precision bf16 on a CPU without bf16 instructions (avx512_bf16/amx_bf16): torch emulates "
                "it, several times slower than fp32; use fp32 or int8 here (`voxpop bench` shows each)"
            )
        self.views = tuple(head.views)
        self.bucket_call_tokens = bucket_call_tokens
        self.fixed_shapes = fixed_shapes
        if precision == "int8":  # a new encoder: one the caller shares is never modified
            self.text = self.text.with_model(quantize_text_model(self.text.model))
        elif precision == "bf16":
            self.text = self.text.with_model(bf16_linear_weights(self.text.model))
        self.compiled = compile and precision != "int8"
        if compile and not self.compiled:
            log.warning("int8 is not compiled (its quantised Linear is opaque to Inductor); it runs eagerly")
        if self.compiled:
            self.text, seconds = compile_text_encoder(self.text, self._autocast)
            log.info("text encoder compiled (%s, frozen weights) in %.1f s", precision, seconds)
        self.image = None
        if "image" in self.views:
            if image_encoder is None:
                from models.image_encoder import ImageEncoder

                image_encoder = ImageEncoder().to(device).eval()
            self.image = image_encoder

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def token_ids(self, texts: Sequence[str]) -> list[TokenIds]:
        """Tokenise without padding, one dict per post: no torch, so any thread may do it.

        The scorer calls this on its polling thread while the model's thread encodes the previous
        batch; `buckets` then pads whatever posts make up the next batch.
        """
        texts = [t if t and t.strip() else "" for t in texts]
        enc = self.text.token_ids(texts)  # read as the head was trained: preprocessing, truncation
        names = list(enc.keys())
        return [{name: enc[name][i] for name in names} for i in range(len(texts))]

    def buckets(self, ids: Sequence[TokenIds]) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """Pad tokenised posts into encoder calls: [(row indices, padded batch)].

        With `bucket_call_tokens` set, posts are sorted by token length and cut into buckets, each
        padded to its longest row: `plan_buckets` cuts where the padding saved is worth more than
        one more encoder call. Without it, one call in the given order, padded to the longest post.
        With `fixed_shapes`, each call is padded further, to a shape of `call_shape`: a batch may
        then hold more rows than its indices (copies of its first row), and `encode` drops them.
        Padding is a numpy copy (a padded `return_tensors="pt"` tokenizer call per bucket cost 3x more).
        """
        n = len(ids)
        if not n:
            return []
        lengths = [len(t["input_ids"]) for t in ids]
        if self.bucket_call_tokens and n >= 2:
            order = sorted(range(n), key=lengths.__getitem__)
            fixed = self.text.max_length if self.fixed_shapes else None
            cuts = plan_buckets([lengths[i] for i in order], self.bucket_call_tokens, fixed)
        else:
            order, cuts = list(range(n)), [(0, n)]
        pad = self.text.tokenizer.pad_token_id or 0
        out = []
        for start, end in cuts:
            idx = order[start:end]
            rows, width = len(idx), max(lengths[i] for i in idx)
            if self.fixed_shapes:
                rows, width = call_shape(rows, width, self.text.max_length)
            batch = {name: np.full((rows, width), pad if name == "input_ids" else 0, dtype=np.int64) for name in ids[0]}
            for r, j in enumerate(idx):
                for name, row in ids[j].items():
                    batch[name][r, : len(row)] = row
            for name in batch:  # rows beyond the posts repeat the first: a real row, never all padding
                batch[name][len(idx) :] = batch[name][0]
            out.append((torch.tensor(idx), {k: torch.from_numpy(v) for k, v in batch.items()}))
        return out

    def tokenize(self, texts: Sequence[str]) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """Tokenise and pad a batch into encoder calls (`token_ids` then `buckets`)."""
        return self.buckets(self.token_ids(texts))

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        images: Sequence[Image.Image | None] | None = None,
        tokens: list[tuple[Tensor, dict[str, Tensor]]] | None = None,
    ) -> Encoded:
        b = len(texts)
        x: dict[str, Tensor] = {}
        mask: dict[str, Tensor] = {}
        has_text = torch.tensor([bool(t and t.strip()) for t in texts], dtype=torch.bool)
        text = torch.zeros(b, self.text.dim)
        with self._autocast():
            for idx, batch in tokens if tokens is not None else self.tokenize(texts):
                text[idx] = self.text.encode_tokens(batch)[: len(idx)].float().cpu()
        text[~has_text] = 0.0
        x["text"], mask["text"] = text, has_text
        if "image" in self.views:
            assert self.image is not None
            imgs = list(images or [None] * b)
            present = [i for i, im in enumerate(imgs) if im is not None]
            feats = torch.zeros(b, self.head.feature_dims["image"])
            if present:
                pixels = torch.stack([self.image.preprocess(imgs[i]) for i in present]).to(self.device)
                with self._autocast():
                    feats[present] = self.image.encode(pixels).float().cpu()
            x["image"] = feats
            mask["image"] = torch.tensor([im is not None for im in imgs], dtype=torch.bool)
        return Encoded(x=x, mask=mask)

    @torch.inference_mode()
    def predict(self, enc: Encoded, u: dict[str, Tensor], n: dict[str, Tensor]) -> Scored:
        dev = self.device
        out = self.head(
            {k: v.to(dev) for k, v in enc.x.items()},
            {k: v.to(dev) for k, v in u.items()},
            {k: v.to(dev) for k, v in n.items()},
            {k: v.to(dev) for k, v in enc.mask.items()},
        )
        probs = torch.softmax(out.logits.float(), dim=-1).cpu()
        return Scored(probs=probs, modality_weights={k: v.float().cpu() for k, v in out.modality_weights.items()})


def auto_precision(text: TextEncoder, device: torch.device) -> tuple[str, str]:
    """What `auto` runs here, and why: bf16 where it is both faster and native, else fp32.

    bf16 keeps fp32's accuracy on every benchmark set (docs/performance.md), but its speed is the
    CPU's to decide, not its flag list: much faster than fp32 on some AMD EPYCs, slower on Intel
    Xeon VMs that list avx512_bf16 (docs/machines/). So a CPU with bf16 instructions is probed: 32
    tweet-length posts, fp32 and bf16 alternately, three times each, best of each (about a
    second). int8 is never automatic: it changes more labels than bf16.
    """
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "the GPU supports bf16") if ok else ("fp32", "the GPU has no bf16")
    if device.type != "cpu":
        return "fp32", f"no probe for device {device.type}"
    if not cpu_has_native_bf16():
        return "fp32", "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16)"
    batch = text.tokenize(
        [
            f"@airline flight {i} was delayed {i % 7 + 1} hours again and nobody at the gate "
            f"told us anything, but the crew on board were lovely #travel"
            for i in range(32)
        ]
    )
    fast = text.with_model(bf16_linear_weights(text.model))
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for rep in range(4):  # the first round warms both up and is not counted
            for name, enc in (("fp32", text), ("bf16", fast)):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                    t = time.perf_counter()
                    enc.encode_tokens(batch)
                    if rep:
                        best[name] = min(best[name], time.perf_counter() - t)
    speedup = best["fp32"] / best["bf16"]
    verdict = "bf16" if speedup >= AUTO_BF16_MIN_SPEEDUP else "fp32"
    return verdict, (
        f"probe: bf16 {speedup:.2f}x fp32 on 32 posts "
        f"(needs {AUTO_BF16_MIN_SPEEDUP}x; fp32 {1000 * best['fp32']:.0f} ms, "
        f"bf16 {1000 * best['bf16']:.0f} ms)"
    )


def call_rows(rows: np.ndarray | int) -> np.ndarray:
    """Rows an encoder call is padded to under fixed shapes: 1, 2, 4, then a multiple of 8."""
    r = np.asarray(rows)
    return np.where(r <= 2, r, np.where(r <= 4, 4, -(-r // 8) * 8))


def call_shape(rows: int, width: int, max_width: int, quantum: int = 16) -> tuple[int, int]:
    """The fixed shape an encoder call of `rows` x `width` tokens is padded to.

    oneDNN keeps a compiled kernel, with its own re-laid-out weights, for every input shape it
    meets, so a scorer fed ragged batches grows its memory with each new shape
    (docs/reliability.md). Widths round up to a multiple of `quantum` (at most `max_width`), rows
    as `call_rows`: a batch of 64 posts of up to 128 tokens meets at most 11 x 8 shapes, and pays
    at most 7 spare rows and 15 spare columns for it.
    """
    return int(call_rows(rows)), min(-(-width // quantum) * quantum, max(width, max_width))


def plan_buckets(lengths: Sequence[int], call_tokens: int, max_width: int | None = None) -> list[tuple[int, int]]:
    """Cut ascending token lengths into contiguous buckets of least encoder cost: [(start, end)].

    A bucket of n rows padded to width w costs n * w tokens of compute plus one encoder call,
    which costs about `call_tokens` tokens whatever its size (every call streams all the weights
    through the cache). With `max_width` set, each bucket is costed at the fixed shape
    `call_shape` pads it to, so the cuts fall where the fixed shapes waste least.
    Exact by dynamic programming over the cut points, O(n^2) vectorised.
    Against fixed-size buckets it gains most at small and medium batches, where fixed buckets
    waste work on padding (docs/performance.md, "Batching policy").
    """
    n = len(lengths)
    width = np.asarray(lengths, dtype=np.float64)
    if max_width is not None:
        width = np.array([call_shape(1, int(w), max_width)[1] for w in lengths], dtype=np.float64)
    cost = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):  # the last bucket is [start, end), padded to width[end - 1]
        starts = np.arange(end)
        rows = end - starts if max_width is None else call_rows(end - starts)
        c = cost[starts] + call_tokens + rows * width[end - 1]
        cut[end] = int(np.argmin(c))
        cost[end] = c[cut[end]]
    out, end = [], n
    while end > 0:
        out.append((int(cut[end]), end))
        end = int(cut[end])
    return out[::-1]


def sentiment_score(labels: Sequence[str], probs: Tensor) -> Tensor:
    """score = P(positive) - P(negative), in [-1, 1]; 0 for heads without those labels."""
    idx = {lab: i for i, lab in enumerate(labels)}
    pos = probs[:, idx["positive"]] if "positive" in idx else torch.zeros(len(probs))
    neg = probs[:, idx["negative"]] if "negative" in idx else torch.zeros(len(probs))
    return (pos - neg).clamp(-1, 1)
