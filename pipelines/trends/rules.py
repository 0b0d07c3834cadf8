"""Alert rule semantics (pure): metrics of a closed window, baselines, and the firing decision.

Kinds:
* ``threshold``: ``observed <op> threshold``.
* ``spike``: z-score of ``observed`` against the baseline (rolling mean/std or EWMA of the same
  metric over the previous ``lookback`` windows) beyond ``z_score`` in ``direction``.
* ``surge``: volume surge, ``observed >= factor * baseline`` (default metric ``n_posts``).
* ``dip``: sentiment dip, ``baseline - observed >= drop`` (default metric ``mean_score``), and
  ``z <= -z_score`` too when ``z_score`` is set.

Every kind also needs ``n_posts >= min_volume`` (else the window is not evaluated) and
``|observed - baseline| >= min_delta`` where a baseline is used. Surges and spikes may also
need ``observed >= min_observed``: an absolute floor beside the relative test ("at least 20
negative posts an hour, and 3x the usual"), so a quiet brand's 4 -> 13 does not page anyone.

Baselines (why): a spike must not poison its own baseline, so windows of an open episode are
left out (``exclude_fired``) and the lookback reaches further back for clean windows; ``median``
(with 1.4826 x MAD as the spread) shrugs off the odd hot window that did not fire; counts of a
few posts an hour are not Gaussian, so ``model=poisson|negbin`` judges a count by its tail
probability under the baseline rate and reports it as the equivalent one-sided z (a count that
is as unlikely as a 3-sigma Gaussian event gets z=3); ``seasonality=hour_of_day`` uses the same
hour of earlier days as the baseline once ``min_baseline`` of them exist.

Leaving episode windows out of a *median* baseline backfires: the busy hours that fired drop out,
the median sinks toward the night-time level, more hours fire and drop out in turn (measured in
docs/alerts-quality.md). A median over a week of hourly windows already shrugs off a spike that
lasts less than half of it, so the week-long median rules keep every window.

Each verdict carries a ``level``: how far past its threshold the window is (1.0 = exactly at it).
An open episode resolves only after ``resolve_after`` consecutive windows with
``level < resolve_ratio`` (hysteresis); see ``pipelines.trends.processor``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from statistics import median
from typing import Any

from scipy import stats

COUNT_METRICS = frozenset({"n_posts", "n_negative", "n_neutral", "n_positive", "unique_authors"})
RATIO_METRICS = frozenset({"mean_score", "share_negative", "share_positive"})
METRICS = COUNT_METRICS | RATIO_METRICS
KINDS = frozenset({"threshold", "spike", "surge", "dip"})
OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
SEVERITIES = ("info", "warning", "critical")
BASELINE_METHODS = ("mean", "ewma", "median")
MODELS = ("gaussian", "poisson", "negbin")
SEASONALITIES = ("none", "hour_of_day")
_Z_CAP = 40.0  # the equivalent z of a tail probability too small for a float
#: metrics where "worse" means lower; sample posts are then the most negative ones either way
_POSITIVE_METRICS = frozenset({"n_positive", "share_positive"})


@dataclass
class Rule:
    """An alert rule as the evaluator needs it (a row of ``alert_rules``)."""

    id: int
    name: str
    kind: str
    metric: str = "share_negative"
    window_size: str = "1h"
    watch_id: int | None = None
    op: str = ">="
    threshold: float | None = None
    z_score: float | None = None
    direction: str = "up"
    factor: float | None = None
    drop: float | None = None
    min_delta: float = 0.0
    min_observed: float = 0.0
    baseline_method: str = "mean"
    ewma_alpha: float = 0.3
    lookback: int = 24
    min_baseline: int = 6
    std_floor: float = 0.0
    min_volume: int = 0
    severity: str = "warning"
    cooldown_s: int = 3600
    model: str = "gaussian"
    exclude_fired: bool = True
    seasonality: str = "none"
    resolve_after: int = 1
    resolve_ratio: float = 1.0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Rule:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def validate(self) -> None:
        """Raise ValueError with a clear message if the rule cannot be evaluated."""
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        if self.kind == "threshold" and (self.threshold is None or self.op not in OPS):
            raise ValueError("threshold rules need threshold and op in > >= < <=")
        if self.kind == "spike" and (self.z_score is None or self.direction not in ("up", "down", "both")):
            raise ValueError("spike rules need z_score and direction up|down|both")
        if self.kind == "surge" and (self.factor is None or self.factor <= 0):
            raise ValueError("surge rules need factor > 0")
        if self.kind == "dip" and self.drop is None and self.z_score is None:
            raise ValueError("dip rules need drop and/or z_score")
        if self.baseline_method not in BASELINE_METHODS or not 0 < self.ewma_alpha <= 1:
            raise ValueError(f"baseline_method must be one of {BASELINE_METHODS} with 0 < ewma_alpha <= 1")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}")
        if self.model != "gaussian" and self.metric not in COUNT_METRICS:
            raise ValueError(f"model={self.model} needs a count metric ({sorted(COUNT_METRICS)})")
        if self.seasonality not in SEASONALITIES:
            raise ValueError(f"seasonality must be one of {SEASONALITIES}")
        if self.resolve_after < 1 or not 0 < self.resolve_ratio <= 1:
            raise ValueError("need resolve_after >= 1 and 0 < resolve_ratio <= 1")
        if self.lookback < 1 or self.min_baseline < 1 or self.min_baseline > self.lookback:
            raise ValueError("need 1 <= min_baseline <= lookback")
        if self.cooldown_s < 0 or self.min_volume < 0:
            raise ValueError("cooldown_s and min_volume must be >= 0")
        if self.min_observed < 0 or (self.min_observed > 0 and self.kind not in ("surge", "spike")):
            raise ValueError("min_observed (>= 0) is a floor for surge and spike rules only")

    def escalated(self, severity: str) -> str:
        """The next severity up (re-escalation within an episode), capped at critical."""
        i = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        return SEVERITIES[min(i + 1, len(SEVERITIES) - 1)]

    @property
    def uses_baseline(self) -> bool:
        return self.kind != "threshold"

    @property
    def sample_field(self) -> str:
        """Which top-post list of the window illustrates this rule."""
        return f"top_{focus_label(self.metric)}"


def focus_label(metric: str) -> str:
    """The posts that explain a move of `metric`: the positive ones for positive metrics, else negatives."""
    return "positive" if metric in _POSITIVE_METRICS else "negative"


@dataclass(frozen=True)
class Baseline:
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Verdict:
    evaluated: bool
    firing: bool
    observed: float | None
    baseline: Baseline | None
    z: float | None
    reason: str
    level: float = 0.0  # observed excess in units of the firing threshold (>= 1 fires)

    def calm(self, ratio: float) -> bool:
        """Back near baseline: not evaluated (too few posts) counts as calm."""
        return not self.evaluated or (not self.firing and self.level < ratio)


def metric_value(window: Mapping[str, Any], metric: str) -> float | None:
    v = window.get(metric)
    return None if v is None else float(v)


def compute_baseline(values: Sequence[float], method: str = "mean", alpha: float = 0.3) -> Baseline | None:
    """Mean and (population) std of ``values`` (oldest first), or their EWMA and EW std."""
    if not values:
        return None
    if method == "ewma":
        m, var = float(values[0]), 0.0
        for v in values[1:]:
            diff = v - m
            inc = alpha * diff
            m += inc
            var = (1 - alpha) * (var + diff * inc)
        return Baseline(m, math.sqrt(max(var, 0.0)), len(values))
    if method == "median":
        m = float(median(values))
        return Baseline(m, 1.4826 * float(median(abs(v - m) for v in values)), len(values))
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / len(values)
    return Baseline(m, math.sqrt(var), len(values))


def count_z(observed: float, base: Baseline, model: str, up: bool = True, rate_floor: float = 0.5) -> float:
    """One-sided z equivalent of a count's tail probability under a Poisson or negative binomial.

    The negative binomial takes its dispersion from the baseline spread (method of moments,
    var = mu + mu^2 / r); a spread no wider than Poisson falls back to Poisson.
    """
    mu = max(base.mean, rate_floor)
    k = round(observed)
    var = base.std**2
    if model == "negbin" and var > mu * 1.05:
        r = mu * mu / (var - mu)
        dist: Any = stats.nbinom(r, r / (r + mu))
    else:
        dist = stats.poisson(mu)
    p = float(dist.sf(k - 1)) if up else float(dist.cdf(k))
    if p >= 0.5:
        z = float(stats.norm.isf(min(p, 1 - 1e-16)))
    else:
        z = float(stats.norm.isf(max(p, 1e-300)))
    z = max(-_Z_CAP, min(_Z_CAP, z))
    return z if up else -z


def evaluate(rule: Rule, window: Mapping[str, Any], history: Sequence[float]) -> Verdict:
    """Decide whether ``rule`` fires on a closed ``window`` given the metric's ``history``."""
    observed = metric_value(window, rule.metric)
    n = int(window.get("n_posts") or 0)
    if n < rule.min_volume or observed is None:
        return Verdict(False, False, observed, None, None, f"volume {n} < min_volume {rule.min_volume}")
    if rule.kind == "threshold":
        assert rule.threshold is not None
        hit = OPS[rule.op](observed, float(rule.threshold))
        why = f"{observed:.4g} {rule.op} {rule.threshold}"
        return Verdict(True, hit, observed, None, None, why, 1.0 if hit else 0.0)
    if len(history) < rule.min_baseline:
        return Verdict(
            False,
            False,
            observed,
            None,
            None,
            f"baseline has {len(history)} windows < min_baseline {rule.min_baseline}",
        )
    base = compute_baseline(history, rule.baseline_method, rule.ewma_alpha)
    assert base is not None
    std = max(base.std, rule.std_floor, 1e-9)
    delta = observed - base.mean
    if rule.model == "gaussian":  # capped like count_z: a zero spread must not print z = 1e10
        z = max(-_Z_CAP, min(_Z_CAP, delta / std))
    elif rule.direction == "both":
        z = count_z(observed, base, rule.model, up=delta >= 0)
    else:
        z = count_z(observed, base, rule.model, up=rule.kind == "spike" and rule.direction == "up")
    big_enough = abs(delta) >= rule.min_delta
    if rule.kind == "spike":
        assert rule.z_score is not None
        signed = {"up": z, "down": -z, "both": abs(z)}[rule.direction]
        level = signed / rule.z_score
        why = f"z={z:.2f} vs {rule.z_score} ({rule.direction}, {rule.model})"
    elif rule.kind == "surge":
        assert rule.factor is not None
        ref = rule.factor * (base.mean if base.mean > 0 else max(rule.min_volume, 1))
        level = observed / ref
        why = f"{observed:.4g} vs {rule.factor}x baseline {base.mean:.4g}"
    else:  # dip
        levels = []
        if rule.drop is not None:
            levels.append(-delta / rule.drop)
        if rule.z_score is not None:
            levels.append(-z / rule.z_score)
        level = min(levels)
        why = f"drop {-delta:.4g} (z={z:.2f})"
    if rule.min_observed > 0 and rule.kind in ("surge", "spike"):
        level = min(level, observed / rule.min_observed)
        why += f", floor {rule.min_observed:g}"
    hit = level >= 1.0 and big_enough
    return Verdict(True, bool(hit), observed, base, z, why, level if big_enough else min(level, 0.0))
