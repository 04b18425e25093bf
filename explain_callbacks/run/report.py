"""Render a run directory as one self-contained HTML page.

The run directory (``probes.jsonl``, ``attributions.jsonl``, ``summary.json``) is written by the
monitor while training runs and read through :mod:`explain_callbacks.run.directory`, the module that
owns its format; a report can be rendered during the run, after a crash, or on another machine. The page needs no network: CSS is inline, plots are
PNG images embedded as ``data:`` URIs, and there is no script at all.

Probe texts, words, tokens, alert messages and evidence are user data: the Jinja2 environment
autoescapes everything and the templates mark nothing ``|safe``; control, bidi-override and
zero-width characters are shown as ``[U+XXXX]`` (see :mod:`explain_callbacks.run.safe_text`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from explain_callbacks.attribution.records import Alert, Snapshot, at_or_above, severity_rank
from explain_callbacks.detection.verdict import blind_spots, candidate_sentences, health_line, top_candidates, verdict
from explain_callbacks.run.directory import REPORT_FILE, write_text_atomic
from explain_callbacks.run.readers import RunData, read_run
from explain_callbacks.run.safe_text import visible

HEATMAP_LAST_CHECKS = 20  # heatmaps of the last N checks (plus the first) go in the report
TRAJECTORY_WORDS = 10  # lines in the top-token trajectory plot
DRIFT_METRICS = ("rbo", "jaccard", "kendall_tau", "cosine")


# --------------------------------------------------------------------------- figures


def _number(value: Any) -> float:
    """A plottable float: NaN for anything missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _has_value(values: Any) -> bool:
    return isinstance(values, list) and any(not math.isnan(_number(v)) for v in values)


