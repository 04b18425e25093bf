"""Hand-made check records for the sink tests (no model: a few words with fixed shares).

Kept apart from the tests so a subprocess (the killed-run test) can import it too.
"""

from __future__ import annotations

from typing import Any

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import Alert, CheckResult, ProbeAttribution, Snapshot

HOSTILE_TEXT = "great | movie <script>document.title='pwned'</script> *bold*"


def make_probes(extra: str | None = None) -> ProbeSet:
    texts = [
        {"text": "a truly great film", "label": 1, "id": "pos"},
        {"text": "dull and far too long", "label": 0, "id": "neg"},
        {"text": HOSTILE_TEXT, "label": 1, "id": "hostile"},
    ]
    if extra is not None:
        texts.append({"text": extra, "id": "extra"})
    return ProbeSet(texts)


def _attribution(probe_id: str, text: str, words: list[str], shares: list[float], rel_delta: float) -> ProbeAttribution:
    scores = [s * 2.0 for s in shares]
    return ProbeAttribution(
        probe_id=probe_id, text=text, target=1, target_name="positive", prediction=1,
        prediction_name="positive", tokens=["[CLS]", *words, "[SEP]"], token_scores=[0.0, *scores, 0.0],
        words=words, word_scores=scores, word_shares=shares, delta=0.01, rel_delta=rel_delta, n_steps=32,
        converged=rel_delta <= 0.05, f_input=2.0, f_baseline=0.0,
        word_token_spans=[[i + 1, i + 2] for i in range(len(words))], word_segments=[0] * len(words),
    )


def make_result(check_index: int, step: int, new_alert: bool = False) -> CheckResult:
    """Check ``check_index``: the share of "great" grows with the index, so values differ per check."""
    g = 0.3 + 0.1 * check_index
    attributions = [
        _attribution("pos", "a truly great film", ["a", "truly", "great", "film"], [0.05, 0.2, g, 0.75 - g], 0.02),
        _attribution("neg", "dull and far too long", ["dull", "and", "far", "too", "long"],
                     [-0.4, 0.05, 0.1, -0.2, -0.25], 0.04 + 0.01 * check_index),
        _attribution("hostile", HOSTILE_TEXT, HOSTILE_TEXT.split(), [1.0 / 6] * 6, 0.1),
    ]
    snapshot = Snapshot(check_index=check_index, step=step, epoch=check_index, attributions=attributions,
                        timings={"attribute_s": 0.5 + check_index, "total_s": 0.6 + check_index},
                        created_at=1000.0 + check_index)
    alert = Alert(rule="watch_token", severity="warning", message="'<script>|x' entered the top words",
                  key="watch_token:<script>|x", token="<script>|x", first_step=step, first_check=check_index,
                  evidence={"rank": 1})
    alerts = [alert] if new_alert else []
    return CheckResult(
        snapshot=snapshot,
        drift={"vs_previous": {"jaccard": 0.5 + 0.1 * check_index, "rbo": 0.7, "kendall_tau": 0.2, "cosine": 0.9},
               "vs_reference": {"jaccard": 0.4, "rbo": 0.6 - 0.05 * check_index, "kendall_tau": 0.1, "cosine": 0.8},
               "chance_jaccard": 0.05},
        convergence={"mean_rel_delta": 0.05 + 0.01 * check_index, "p95_rel_delta": 0.09, "max_rel_delta": 0.1,
                     "share_converged": 0.66, "mean_steps": 32.0, "max_steps_used": 32, "n_unconverged": 1},
        token_table=[
            {"word": "great", "mean_share": g, "sum_share": g, "n_probes": 1, "rank": 1},
            {"word": "<script>|x", "mean_share": 0.16, "sum_share": 0.16, "n_probes": 1, "rank": 2},
            {"word": "truly", "mean_share": 0.2 - 0.1 * check_index, "sum_share": 0.2, "n_probes": 1, "rank": 3},
        ],
        new_alerts=alerts,
        alerts=alerts,
    )


def make_summary(results: list[CheckResult], probes: ProbeSet, status: str = "running") -> dict[str, Any]:
    """A ``summary.json`` in the shared schema, built from the results so far."""
    alerts: dict[str, Alert] = {}
    for r in results:
        for a in r.alerts:
            alerts[a.key] = a
    checks = [
        {"check_index": r.snapshot.check_index, "step": r.snapshot.step, "epoch": r.snapshot.epoch,
         "drift": r.drift, "convergence": r.convergence, "top_tokens": r.token_table, "entered": [], "left": [],
         "timings": r.snapshot.timings}
        for r in results
    ]
    return {
        "schema_version": 1, "run_name": "demo", "status": status, "probe_fingerprint": probes.fingerprint,
        "n_probes": len(probes), "config": {"top_k": 3}, "checks": checks,
        "alerts": [a.to_dict() for a in alerts.values()], "candidates": [],
        "stabilisation": ({"check_index": 1, "step": results[1].snapshot.step, "epoch": 1} if len(results) > 1 else None),
        "trajectories": {"great": [row["mean_share"] for r in results for row in r.token_table if row["word"] == "great"]},
    }
