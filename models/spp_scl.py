"""SPP-SCL: Semi-Push-Pull Supervised Contrastive Learning for image-text sentiment (Wu & Li).

The method, in the paper's order ("SPP-SCL: Semi-Push-Pull Supervised Contrastive
Learning for Image-Text Sentiment Analysis and Beyond"; docs/models.md section 2):

1. **Frozen encoders.** Text: the last 4 transformer layers of the text encoder give a [CLS]
   state per layer ``T_c`` [B,4,C] and token states ``T_w`` [B,4,N,C]. Image: the backbone's
   last feature map [B,1280,7,7]. Our setting swaps BERT-base (768-d, layers 9-12) for
   all-MiniLM-L6-v2 (384-d, layers 3-6) and ResNet-50 (2048x7x7) for EfficientNet-Lite0
   (1280x7x7). Both stay frozen, as in the official code, so their outputs are cached once.
2. **Hierarchical attention (HA, Eq. 2).** Pool each layer's [CLS] over channels to one number,
   FC 4->4 (no bias), ReLU, FC 4->4, sigmoid -> one weight per layer; weight and sum the token
   states over layers; BiLSTM (hidden 64 per direction, no bias); mean over positions -> 128-d;
   projection (128->32->32) and align layer -> ``T_p``.
3. **Image branch (Eq. 1).** 1x1 conv 1280->128, BN, ReLU, Dropout 0.2, global average pool;
   the same projection + align stack -> ``I_p``.
4. **Cross-modal fusion (CMF, Eq. 3).** Q/K/V (Linear + Dropout) per modality; the image stream
   attends with queries/keys modulated by ``T_p`` and the text stream with ``I_p``;
   ``M_p = [I_m, T_m, I_p, T_p]`` -> Linear 4D->64, BN, ReLU, Dropout -> Linear 64->C.
5. **Losses** (``models.spp_scl_losses``): intra-modal SupCon on ``I_p`` and ``T_p``, the
   inter-modal ``L_clm`` and the conditional check of Algorithm 1.
6. **Two steps per batch** (:func:`two_step_update`): step 1 ``lambda*CE + L_cli + L_clt`` and
   an optimiser step; step 2 re-runs the forward pass, computes ``S`` and applies ``L_clm``
   with a second optimiser step only when ``c < floor(alpha * c_mask)``.

Ambiguities and how this implementation resolves them (also written into the model card):

- *Frozen or fine-tuned encoders*: the paper says both; the code freezes both. We freeze both
  (and cache their outputs); the text encoder is in eval mode, so its dropout is off (the code
  leaves BERT's dropout on in train mode, a form of feature noise we do not reproduce).
- *Mean over positions*: the code pads to 202 tokens and averages the BiLSTM output over all
  positions, padding included, and runs the backward LSTM through the padding first. That
  makes the text vector depend on the pad length. We run a *packed* BiLSTM over the real word
  tokens only ([CLS] and [SEP] excluded, as the code drops position 0 and the last one) and
  take the *masked* mean, so the result is independent of padding; the pad length (64 tokens,
  >= 99.4 % of MVSA/HFM tweets untruncated) is then only a truncation cap.
- *CMF attention across the batch*: with one vector per sample, ``softmax(QK^T)`` is B x B,
  so a prediction depends on the other samples in its batch. Training keeps the paper's
  in-batch attention. For evaluation and serving we attend over a fixed **context bank**: the
  ``I_p``/``T_p`` of ``bank_size`` (= batch size - 1) training samples, stored in the
  checkpoint, plus the sample itself. A sample then sees the same kind of context as in
  training (B-1 random training samples and itself) and its prediction no longer depends on
  which other posts share its batch (essential for a streaming monitor). The paper-style
  "fixed batch size" evaluation remains available (``context="batch"``) for comparison.
- *Positives*: intra-modal SupCon follows Khosla et al. (L_out): positives are same-label
  j != i, the self logit is excluded from the denominator, each anchor averages over its
  positives, anchors without positives are skipped (the paper's 1/B scaling is a constant
  factor). ``L_clm`` counts the paired text as a positive (as the code does): same-label
  columns including the diagonal, denominator over all B texts.
- *Similarity in the condition*: the code uses ``sigmoid(T' I'^T)`` on raw features, the
  paper cosine. We default to cosine (the space the contrastive losses shape; raw dot products
  are dominated by feature norms); ``condition_similarity="raw"`` reproduces the code.
  On MVSA-Single with cosine, c stays far above floor(2/3 c_mask), so step 2 almost never
  fires; with raw dot products the sigmoid saturates, c drops below it and step 2 fires on most
  batches. Only the raw variant makes the second step a real part of training.
- *HFM classes*: C = 2 (the code hard-codes 3).
- *Text-only data* (MVSA-Multiple and HFM here: their images are not available): the image
  branch, CMF, ``L_cli`` and the inter-modal step are absent; the classifier sees ``T_p``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.spp_scl_losses import AlignmentCheck, alignment_check, inter_modal_loss, supcon_loss

SPP_SCL_VERSION = "spp-scl/1"


@dataclass
class SPPSCLConfig:
    """Architecture and loss settings (paper Table 2 values where it gives them)."""

    num_classes: int = 3
    use_image: bool = True
    text_dim: int = 384  # MiniLM hidden size (BERT-base: 768)
    text_layers: tuple[int, ...] = (3, 4, 5, 6)  # last 4 of MiniLM's 6 (BERT: 9..12)
    image_channels: int = 1280  # EfficientNet-Lite0 (ResNet-50: 2048)
    conv_channels: int = 128
    lstm_hidden: int = 64
    dim: int = 32  # D
    fusion_hidden: int = 64
    dropout: float = 0.2
    tau: float = 0.07
    lam: float = 5.0  # lambda, weight of the cross-entropy
    alpha: float = 2.0 / 3.0
    two_step: bool = True
    condition_similarity: str = "cosine"  # "cosine" (paper) or "raw" (official code)
    bank_size: int = 63  # context bank for evaluation = batch size - 1
    max_tokens: int = 64  # truncation cap incl. [CLS]/[SEP]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SPPSCLConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "text_layers" in known:
            known["text_layers"] = tuple(known["text_layers"])
        return cls(**known)


@dataclass
class SPPSCLBatch:
    """Cached frozen features of one batch (float32)."""

    text_cls: Tensor  # [B, 4, C]  [CLS] state of each of the last 4 layers
    text_tokens: Tensor  # [B, 4, N, C]  word-token states (no [CLS]/[SEP]), zero-padded
    text_lengths: Tensor  # [B] number of real word tokens (>= 1)
    image: Tensor | None = None  # [B, 1280, 7, 7]
    labels: Tensor | None = None  # [B]

    def to(self, device: torch.device | str) -> SPPSCLBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return SPPSCLBatch(
            self.text_cls.to(device), self.text_tokens.to(device), self.text_lengths, mv(self.image), mv(self.labels)
        )


@dataclass
class SPPSCLOutput:
    logits: Tensor  # [B, C]
    text: Tensor  # T_p [B, D]
    image: Tensor | None  # I_p [B, D]
    layer_weights: Tensor  # [B, 4]


def projection(in_dim: int, dim: int, dropout: float) -> nn.Sequential:
    """M(.): Linear in->D, BN, ReLU, Dropout, Linear D->D, BN."""
    return nn.Sequential(
        nn.Linear(in_dim, dim),
        nn.BatchNorm1d(dim),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(dim, dim),
        nn.BatchNorm1d(dim),
    )


def align_layer(dim: int, dropout: float) -> nn.Sequential:
    """Align layer: Linear D->D, BN, ReLU, Dropout."""
    return nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Dropout(dropout))


class LayerAttention(nn.Module):
    """HA layer weights: T_c' = sigmoid(FC(ReLU(FC(GAP(T_c))))) -> one weight per layer."""

    def __init__(self, n_layers: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_layers, n_layers, bias=False)
        self.fc2 = nn.Linear(n_layers, n_layers)

    def forward(self, cls: Tensor) -> Tensor:  # [B, L, C] -> [B, L]
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(cls.mean(-1)))))