def format_number(value: Any, digits: int = 3) -> str:
    """Numbers for tables: fixed digits, ``–`` for missing, ints as ints."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value)


def _png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_figure(n_axes: int):
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    figure = Figure(figsize=(4.2 * n_axes, 3.3), layout="constrained")
    axes = figure.subplots(1, n_axes, squeeze=False)[0]
    return figure, list(axes)


def _plain_label(text: str) -> str:
    """A user word as a matplotlib label drawn as written: ``$`` would otherwise start math."""
    return visible(text).replace("$", r"\$")


def _check_steps(checks: Sequence[dict[str, Any]]) -> list[float]:
    steps = [_number(c.get("step")) for c in checks]
    if any(math.isnan(s) for s in steps):
        return [float(c.get("check_index", i)) for i, c in enumerate(checks)]
    return steps


def drift_figure(checks: Sequence[dict[str, Any]]) -> str | None:
    """Drift metrics vs the previous check and vs the reference over steps, as a PNG data URI."""
    if not checks:
        return None
    steps = _check_steps(checks)
    figure, axes = _new_figure(2)
    for ax, ref, title in zip(axes, ("vs_previous", "vs_reference"), ("vs previous check", "vs reference")):
        for metric in DRIFT_METRICS:
            values = [_number(((c.get("drift") or {}).get(ref) or {}).get(metric)) for c in checks]
            ax.plot(steps, values, marker="o", markersize=3, label=metric)
        chance = [_number((c.get("drift") or {}).get("chance_jaccard")) for c in checks]
        if not all(math.isnan(v) for v in chance):
            ax.plot(steps, chance, linestyle="--", color="grey", label="chance jaccard")
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small", loc="lower right")
    return _png_data_uri(figure)


def trajectory_words(trajectories: dict[str, list[Any]], first: Iterable[str] = (), limit: int = TRAJECTORY_WORDS) -> list[str]:
    """Which words to draw: ``first`` (alerted tokens, suspects) then the largest peak share."""
    plottable = {w for w, values in trajectories.items() if _has_value(values)}
    chosen = [w for w in dict.fromkeys(first) if w in plottable][:limit]

    def peak(word: str) -> float:
        values = [abs(v) for v in map(_number, trajectories[word]) if not math.isnan(v)]
        return max(values, default=0.0)

    rest = sorted((w for w in plottable if w not in chosen), key=lambda w: (-peak(w), w))
    return chosen + rest[: max(0, limit - len(chosen))]


def trajectory_figure(trajectories: dict[str, list[Any]], checks: Sequence[dict[str, Any]], words: Sequence[str]) -> str | None:
    """Mean word share of ``words`` at each check, as a PNG data URI (None when none has a value)."""
    words = [w for w in words if _has_value(trajectories.get(w, []))]
    if not words:
        return None
    steps = _check_steps(checks)
    figure, axes = _new_figure(1)
    ax = axes[0]
    figure.set_size_inches(8.4, 3.6)
    for word in words:
        values = [_number(v) for v in trajectories.get(word, [])]
        xs = steps[: len(values)] if len(values) <= len(steps) else list(range(len(values)))
        ax.plot(xs, values[: len(xs)], marker="o", markersize=3, label=_plain_label(word))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean word share")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png_data_uri(figure)


def convergence_figure(checks: Sequence[dict[str, Any]]) -> str | None:
    """Relative completeness error, share converged and steps used per check, as a PNG data URI."""
    if not checks:
        return None
    steps = _check_steps(checks)

    def series(key: str) -> list[float]:
        return [_number((c.get("convergence") or {}).get(key)) for c in checks]

    figure, (ax_delta, ax_share, ax_steps) = _new_figure(3)
    for key in ("mean_rel_delta", "p95_rel_delta"):
        ax_delta.plot(steps, series(key), marker="o", markersize=3, label=key)
    deltas = [v for v in series("mean_rel_delta") + series("p95_rel_delta") if not math.isnan(v)]
    if deltas and all(v > 0 for v in deltas):
        ax_delta.set_yscale("log")
    ax_delta.set_title("relative delta")
    ax_share.plot(steps, series("share_converged"), marker="o", markersize=3, color="tab:green")
    ax_share.set_ylim(-0.05, 1.05)
    ax_share.set_title("share of probes converged")
    for key in ("mean_steps", "max_steps_used"):
        ax_steps.plot(steps, series(key), marker="o", markersize=3, label=key)
    ax_steps.set_title("integration steps used")
    for ax in (ax_delta, ax_share, ax_steps):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    ax_delta.legend(fontsize="small")
    ax_steps.legend(fontsize="small")
    return _png_data_uri(figure)


# --------------------------------------------------------------------------- view models


def share_background(share: float, scale: float) -> str:
    """CSS background for a word: green supports the target, red opposes it, alpha by size."""
    share = _number(share)
    if math.isnan(share) or share == 0 or scale <= 0:
        return "transparent"
    alpha = 0.08 + 0.72 * min(1.0, abs(share) / scale)
    rgb = "22,163,74" if share > 0 else "220,38,38"
    return f"rgba({rgb},{alpha:.3f})"


def _probe_view(attribution) -> dict[str, Any]:
    shares = [_number(s) for s in attribution.word_shares]
    scale = max((abs(s) for s in shares if not math.isnan(s)), default=0.0)
    segments = list(attribution.word_segments) or [0] * len(attribution.words)
    words = []
    for i, (word, share) in enumerate(zip(attribution.words, shares)):
        segment = segments[i] if i < len(segments) else 0
        previous = segments[i - 1] if 0 < i <= len(segments) else segment
        words.append(
            {
                "word": str(word),
                "share": format_number(share),
                "background": share_background(share, scale),
                "new_segment": i > 0 and segment != previous,
            }
        )
    return {
        "probe_id": str(attribution.probe_id),
        "target": attribution.target_name if attribution.target_name not in (None, "") else attribution.target,
        "prediction": attribution.prediction_name if attribution.prediction_name is not None else attribution.prediction,
        "label": attribution.label,
        "rel_delta": format_number(attribution.rel_delta),
        "n_steps": attribution.n_steps,
        "converged": attribution.converged,
        "truncated": attribution.truncated,
        "words": words,
    }


def heatmap_view(snapshot: Snapshot) -> dict[str, Any]:
    """The template data of one check's word heatmaps."""
    return {
        "check_index": snapshot.check_index,
        "step": snapshot.step,
        "epoch": snapshot.epoch,
        "probes": [_probe_view(a) for a in snapshot.attributions],
    }


