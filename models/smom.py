"""SMOM: deep multi-view contrastive fusion network (docs/models.md section 1).

Paper: "Cross-modal Contrastive Fusion Network For Sentiment Analysis With Dynamic Semantic
Diffusion" (DOI 10.6180/jase.202604_29(4).0016).

Reads top to bottom like the paper's method section:

1. View-specific extractors (eq. 1): a BiGRU over the conversation for the sequence view (text),
   a per-utterance MLP for every other view (audio, visual, image, ...). All map to width D.
2. User fusion (eqs. 2-3): z = s + eta * f(u), where u is the author's causal running mean of the
   raw features of their *earlier* utterances for that view (zero and n = 0 for a new speaker),
   and f is the same extractor applied to u (the BiGRU sees u as a one-step sequence, so f(u)
   depends on the author's history only). The term is masked out where n = 0: f(0) is not 0.
3. Cross-view MI loss L_cc (eqs. 4-8): the COMPLETER form
   -sum P * [ln P - (lambda + 1)(ln P_d + ln P_d')], lambda = 1 by default, summed over all view
   pairs, on softmax(Linear(z)) "cluster" probabilities.
4. Structure-driven graph (eq. 9, 14): V*N nodes per conversation (one per view per utterance);
   rule 1 links all same-view nodes of a conversation, rule 2 links the views of one utterance;
   A_ij = 1 - arccos(0.99999 cos(h_i, h_j)) / pi on H0 = z; the diagonal is set to exactly 1 (the
   renormalisation trick's self loop); P = D^-1/2 A D^-1/2.
5. K gated GCNII layers (eqs. 10-16): an LSTM cell run *across depth* gives (g, C);
   H_k = ReLU(((1-alpha) P H_{k-1} + alpha H0)((1-beta_k) I + beta_k W_k)) + g_k,
   beta_k = ln(0.5/k + 1), alpha = 0.2.
6. Classifier (eq. 17) over [z^1..z^V; h^1..h^V]; loss (eqs. 18-19) CE + w * L_cc (L2 via the
   optimiser's weight decay).

Any subset of views: `view_mask` [B, T, V] marks which views each utterance has; missing views
have no graph node and contribute zeros to the classifier. Training can drop views at random
(modality dropout) so a missing view at serving time is a case the model has seen.
Batches are padded dialogues, left-aligned, with `utt_mask` [B, T].
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.registry import HeadOutput, ScoringHead, register_head

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class SMOMConfig:
    """Hyperparameters; defaults follow docs/models.md (MM-DFN's values where SMOM gives none)."""

    views: tuple[tuple[str, int], ...] = (("text", 384),)  # (name, raw feature dim), in node order
    n_classes: int = 7
    hidden: int = 200  # D: the common width of every view's representation
    sequence_view: str = "text"  # the view whose extractor is the BiGRU over the conversation
    eta: float = 0.5  # weight of the author's history, z = s + eta * f(u); 0 disables it
    n_layers: int = 32  # K gated GCNII layers (16 for IEMOCAP, 32 for MELD)
    alpha: float = 0.2  # initial-residual weight
    gcn_lambda: float = 0.5  # beta_k = ln(gcn_lambda / k + 1)
    dropout: float = 0.4
    cc_dim: int = 16  # size of the softmax "cluster" head L_cc works on
    cc_lambda: float = 1.0  # COMPLETER's entropy weight; 1 gives the paper's -(I + H1 + H2)
    cc_weight: float = 1e-3  # w in L = L_ce + w * L_cc
    modality_dropout: float = 0.0  # training only: drop each view of an utterance with this prob.
    class_weights: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried to the model card

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.views)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["views"] = [list(v) for v in self.views]
        d["class_weights"] = list(self.class_weights) if self.class_weights is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SMOMConfig:
        d = dict(d)
        d["views"] = tuple((str(n), int(k)) for n, k in d["views"])
        if d.get("class_weights") is not None:
            d["class_weights"] = tuple(float(x) for x in d["class_weights"])
        return cls(**d)


# --------------------------------------------------------------------------------------------
# 2.1 View-specific extractors (eq. 1) and the author's history (eqs. 2-3)
# --------------------------------------------------------------------------------------------


