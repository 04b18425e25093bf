"""Hand-built run directories for the report and CLI tests.

Each file is written the way the run-directory sink writes it: ``probes.jsonl`` by
``ProbeSet.to_jsonl``, ``attributions.jsonl`` one ``Snapshot.to_dict()`` a line, ``summary.json``
per the schema in the design notes. Texts and words include HTML and rich-markup attacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import SCHEMA_VERSION, Alert, ProbeAttribution, Snapshot

SCRIPT = "<script>alert(1)</script>"
ATTR_BREAK = '"><img src=x onerror=alert(2)>'
MARKUP = "[bold]loud[/bold][/]"
DOLLAR = "$x^"  # would be mathtext (and a parse error) if matplotlib read it as math

PROBES = [
    {"id": "p0", "text": f"the movie was great {SCRIPT}", "label": 1},
    {"id": "p1", "text": f"bad film {ATTR_BREAK}", "label": 0},
    {"id": "p2", "text": f"costs {DOLLAR} {MARKUP}", "label": 1, "text_pair": "fine print"},
]

WORDS = {
    "p0": ["the", "movie", "was", "great", SCRIPT],
    "p1": ["bad", "film", ATTR_BREAK],
    "p2": ["costs", DOLLAR, MARKUP, "fine", "print"],
}
SEGMENTS = {"p2": [0, 0, 0, 1, 1]}


def make_attribution(probe: dict[str, Any], check_index: int) -> ProbeAttribution:
    """A plausible attribution: the last word of the text gains share as training goes on."""
    words = WORDS[probe["id"]]
    n = len(words)
    scores = [0.1 * ((i % 3) - 1) for i in range(n)]
    scores[n - 1 if probe["id"] != "p2" else 2] = 0.2 + 0.1 * check_index
    total = sum(abs(s) for s in scores) or 1.0
    target = int(probe["label"])
    return ProbeAttribution(
        probe_id=probe["id"],
        text=probe["text"],
        target=target,
        target_name=["neg", "pos"][target],
        prediction=target,
        prediction_name=["neg", "pos"][target],
        tokens=["[CLS]", *words, "[SEP]"],
        token_scores=[0.0, *scores, 0.0],
        words=list(words),
        word_scores=scores,
        word_shares=[s / total for s in scores],
        delta=0.001,
        rel_delta=0.01 * (check_index + 1),
        n_steps=32,
        converged=check_index % 2 == 0,
        f_input=1.0,
        f_baseline=0.1,
        text_pair=probe.get("text_pair"),
        label=probe["label"],
        scores=[0.1, 0.9],
        word_segments=SEGMENTS.get(probe["id"], [0] * n),
        word_token_spans=[[i + 1, i + 2] for i in range(n)],
    )


def make_snapshot(check_index: int) -> Snapshot:
    return Snapshot(
        check_index=check_index,
        step=10 * (check_index + 1),
        epoch=check_index,
        attributions=[make_attribution(p, check_index) for p in PROBES],
        timings={"attribute_s": 0.5, "total_s": 0.6},
        created_at=1700000000.0 + check_index,
    )


def _drift(value: float | None) -> dict[str, Any]:
    metrics = ("jaccard", "rbo", "kendall_tau", "cosine")
    return {name: value for name in metrics}


def summary_check(check_index: int) -> dict[str, Any]:
    first = check_index == 0
    return {
        "check_index": check_index,
        "step": 10 * (check_index + 1),
        "epoch": check_index,
        "drift": {
            "vs_previous": _drift(None if first else 0.5 + 0.02 * check_index),
            "vs_reference": _drift(1.0 if first else 0.9 - 0.02 * check_index),
            "chance_jaccard": 0.2,
        },
        "convergence": {
            "mean_rel_delta": 0.01 * (check_index + 1),
            "p95_rel_delta": 0.02 * (check_index + 1),
            "max_rel_delta": 0.03 * (check_index + 1),
            "share_converged": 0.5,
            "mean_steps": 32.0,
            "max_steps_used": 64,
            "n_unconverged": 1,
        },
        "top_tokens": [
            {"word": SCRIPT, "mean_share": 0.3, "sum_share": 0.3, "n_probes": 1, "rank": 1},
            {"word": MARKUP, "mean_share": 0.2, "sum_share": 0.2, "n_probes": 1, "rank": 2},
            {"word": "great", "mean_share": 0.1, "sum_share": 0.1, "n_probes": 1, "rank": 3},
        ],
        "entered": [SCRIPT] if first else [],
        "left": [],
        "timings": {"attribute_s": 0.5, "total_s": 0.6},
    }


def make_alert(severity: str = "warning", active: bool = True, rule: str = "watch_token") -> Alert:
    return Alert(
        rule=rule,
        severity=severity,
        message=f"the model leans on {ATTR_BREAK} {MARKUP}",
        key=f"{rule}:{SCRIPT}",
        token=SCRIPT,
        first_step=20,
        first_epoch=1,
        first_check=1,
        last_step=30,
        last_epoch=2,
        last_check=2,
        active=active,
        evidence={"mean_share": 0.3, "probes": [SCRIPT, ATTR_BREAK], "note": MARKUP},
    )


def write_run_dir(
    path: Path,
    n_checks: int = 3,
    alerts: list[Alert] | None = None,
    status: str = "finished",
    write_attributions: bool = True,
    **summary_overrides: Any,
) -> Path:
    """A complete run directory with ``n_checks`` checks; summary keys can be overridden."""
    path.mkdir(parents=True, exist_ok=True)
    probes = ProbeSet(PROBES)
    probes.to_jsonl(path / "probes.jsonl")
    if write_attributions:
        with open(path / "attributions.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n_checks):
                fh.write(json.dumps(make_snapshot(i).to_dict(), ensure_ascii=False) + "\n")
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_name": f"run {SCRIPT}",
        "status": status,
        "probe_fingerprint": probes.fingerprint,
        "n_probes": len(probes),
        "config": {"every_n_epochs": 1, "top_k": 5, "watch_tokens": [SCRIPT]},
        "checks": [summary_check(i) for i in range(n_checks)],
        "alerts": [a.to_dict() for a in alerts or []],
        "candidates": [{"word": ATTR_BREAK, "score": 0.8, "evidence": {"label_corr": 0.9, "why": SCRIPT}}],
        "stabilisation": {"check_index": 1, "step": 20, "epoch": 1} if n_checks > 1 else None,
        "trajectories": {
            SCRIPT: [0.1 + 0.1 * i for i in range(n_checks)],
            DOLLAR: [None] + [0.05] * (n_checks - 1) if n_checks else [],
            MARKUP: [0.2] * n_checks,
        },
    }
    summary.update(summary_overrides)
    (path / "summary.json").write_text(json.dumps(summary, ensure_ascii=False), encoding="utf-8")
    return path