class HierarchicalAttentionText(nn.Module):
    """Text branch: layer-weighted token states -> packed BiLSTM -> masked mean -> T_p."""

    def __init__(self, cfg: SPPSCLConfig) -> None:
        super().__init__()
        self.layer_attention = LayerAttention(len(cfg.text_layers))
        self.lstm = nn.LSTM(cfg.text_dim, cfg.lstm_hidden, batch_first=True, bidirectional=True, bias=False)
        self.project = projection(2 * cfg.lstm_hidden, cfg.dim, cfg.dropout)
        self.align = align_layer(cfg.dim, cfg.dropout)

    def forward(self, cls: Tensor, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        w = self.layer_attention(cls)  # [B, 4]
        words = (w[:, :, None, None] * tokens).sum(1)  # U(T_c' . T_w): [B, N, C]
        lengths = lengths.clamp(min=1, max=words.shape[1]).cpu()
        packed = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=words.shape[1])  # zeros past len
        pooled = out.sum(1) / lengths.to(out.device, out.dtype)[:, None]  # masked mean
        return self.align(self.project(pooled)), w


class ImageBranch(nn.Module):
    """Image branch: 1x1 conv, BN, ReLU, Dropout, GAP, projection, align -> I_p."""

    def __init__(self, cfg: SPPSCLConfig) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cfg.image_channels, cfg.conv_channels, 1),
            nn.BatchNorm2d(cfg.conv_channels),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
        )
        self.project = projection(cfg.conv_channels, cfg.dim, cfg.dropout)
        self.align = align_layer(cfg.dim, cfg.dropout)

    def forward(self, fmap: Tensor) -> Tensor:
        return self.align(self.project(self.conv(fmap).mean((2, 3))))