class SequenceExtractor(nn.Module):
    """BiGRU over a conversation's utterances: the text view's context-aware representation."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError("hidden must be even (two GRU directions of hidden/2)")
        self.gru = nn.GRU(in_dim, hidden // 2, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor, utt_mask: Tensor) -> Tensor:
        """x [B, T, F], left-aligned utt_mask [B, T] -> [B, T, D]; padding never reaches real steps."""
        lengths = utt_mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * utt_mask.unsqueeze(-1).to(out.dtype)

    def single(self, x: Tensor) -> Tensor:
        """The same GRU on independent one-step sequences: f(u) for an author history u [..., F]."""
        shape = x.shape[:-1]
        out, _ = self.gru(x.reshape(-1, 1, x.shape[-1]))
        return out.reshape(*shape, -1)


class MLPExtractor(nn.Module):
    """Per-utterance MLP for the non-sequential views (audio, visual, image)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))

    def forward(self, x: Tensor, utt_mask: Tensor | None = None) -> Tensor:
        return self.net(x)

    def single(self, x: Tensor) -> Tensor:
        return self.net(x)


@torch.no_grad()
def causal_running_mean(features: Tensor, authors: Tensor) -> tuple[Tensor, Tensor]:
    """u_i = mean of features of the author's utterances *before* i (rows are in time order).

    Returns (u [M, F], n [M]); a first utterance gets u = 0, n = 0. This is exactly what the
    streaming scorer keeps per author (see `update_running_mean`), so train and serve agree.
    """
    m = features.shape[0]
    if m == 0:
        return features.clone(), torch.zeros(0, dtype=torch.long)
    order = torch.argsort(authors, stable=True)
    a, x = authors[order], features[order].double()
    excl = x.cumsum(0) - x  # sum of all rows before this one (any author)
    idx = torch.arange(m)
    start = torch.ones(m, dtype=torch.bool)
    start[1:] = a[1:] != a[:-1]
    first = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), 0).values  # group start
    n = idx - first
    u = (excl - excl[first]) / n.clamp_min(1).unsqueeze(1).double()
    u_out, n_out = torch.empty_like(features), torch.empty(m, dtype=torch.long)
    u_out[order] = u.to(features.dtype)
    n_out[order] = n
    return u_out, n_out


def update_running_mean(u: Tensor, n: int, x: Tensor) -> tuple[Tensor, int]:
    """One streaming step of the author's running mean after a new utterance x."""
    return u + (x - u) / (n + 1), n + 1


# --------------------------------------------------------------------------------------------
# 2.2 Cross-view contrastive learning (eqs. 4-8): COMPLETER's MI + entropy loss
# --------------------------------------------------------------------------------------------


def cross_view_mi_loss(p1: Tensor, p2: Tensor, lam: float = 1.0, eps: float = 1e-12) -> Tensor:
    """-sum P [ln P - (lam+1)(ln P_d + ln P_d')] = -(I + lam (H1 + H2)) for probability rows p1, p2 [N, K].

    Minimal (-(1 + 2 lam) ln K) when the two views are perfectly dependent and uniform over K.
    """
    k = p1.shape[-1]
    joint = (p1.unsqueeze(2) * p2.unsqueeze(1)).sum(0)  # eq. 5 (the 1/N goes in the normalisation)
    joint = (joint + joint.t()) / 2
    joint = joint / joint.sum().clamp_min(eps)
    pd = joint.sum(1, keepdim=True).expand(k, k)
    pd2 = joint.sum(0, keepdim=True).expand(k, k)
    joint, pd, pd2 = joint.clamp_min(eps), pd.clamp_min(eps), pd2.clamp_min(eps)
    return -(joint * (joint.log() - (lam + 1) * pd.log() - (lam + 1) * pd2.log())).sum()


# --------------------------------------------------------------------------------------------
# 2.3 Structure-driven adaptive fusion: graph construction (eq. 9, 14) and gated GCNII (10-16)
# --------------------------------------------------------------------------------------------


def graph_structure(n_views: int, node_mask: Tensor) -> Tensor:
    """Which node pairs may have an edge, [B, V*T, V*T] bool, nodes ordered view-major (v*T + t).

    Rule 1: same view, same conversation. Rule 2: same utterance, any view. Missing nodes: none.
    """
    b, nodes = node_mask.shape
    t = nodes // n_views
    view = torch.arange(n_views, device=node_mask.device).repeat_interleave(t)
    utt = torch.arange(t, device=node_mask.device).repeat(n_views)
    allowed = (view[:, None] == view[None, :]) | (utt[:, None] == utt[None, :])
    return allowed.unsqueeze(0) & node_mask.unsqueeze(2) & node_mask.unsqueeze(1)