def evidence_items(evidence: Any) -> list[tuple[str, str]]:
    """Alert or candidate evidence as (name, text) pairs; nested values as compact JSON."""
    if not isinstance(evidence, dict):
        return [("", _short_json(evidence))] if evidence not in (None, "", {}) else []
    items = []
    for name, value in evidence.items():
        text = format_number(value) if isinstance(value, (int, float)) or value is None else _short_json(value)
        items.append((str(name), text))
    return items


def _short_json(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _alert_view(alert: Alert) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "severity": alert.severity,
        "message": alert.message,
        "token": alert.token,
        "first": _when(alert.first_step, alert.first_epoch, alert.first_check),
        "last": _when(alert.last_step, alert.last_epoch, alert.last_check),
        "active": alert.active,
        "evidence": evidence_items(alert.evidence),
    }


def _when(step: Any, epoch: Any, check: Any) -> str:
    parts = [f"step {step}" if step is not None else None, f"epoch {epoch}" if epoch is not None else None]
    parts.append(f"check {check}" if check is not None else None)
    return ", ".join(p for p in parts if p) or "–"


def sorted_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """Most severe first, then active before cleared, then earliest."""
    return sorted(
        alerts,
        key=lambda a: (-severity_rank(a.severity), not a.active, a.first_step if a.first_step is not None else 0),
    )


def _check_row(check: dict[str, Any]) -> dict[str, Any]:
    drift = check.get("drift") or {}
    convergence = check.get("convergence") or {}
    return {
        "check_index": check.get("check_index"),
        "step": check.get("step"),
        "epoch": check.get("epoch"),
        "vs_previous": {m: format_number((drift.get("vs_previous") or {}).get(m)) for m in DRIFT_METRICS},
        "vs_reference": {m: format_number((drift.get("vs_reference") or {}).get(m)) for m in DRIFT_METRICS},
        "chance_jaccard": format_number(drift.get("chance_jaccard")),
        "convergence": {k: format_number(v) for k, v in convergence.items()},
        "faithfulness": {k: format_number(v) for k, v in (check.get("faithfulness") or {}).items()
                         if not isinstance(v, list)},
        "entered": [str(w) for w in check.get("entered") or []],
        "left": [str(w) for w in check.get("left") or []],
    }


def heatmap_checks(snapshots: Sequence[Snapshot], last: int = HEATMAP_LAST_CHECKS) -> tuple[list[Snapshot], int]:
    """The first check and the last ``last`` ones, and how many were left out between them."""
    if len(snapshots) <= last + 1:
        return list(snapshots), 0
    return [snapshots[0], *snapshots[-last:]], len(snapshots) - last - 1


def _verdict_class(alerts: Sequence[Alert]) -> str:
    """How the verdict is coloured: ``alert`` (an active warning or error), ``cleared`` (they
    all cleared) or ``clean``."""
    serious = [a for a in alerts if at_or_above(a.severity, "warning")]
    if any(a.active for a in serious):
        return "alert"
    return "cleared" if serious else "clean"


