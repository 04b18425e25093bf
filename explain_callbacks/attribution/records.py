"""Plain records passed between the engine, drift tracker, alert rules and sinks.

They are small dataclasses that round-trip through JSON (``to_dict`` / ``from_dict``) so a run
directory, a checkpoint and a DDP gather all carry the same thing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` and numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


_FLOAT_FIELDS = ("delta", "rel_delta", "f_input", "f_baseline")
_LIST_FIELDS = ("scores", "token_scores", "word_scores", "word_shares")


@dataclass
class ProbeAttribution:
    """Layer Integrated Gradients of one probe for one target class.

    ``token_scores`` are per sub-word token (special tokens included, padding excluded);
    ``word_scores`` sum the sub-words of each word; ``word_shares`` are ``word_scores``
    divided by the sum of their absolute values (an L1 share, sign kept), so probes of
    different length and confidence compare. ``delta`` is the signed completeness error
    ``sum(attributions) - (F(x) - F(baseline))`` and ``rel_delta`` is
    ``|delta| / |F(x) - F(baseline)|``. ``n_steps`` is the steps of the final pass: for the
    adaptive trapezoid rule, the points evaluated along the path (every one of them is kept).
    """

    probe_id: str
    text: str
    target: int
    target_name: str
    prediction: Any
    prediction_name: Any
    tokens: list[str]
    token_scores: list[float]
    words: list[str]
    word_scores: list[float]
    word_shares: list[float]
    delta: float
    rel_delta: float
    n_steps: int
    converged: bool
    f_input: float
    f_baseline: float
    text_pair: str | None = None
    label: Any = None
    scores: list[float] = field(default_factory=list)  # the head's outputs (logits) on x
    word_segments: list[int] = field(default_factory=list)  # 0: text, 1: text_pair
    word_token_spans: list[list[int]] = field(default_factory=list)  # [start, end) token index
    truncated: bool = False
    baseline_id: int | None = None  # the token id the baseline puts at non-special positions
    non_finite: list[str] = field(default_factory=list)  # fields written as null: NaN or infinite
    #: comprehensiveness, sufficiency and their random baselines (``attribution.faithfulness``); None when off
    faithfulness: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values: a non-finite number becomes ``None`` and its field is named in
        ``non_finite`` (``rel_delta`` is infinite when F(x) equals F(baseline) but delta is not 0)."""
        out = dataclasses.asdict(self)
        flagged = set(out.get("non_finite") or [])
        for name in _FLOAT_FIELDS:
            value = out.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                flagged.add(name)
        for name in _LIST_FIELDS:
            if any(isinstance(v, float) and not math.isfinite(v) for v in out.get(name) or []):
                flagged.add(name)
        out["non_finite"] = sorted(flagged)
        return json_safe(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeAttribution":
        """Read a record back; a ``None`` number (written for NaN or inf) is read as NaN, or as
        inf for ``rel_delta``, so readers keep comparing floats."""
        data = dict(data)
        for name in _FLOAT_FIELDS:
            if name in data and data[name] is None:
                data[name] = math.inf if name == "rel_delta" else math.nan
        for name in _LIST_FIELDS:
            if data.get(name) is not None:
                data[name] = [math.nan if v is None else v for v in data[name]]
        return _from_dict(cls, data)

    @property
    def key(self) -> tuple[str, int]:
        """Identity across checks: the same probe attributed for the same target."""
        return (self.probe_id, self.target)


@dataclass
class Snapshot:
    """One check: every probe's attributions at one training step."""

    check_index: int
    step: int
    epoch: int | None
    attributions: list[ProbeAttribution]
    timings: dict[str, float] = field(default_factory=dict)
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values (see ``ProbeAttribution.to_dict``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = [a.to_dict() for a in value] if f.name == "attributions" else json_safe(value)
        out["schema_version"] = SCHEMA_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        snap = _from_dict(cls, data)
        snap.attributions = [ProbeAttribution.from_dict(a) for a in data.get("attributions", [])]
        return snap


@dataclass
class Alert:
    """A rule that fired. ``key`` deduplicates: the same key updates, never repeats."""

    rule: str
    severity: str  # "info" | "warning" | "error"
    message: str
    key: str
    token: str | None = None
    first_step: int | None = None
    first_epoch: int | None = None
    first_check: int | None = None
    last_step: int | None = None
    last_epoch: int | None = None
    last_check: int | None = None
    active: bool = True
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Alert":
        return _from_dict(cls, data)


SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2}
FAIL_ON = ("never", "warning", "error")


def severity_rank(severity: Any) -> int:
    """The one severity ordering (the monitor's ``fail_on``, ``explain-callbacks check`` and the
    report all use it). A severity this version does not know ranks above every known one, so
    a gate never passes an event it cannot read."""
    return SEVERITY_ORDER.get(severity, len(SEVERITY_ORDER)) if isinstance(severity, str) else len(SEVERITY_ORDER)


def at_or_above(severity: Any, threshold: str) -> bool:
    """Whether ``severity`` reaches ``threshold`` (a severity, or a ``fail_on`` value: ``"never"``
    is reached by nothing)."""
    return threshold != "never" and severity_rank(severity) >= SEVERITY_ORDER[threshold]


@dataclass
class CheckResult:
    """Everything one check produced, as handed to every sink.

    ``drift`` holds the averaged drift figures (``vs_previous`` / ``vs_reference`` dicts of
    metric name to value, plus chance levels), ``convergence`` the relative-delta figures,
    ``token_table`` the global word table rows, ``new_alerts`` the alerts first raised at
    this check and ``alerts`` every alert so far (updated in place). ``faithfulness`` is the
    check's mean comprehensiveness and sufficiency (:func:`~.faithfulness.faithfulness_summary`,
    empty when off). ``health`` is the
    model's accuracy on the labelled probes and its predictions per class
    (:func:`~explain_callbacks.detection.alerts.probe_health`).
    """

    snapshot: Snapshot
    drift: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    token_table: list[dict[str, Any]] = field(default_factory=list)
    new_alerts: list[Alert] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    schedule_note: str | None = None  # under max_overhead: the share so far and when the next check runs
    faithfulness: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Flat ``attribution/...`` scalars, the same names in every sink."""
        out: dict[str, float] = {}
        for ref in ("vs_previous", "vs_reference"):
            for name, value in (self.drift.get(ref) or {}).items():
                if isinstance(value, (int, float)) and value == value:
                    out[f"attribution/drift/{ref}/{name}"] = float(value)
        for name, value in self.convergence.items():
            if isinstance(value, (int, float)) and value == value:
                out[f"attribution/convergence/{name}"] = float(value)
        for name, value in self.faithfulness.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                out[f"attribution/faithfulness/{name}"] = float(value)
        accuracy = self.health.get("accuracy")
        if isinstance(accuracy, (int, float)) and accuracy == accuracy:
            out["attribution/health/accuracy"] = float(accuracy)
        for name, count in (self.health.get("prediction_counts") or {}).items():
            out[f"attribution/health/predicted/{str(name).replace('/', '_')}"] = float(count)
        out["attribution/alerts/active"] = float(sum(a.active for a in self.alerts))
        out["attribution/alerts/new"] = float(len(self.new_alerts))
        for name, value in self.snapshot.timings.items():
            out[f"attribution/time/{name}"] = float(value)
        return out


DEFAULT_TOP_K = 10


def top_rows(result: CheckResult, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The check's top-k words (``config.top_k`` of the summary), in the order they rank by
    (mean |share|): the words that left the top this check are not among them."""
    top_k = (summary.get("config") or {}).get("top_k")
    top_k = top_k if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0 else DEFAULT_TOP_K
    return [row for row in result.token_table if not row.get("left")][:top_k]
