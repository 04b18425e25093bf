"""Convergence figures of one check: how close each integral came to completeness."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from explain_callbacks.attribution.records import ProbeAttribution


def convergence_summary(attributions: Sequence[ProbeAttribution]) -> dict[str, Any]:
    """Mean, p95 and max relative delta, the share converged, and the steps used."""
    if not attributions:
        return {}
    rel = np.array([a.rel_delta if math.isfinite(a.rel_delta) else np.inf for a in attributions])
    finite = rel[np.isfinite(rel)]
    steps = np.array([a.n_steps for a in attributions])
    return {
        "mean_rel_delta": float(finite.mean()) if finite.size else float("nan"),
        "p95_rel_delta": float(np.percentile(rel, 95)) if finite.size == rel.size else float("inf"),
        "max_rel_delta": float(rel.max()),
        "share_converged": float(np.mean([a.converged for a in attributions])),
        "n_unconverged": int(sum(not a.converged for a in attributions)),
        "mean_steps": float(steps.mean()),
        "max_steps_used": int(steps.max()),
    }