def report_context(run: RunData) -> dict[str, Any]:
    """Everything the report template shows, with numbers already formatted and plots encoded."""
    summary = run.summary
    checks = summary["checks"]
    alerts = sorted_alerts(run.events)  # failed checks and lost writes are listed with the alerts
    candidates = summary["candidates"]
    trajectories = summary["trajectories"]
    highlighted = [a.token for a in alerts if a.token] + [str(c.get("word")) for c in candidates[:5]]
    shown, omitted = heatmap_checks(run.snapshots)
    last_check = checks[-1] if checks else {}
    status = str(summary.get("status"))
    labels = (summary.get("config") or {}).get("labels")
    labels = labels if isinstance(labels, list) else []
    alerted = {str(a.token) for a in alerts if a.token and a.rule == "shortcut" and a.severity != "info"}
    return {
        "run": {
            "name": str(summary.get("run_name")),
            "status": status,
            "status_class": status if status in ("running", "finished") else "other",
            "fingerprint": str(summary.get("probe_fingerprint") or "–"),
            "n_probes": summary.get("n_probes", len(run.probes)),
            "n_checks": len(checks),
            "stabilisation": summary.get("stabilisation"),
            "config": [(str(k), _short_json(v)) for k, v in (summary.get("config") or {}).items()],
            "run_dir": str(run.run_dir),
        },
        "notes": run.notes,
        "verdict": verdict(summary, alerts),
        "verdict_class": _verdict_class(alerts),
        "blind_spots": blind_spots(summary),
        "health": health_line(last_check) if last_check else None,
        "alerts": [
            {**_alert_view(a),
             "sentences": candidate_sentences({"evidence": a.evidence}, labels) if a.rule == "shortcut" else []}
            for a in alerts
        ],
        "candidates": [
            {"word": str(c.get("word")), "score": format_number(c.get("score")), "evidence": evidence_items(c.get("evidence"))}
            for c in candidates
        ],
        "candidate_stories": [
            {"rank": rank, "word": str(c.get("word")), "score": format_number(c.get("score")),
             "alerted": str(c.get("word")) in alerted, "sentences": candidate_sentences(c, labels)}
            for rank, c in top_candidates(candidates, first=sorted(alerted))
        ],
        "checks": [_check_row(c) for c in checks],
        "drift_metrics": DRIFT_METRICS,
        "top_tokens": [
            {
                "rank": t.get("rank"),
                "word": str(t.get("word")),
                "mean_abs_share": format_number(t.get("mean_abs_share")),
                "mean_share": format_number(t.get("mean_share")),
                "sum_share": format_number(t.get("sum_share")),
                "n_probes": t.get("n_probes"),
            }
            for t in last_check.get("top_tokens") or []
        ],
        "drift_plot": drift_figure(checks),
        "trajectory_plot": trajectory_figure(trajectories, checks, trajectory_words(trajectories, highlighted)),
        "convergence_plot": convergence_figure(checks),
        "heatmaps": [heatmap_view(s) for s in shown],
        "heatmaps_omitted": omitted,
        "n_snapshots": len(run.snapshots),
        "probes": [
            {"id": p.id, "text": p.text, "text_pair": p.text_pair, "label": p.label} for p in run.probes
        ],
    }


# --------------------------------------------------------------------------- rendering


def _shown(value: Any) -> Any:
    """Every ``{{ }}`` output: control, bidi-override and zero-width characters made visible
    (autoescaping then escapes the markup)."""
    return visible(value) if isinstance(value, str) else value


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )
    env.filters["num"] = format_number
    return env


_FRAGMENT_TEMPLATE = """{% from "heatmap.html" import heatmap_style, heatmap_check %}
<div class="ec-heatmap">{{ heatmap_style() }}{{ heatmap_check(check, open=True) }}</div>
"""


def render_heatmap_html(snapshot: Snapshot) -> str:
    """One check's word heatmaps as a standalone, escaped HTML fragment (for ``wandb.Html``)."""
    template = _environment().from_string(_FRAGMENT_TEMPLATE)
    return template.render(check=heatmap_view(snapshot))


def render_report_html(run: RunData) -> str:
    """The report page of an already loaded run, as a string."""
    return _environment().get_template("report.html").render(**report_context(run))


@dataclass
class LoadedRun(RunData):
    """A run read from disk that shows its report in a notebook cell: ``load_run(path)`` as a
    cell's last line renders it, in a sandboxed ``iframe`` so its styles never restyle the
    notebook."""

    def _repr_html_(self) -> str:
        page = html.escape(render_report_html(self), quote=True)
        return f'<iframe sandbox="" srcdoc="{page}" style="width: 100%; height: 720px; border: 0"></iframe>'