class CrossModalFusion(nn.Module):
    """CMF (Eq. 3): each stream's queries/keys are modulated by the other modality's vector.

    ``context=None`` attends across the batch (training, as in the paper). With a context
    ``(I_ctx, T_ctx)`` of M stored samples, each sample attends over those M plus itself.
    """

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()

        def qkv() -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

        self.q_i, self.k_i, self.v_i = qkv(), qkv(), qkv()
        self.q_t, self.k_t, self.v_t = qkv(), qkv(), qkv()
        self.scale = 1.0 / math.sqrt(dim)

    def _stream(
        self,
        x: Tensor,
        mod: Tensor,
        q: nn.Module,
        k: nn.Module,
        v: nn.Module,
        ctx_x: Tensor | None,
        ctx_mod: Tensor | None,
    ) -> Tensor:
        qs, ks, vs = q(x) * mod, k(x) * mod, v(x)
        if ctx_x is None:
            attn = torch.softmax(qs @ ks.T * self.scale, dim=-1)  # [B, B]
            return attn @ vs
        kc, vc = k(ctx_x) * ctx_mod, v(ctx_x)  # [M, D]
        scores = torch.cat([qs @ kc.T, (qs * ks).sum(-1, keepdim=True)], dim=1) * self.scale  # [B, M+1]
        attn = torch.softmax(scores, dim=-1)
        return attn[:, :-1] @ vc + attn[:, -1:] * vs

    def forward(self, ip: Tensor, tp: Tensor, context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        ci, ct = context if context is not None else (None, None)
        im = self._stream(ip, tp, self.q_i, self.k_i, self.v_i, ci, ct)
        tm = self._stream(tp, ip, self.q_t, self.k_t, self.v_t, ct, ci)
        return torch.cat([im, tm, ip, tp], dim=-1)  # M_p = [I_m, T_m, I_p, T_p]


class SPPSCL(nn.Module):
    """The SPP-SCL head over cached frozen features (HA text branch, image branch, CMF, classifier)."""

    def __init__(self, cfg: SPPSCLConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SPPSCLConfig()
        self.text = HierarchicalAttentionText(cfg)
        self.image = ImageBranch(cfg) if cfg.use_image else None
        self.fusion = CrossModalFusion(cfg.dim, cfg.dropout) if cfg.use_image else None
        in_dim = 4 * cfg.dim if cfg.use_image else cfg.dim
        self.classifier = nn.Sequential(
            nn.Linear(in_dim, cfg.fusion_hidden),
            nn.BatchNorm1d(cfg.fusion_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fusion_hidden, cfg.num_classes),
        )
        # Evaluation context for CMF (I_p, T_p of bank_size training samples); empty until set.
        self.register_buffer("bank_image", torch.zeros(0, cfg.dim))
        self.register_buffer("bank_text", torch.zeros(0, cfg.dim))

    @property
    def has_bank(self) -> bool:
        return self.bank_image.shape[0] > 0

    def embed(self, batch: SPPSCLBatch) -> tuple[Tensor, Tensor | None, Tensor]:
        """(T_p, I_p or None, layer weights)."""
        tp, w = self.text(batch.text_cls, batch.text_tokens, batch.text_lengths)
        ip = self.image(batch.image) if self.image is not None and batch.image is not None else None
        return tp, ip, w

    def forward(self, batch: SPPSCLBatch, context: str = "auto") -> SPPSCLOutput:
        """``context``: "batch" (in-batch CMF), "bank" (stored context) or "auto" (batch in
        training, bank in eval when one is stored)."""
        tp, ip, w = self.embed(batch)
        if self.fusion is None:
            return SPPSCLOutput(self.classifier(tp), tp, None, w)
        if ip is None:
            raise ValueError("this SPP-SCL model is multimodal: the batch needs image feature maps")
        use_bank = context == "bank" or (context == "auto" and not self.training and self.has_bank)
        if use_bank and not self.has_bank:
            raise RuntimeError("no CMF context bank stored: call set_bank() first")
        ctx = (self.bank_image, self.bank_text) if use_bank else None
        return SPPSCLOutput(self.classifier(self.fusion(ip, tp, ctx)), tp, ip, w)

    @torch.no_grad()
    def set_bank(self, batch: SPPSCLBatch) -> None:
        """Store the eval-mode I_p/T_p of a fixed set of training samples as the CMF context."""
        if self.image is None:
            return
        was = self.training
        self.eval()
        tp, ip, _ = self.embed(batch)
        self.train(was)
        if ip is None:  # the batch has no images: no context to store
            return
        self.bank_text = tp.detach().clone()
        self.bank_image = ip.detach().clone()


@dataclass
class StepStats:
    """What one two-step update did (for logging and the ablation)."""

    loss_ce: float
    loss_cli: float
    loss_clt: float
    loss_clm: float = 0.0
    second_step: bool = False
    check: AlignmentCheck | None = field(default=None, repr=False)


def step_one_loss(model: SPPSCL, out: SPPSCLOutput, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Step 1 objective: lambda*CE + L_cli + L_clt."""
    cfg = model.cfg
    ce = nn.functional.cross_entropy(out.logits, labels)
    clt = supcon_loss(out.text, labels, cfg.tau)
    cli = supcon_loss(out.image, labels, cfg.tau) if out.image is not None else ce.new_zeros(())
    loss = cfg.lam * ce + cli + clt
    return loss, {"ce": ce.item(), "cli": cli.item(), "clt": clt.item()}


def two_step_update(model: SPPSCL, optimizer: torch.optim.Optimizer, batch: SPPSCLBatch) -> StepStats:
    """Algorithm 1 for one batch: intra-modal step, then the conditional inter-modal step."""
    assert batch.labels is not None
    model.train()
    y = batch.labels
    # Step 1 (SPP-SCL1): pull same-label samples together within each modality.
    out = model(batch, context="batch")
    loss, parts = step_one_loss(model, out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stats = StepStats(parts["ce"], parts["cli"], parts["clt"])
    if not (model.cfg.two_step and model.image is not None and batch.image is not None):
        return stats
    # Step 2 (SPP-SCL2): re-extract I_p', T_p'; align across modalities only when needed.
    tp, ip, _ = model.embed(batch)
    assert ip is not None  # both the image branch and the batch's images exist (checked above)
    check = alignment_check(ip.detach(), tp.detach(), y, model.cfg.alpha, model.cfg.condition_similarity)
    stats.check = check
    if check.fire:
        clm = inter_modal_loss(ip, tp, y, model.cfg.tau)
        optimizer.zero_grad(set_to_none=True)
        clm.backward()
        optimizer.step()
        stats.loss_clm, stats.second_step = clm.item(), True
    return stats