def angular_adjacency(h: Tensor, structure: Tensor) -> Tensor:
    """A_ij = 1 - arccos(0.99999 cos(h_i, h_j)) / pi on allowed pairs; diagonal 1 on real nodes."""
    hn = F.normalize(h, dim=-1)
    cos = (hn @ hn.transpose(1, 2)).clamp(-1.0, 1.0)
    a = (1.0 - torch.arccos(0.99999 * cos) / math.pi) * structure.to(h.dtype)
    eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device).unsqueeze(0)
    diag = eye & structure
    return torch.where(diag, torch.ones_like(a), a)


def sym_normalise(a: Tensor) -> Tensor:
    """P = D^-1/2 A D^-1/2 (isolated/padded nodes get all-zero rows)."""
    deg = a.sum(-1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    return inv.unsqueeze(-1) * a * inv.unsqueeze(-2)


class GCNIILayer(nn.Module):
    """One GCNII step (eq. 15): initial residual alpha and identity mapping beta."""

    def __init__(self, dim: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.weight = nn.Linear(dim, dim, bias=False)

    def forward(self, h: Tensor, h0: Tensor, adj: Tensor) -> Tensor:
        return self.step(adj @ h, h0)

    def step(self, agg: Tensor, h0: Tensor) -> Tensor:
        """The same update given the neighbourhood sum agg = P @ H (so callers may pack nodes)."""
        support = (1 - self.alpha) * agg + self.alpha * h0
        return torch.relu((1 - self.beta) * support + self.beta * self.weight(support))


class DepthGate(nn.Module):
    """The LSTM cell run across layers (eqs. 10-13): input H_{k-1}, state (g_{k-1}, C_{k-1})."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, 4 * dim)  # update, forget, output gates and candidate

    def forward(self, h: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        g, c = state
        upd, fgt, out, cand = self.proj(torch.cat([g, h], -1)).chunk(4, -1)
        c = torch.sigmoid(fgt) * c + torch.sigmoid(upd) * torch.tanh(cand)
        return torch.sigmoid(out) * torch.tanh(c), c


class GatedGraphFusion(nn.Module):
    """K gated GCNII layers: H_k = GCNII_k(H_{k-1}, H0, P) + g_k (eq. 16)."""

    def __init__(self, dim: int, n_layers: int, alpha: float, gcn_lambda: float, dropout: float) -> None:
        super().__init__()
        self.gate = DepthGate(dim)
        self.layers = nn.ModuleList(
            GCNIILayer(dim, alpha, math.log(gcn_lambda / k + 1)) for k in range(1, n_layers + 1)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, h0: Tensor, adj: Tensor, node_mask: Tensor) -> Tensor:
        """h0 [B, M, D], adj [B, M, M], node_mask [B, M] -> H_K [B, M, D] (zeros on missing nodes).

        Per-node work (gate, weights) runs on the real nodes only, packed [R, D]; only the
        neighbourhood sum P @ H needs the padded layout, so padding costs no gate/weight FLOPs.
        """
        real = node_mask.bool()
        x0 = h0[real]
        x, g, c = x0, torch.zeros_like(x0), torch.zeros_like(x0)
        padded = torch.zeros_like(h0)
        for layer in cast("Iterable[GCNIILayer]", self.layers):
            g, c = self.gate(x, (g, c))
            padded = padded.index_put((real,), self.dropout(x))
            agg = (adj @ padded)[real]
            x = layer.step(agg, x0) + g
        return torch.zeros_like(h0).index_put((real,), x)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass
class SMOMOutput:
    logits: Tensor  # [B, T, C]
    z: Tensor  # [B, V, T, D]: view representations after user fusion
    h: Tensor  # [B, V, T, D]: after the graph fusion
    cluster: Tensor  # [B, V, T, cc_dim]: softmax probabilities L_cc works on
    view_mask: Tensor  # [B, T, V] the views actually used (after modality dropout)
    utt_mask: Tensor  # [B, T]


class SMOM(nn.Module):
    """Multi-view conversation model: extractors + user fusion + gated graph fusion + classifier."""

    class_weights: Tensor | None  # a buffer, registered in __init__

    def __init__(self, cfg: SMOMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.extractors = nn.ModuleDict(
            {
                name: SequenceExtractor(dim, d) if name == cfg.sequence_view else MLPExtractor(dim, d, cfg.dropout)
                for name, dim in cfg.views
            }
        )
        self.cluster_heads = nn.ModuleDict({name: nn.Linear(d, cfg.cc_dim) for name, _ in cfg.views})
        self.fusion = GatedGraphFusion(d, cfg.n_layers, cfg.alpha, cfg.gcn_lambda, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(2 * len(cfg.views) * d, cfg.n_classes)
        weights = torch.tensor(cfg.class_weights, dtype=torch.float32) if cfg.class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    # -- eqs. 1-3 ------------------------------------------------------------------------------
    def user_term(self, view: str, u: Tensor, n: Tensor) -> Tensor:
        """eta * f(u), zero where the author has no earlier utterance (n == 0)."""
        f = cast("SequenceExtractor | MLPExtractor", self.extractors[view]).single(u)
        return self.cfg.eta * f * (n > 0).unsqueeze(-1).to(f.dtype)

    def _view_mask(self, feats: dict[str, Tensor], utt_mask: Tensor, view_mask: Tensor | None) -> Tensor:
        present = torch.stack(
            [torch.full_like(utt_mask, name in feats, dtype=torch.bool) for name in self.cfg.view_names], -1
        )
        vm = present & utt_mask.bool().unsqueeze(-1)
        if view_mask is not None:
            vm = vm & view_mask.bool()
        if self.training and self.cfg.modality_dropout > 0 and vm.shape[-1] > 1:
            drop = torch.rand(vm.shape, device=vm.device) < self.cfg.modality_dropout
            kept = vm & ~drop
            vm = torch.where(kept.any(-1, keepdim=True), kept, vm)  # never drop every view of an utterance
        return vm

    def forward(
        self,
        feats: dict[str, Tensor],
        utt_mask: Tensor,
        user_feats: dict[str, Tensor] | None = None,
        user_counts: dict[str, Tensor] | None = None,
        view_mask: Tensor | None = None,
    ) -> SMOMOutput:
        """feats/user_feats: view -> [B, T, F]; user_counts: view -> [B, T] (n earlier utterances)."""
        utt_mask = utt_mask.bool()
        b, t = utt_mask.shape
        vm = self._view_mask(feats, utt_mask, view_mask)
        zs = []
        for v, name in enumerate(self.cfg.view_names):
            m = vm[..., v].unsqueeze(-1)
            if name not in feats:
                zs.append(torch.zeros(b, t, self.cfg.hidden, device=utt_mask.device))
                continue
            s = self.extractors[name](feats[name] * m, utt_mask)
            if self.cfg.eta != 0 and user_feats is not None and name in user_feats:
                counts = (
                    user_counts[name]
                    if user_counts is not None and name in user_counts
                    else (user_feats[name].abs().sum(-1) > 0).long()
                )
                s = s + self.user_term(name, user_feats[name], counts)
            zs.append(s * m)
        z = torch.stack(zs, 1)  # [B, V, T, D]
        n_views = z.shape[1]

        node_mask = vm.permute(0, 2, 1).reshape(b, n_views * t)
        h0 = z.reshape(b, n_views * t, -1)
        adj = sym_normalise(angular_adjacency(h0, graph_structure(n_views, node_mask)))
        h = self.fusion(h0, adj, node_mask).reshape(b, n_views, t, -1)

        cluster = torch.stack(
            [torch.softmax(self.cluster_heads[name](z[:, v]), -1) for v, name in enumerate(self.cfg.view_names)], 1
        )
        per_utt = [x.permute(0, 2, 1, 3).reshape(b, t, -1) for x in (z, h)]  # [z^1..z^V; h^1..h^V]
        head_in = torch.cat(per_utt, -1)
        logits = self.classifier(self.dropout(head_in))
        return SMOMOutput(logits=logits, z=z, h=h, cluster=cluster, view_mask=vm, utt_mask=utt_mask)

    # -- streaming: one post at a time, its thread as the conversation ---------------------------
    def score_posts(
        self,
        x: dict[str, Tensor],
        u: dict[str, Tensor],
        n: dict[str, Tensor],
        mask: dict[str, Tensor],
        context: dict[str, Any] | None = None,
    ) -> Tensor:
        """Logits [B, C] for B posts, each scored as the last utterance of its thread.

        x/u: view -> [B, F]; n: view -> [B]; mask: view -> [B] bool (view present).
        context (optional): the last K posts of each post's thread, oldest first, as
        {"x": view -> [B, K, F], "u": ..., "n": view -> [B, K], "mask": view -> [B, K], "valid": [B, K]}.
        """
        names = self.cfg.view_names
        rows = []
        for i in range(next(iter(x.values())).shape[0]):
            keep = context["valid"][i].nonzero().flatten() if context is not None else torch.zeros(0, dtype=torch.long)

            def seq(post: dict[str, Tensor], ctx_key: str, i: int = i, keep: Tensor = keep) -> dict[str, Tensor]:
                out = {}
                for v in names:
                    if v not in post:
                        continue
                    tail = post[v][i : i + 1]
                    if context is not None and v in context[ctx_key]:
                        tail = torch.cat([context[ctx_key][v][i][keep], tail], 0)
                    out[v] = tail
                return out

            rows.append((seq(x, "x"), seq(u, "u"), seq(n, "n"), seq(mask, "mask")))
        t = max(len(next(iter(r[0].values()))) for r in rows)
        b = len(rows)

        def pad(k: int, v: str, like: Tensor) -> Tensor:
            full = like.new_zeros((b, t, *like.shape[2:]))
            for i, r in enumerate(rows):
                full[i, : len(r[k][v])] = r[k][v]
            return full

        views = [v for v in names if v in x]
        lengths = torch.tensor([len(next(iter(r[0].values()))) for r in rows])
        utt_mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
        feats = {v: pad(0, v, x[v].unsqueeze(1)) for v in views}
        users = {v: pad(1, v, u[v].unsqueeze(1)) for v in views if v in u}
        counts = {v: pad(2, v, n[v].unsqueeze(1)) for v in views if v in n}
        present = {v: pad(3, v, mask[v].unsqueeze(1).bool()) if v in mask else utt_mask for v in views}
        view_mask = torch.stack([present.get(v, torch.zeros_like(utt_mask)) for v in names], -1)
        out = self(feats, utt_mask, users, counts, view_mask=view_mask)
        return out.logits[torch.arange(b), lengths - 1]

    # -- eqs. 18-19 -----------------------------------------------------------------------------
    def cc_loss(self, out: SMOMOutput) -> Tensor:
        """L_cc summed over view pairs, on the utterances that have both views."""
        total = out.logits.new_zeros(())
        names = self.cfg.view_names
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                both = out.view_mask[..., i] & out.view_mask[..., j]
                if both.sum() > 1:
                    total = total + cross_view_mi_loss(
                        out.cluster[:, i][both], out.cluster[:, j][both], self.cfg.cc_lambda
                    )
        return total

    def loss(self, out: SMOMOutput, labels: Tensor) -> dict[str, Tensor]:
        """CE over real utterances + w * L_cc (weight decay lives in the optimiser)."""
        m = out.utt_mask
        ce = F.cross_entropy(out.logits[m], labels[m], weight=self.class_weights)
        cc = self.cc_loss(out) if len(self.cfg.views) > 1 else ce.new_zeros(())
        return {"loss": ce + self.cfg.cc_weight * cc, "ce": ce, "cc": cc}


# --------------------------------------------------------------------------------------------
# SMOM as a streaming scoring head (models/registry.py interface)
# --------------------------------------------------------------------------------------------


@register_head("smom")
class SMOMHead(ScoringHead):
    """SMOM behind the scorer's head interface: each post is the last utterance of its thread.

    forward(x, u, n, mask[, context]) follows `ScoringHead`; `context` (optional, see
    `SMOM.score_posts`) carries the last K posts of each post's thread. Without it a post is a
    one-utterance conversation, so only the author history (eta) adds context. SMOM has no
    per-view weights, so `modality_weights` is empty.
    """

    def __init__(
        self, smom: dict[str, Any], labels: list[str] | tuple[str, ...], name: str = "smom", version: str = "1"
    ) -> None:
        super().__init__()
        self.cfg = SMOMConfig.from_dict(smom)
        self.model = SMOM(self.cfg)
        self.labels = tuple(labels)
        self.views = self.cfg.view_names
        self.feature_dims = {v: d for v, d in self.cfg.views}
        self.name, self.version = name, version

    def config(self) -> dict[str, Any]:
        return {"smom": self.cfg.to_dict(), "labels": list(self.labels)}

    def forward(
        self,
        x: dict[str, Tensor],
        u: dict[str, Tensor],
        n: dict[str, Tensor],
        mask: dict[str, Tensor],
        context: dict[str, Any] | None = None,
    ) -> HeadOutput:
        views = [v for v in self.views if v in x]
        if not views:
            raise ValueError(f"SMOM head needs at least one of the views {self.views}")
        b = x[views[0]].shape[0]
        present = {
            v: mask[v].bool() if v in mask else torch.ones(b, dtype=torch.bool, device=x[v].device) for v in views
        }
        logits = self.model.score_posts(
            {v: x[v].float() for v in views},
            {v: u[v].float() for v in views if v in u},
            {v: n[v] for v in views if v in n},
            present,
            context,
        )
        return HeadOutput(logits=logits)