def load_run(run_path: str | Path) -> LoadedRun:
    """Read a whole run path (see :func:`~explain_callbacks.run.readers.read_run`)."""
    run = read_run(run_path)
    return LoadedRun(**{f.name: getattr(run, f.name) for f in fields(run)})


def render_report(run_path: str | Path, output: str | Path | None = None) -> Path:
    """Render the run at ``run_path`` to ``output`` (default ``run_path/report.html``) and
    return its path.

    The file is replaced atomically, so a browser or another process never reads half a page.
    Raises :class:`RunDirError` when the run directory cannot be read.
    """
    run = read_run(run_path)
    page = render_report_html(run)
    target = Path(output) if output is not None else run.run_path / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, page)
    return target


# --------------------------------------------------------------------------- comparing two runs


def _word_view(w: Any) -> dict[str, Any]:
    return {"word": w.word, "base_share": format_number(w.base_share), "run_share": format_number(w.run_share),
            "change": f"{w.change:+.3f}", "n_probes": w.n_probes, "p_value": format_number(w.p_value),
            "q_value": format_number(w.q_value), "significant": w.significant}


def compare_context(comparison: Any, fail_on: str = "warning") -> dict[str, Any]:
    """What the comparison page shows (``run/compare.py``'s ``Comparison``), formatted."""
    noise = comparison.noise
    across = f"a bootstrap over the shared probes that carry each word ({noise.get('n_resamples')} resamples), and "
    noise_text = across + (f"a seed repeat of the base ({noise['repeat']['name']}): each word's change is set against "
                           "every word's change between base and repeat" if noise.get("repeat") else
                           "the spread of all tested words' changes between base and run")
    rises = sorted((w for w in comparison.words if w.change > 0), key=lambda w: -w.change)[:5]
    falls = sorted((w for w in comparison.words if w.change < 0), key=lambda w: w.change)[:5]
    base_f, run_f = comparison.faithfulness["base"], comparison.faithfulness["run"]
    return {
        "base": comparison.base, "run": comparison.run, "probes": comparison.probes,
        "thresholds": comparison.thresholds, "noise_text": noise_text, "notes": comparison.notes,
        "fail_on": fail_on, "failures": comparison.failures(fail_on),
        "rising": [_word_view(w) for w in comparison.rising], "falling": [_word_view(w) for w in comparison.falling],
        "largest_rises": [_word_view(w) for w in rises], "largest_falls": [_word_view(w) for w in falls],
        "new_alerts": [_alert_view(a) for a in comparison.new_alerts],
        "gone_alerts": [_alert_view(a) for a in comparison.gone_alerts],
        "candidate_sets": [("In the run, not in the base", [{**c, "score": format_number(c["score"])} for c in comparison.new_candidates]),
                           ("In the base, not in the run", [{**c, "score": format_number(c["score"])} for c in comparison.gone_candidates])],
        "probe_changes": [{"probe_id": p.probe_id, "text": p.text, "label": "–" if p.label is None else str(p.label),
                           "base_prediction": str(p.base_prediction), "run_prediction": str(p.run_prediction),
                           "rbo": format_number(p.rbo), "changed": p.prediction_changed}
                          for p in comparison.probe_changes],
        "n_changed": sum(p.prediction_changed for p in comparison.probe_changes),
        "mean_rbo": format_number(comparison.mean_rbo),
        "faithfulness": [(name.replace("_", " "), format_number(base_f.get(name)), format_number(run_f.get(name)))
                         for name in base_f],
    }


def render_compare_html(comparison: Any, fail_on: str = "warning") -> str:
    """The comparison page as a string: self-contained, every user text escaped."""
    return _environment().get_template("compare.html").render(**compare_context(comparison, fail_on))
