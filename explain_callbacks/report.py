"""Read a run directory and render it as one self-contained HTML page.

The run directory (``probes.jsonl``, ``attributions.jsonl``, ``summary.json``) is written by the
monitor while training runs; this module only reads it, so a report can be rendered during the
run, after a crash, or on another machine. The page needs no network: CSS is inline, plots are
PNG images embedded as ``data:`` URIs, and there is no script at all.

Probe texts, words, tokens, alert messages and evidence are user data: the Jinja2 environment
autoescapes everything and the templates mark nothing ``|safe``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .probes import Probe, ProbeError, ProbeSet
from .records import SCHEMA_VERSION, SEVERITY_ORDER, Alert, Snapshot
from .sinks.run_dir import ATTRIBUTIONS_FILE, PROBES_FILE, REPORT_FILE, SUMMARY_FILE

HEATMAP_LAST_CHECKS = 20  # heatmaps of the last N checks (plus the first) go in the report
TRAJECTORY_WORDS = 10  # lines in the top-token trajectory plot
DRIFT_METRICS = ("rbo", "jaccard", "kendall_tau", "cosine")


class RunDirError(ValueError):
    """A run directory that cannot be read. The message is one line naming the file and the fix."""


# --------------------------------------------------------------------------- reading


@dataclass
class RunData:
    """Everything a run directory holds, parsed. ``notes`` say what was tolerated."""

    run_dir: Path
    summary: dict[str, Any]
    probes: list[Probe]
    snapshots: list[Snapshot]
    notes: list[str] = field(default_factory=list)

    @property
    def alerts(self) -> list[Alert]:
        return [Alert.from_dict(a) for a in self.summary["alerts"]]


def _list_of_objects(summary: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = summary.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RunDirError(f"{path}: '{key}' must be a list of objects; the file is damaged, rerun the check.")
    return value


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``summary.json``; missing optional keys get empty defaults.

    Raises :class:`RunDirError` for a missing directory or file, invalid JSON, a schema version
    this package does not read, or malformed checks / alerts / candidates.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"run directory {run_dir} does not exist.")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a directory; pass the run directory that holds summary.json.")
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} has no {SUMMARY_FILE}; is it a run directory written by explain-callbacks "
            "(the monitor's run_dir)?"
        )
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunDirError(f"{path} is not UTF-8 text; the file is damaged.") from None
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); the file is damaged.") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path} holds a JSON {type(summary).__name__}, expected an object.")
    version = summary.get("schema_version")
    if version is None:
        raise RunDirError(f"{path} has no schema_version; it was not written by explain-callbacks.")
    if version != SCHEMA_VERSION:
        raise RunDirError(
            f"{path} has schema_version {version!r}, this explain-callbacks reads {SCHEMA_VERSION}; "
            "use the explain-callbacks version that wrote the run."
        )
    summary = dict(summary)
    summary["checks"] = _list_of_objects(summary, "checks", path)
    summary["candidates"] = _list_of_objects(summary, "candidates", path)
    alerts = _list_of_objects(summary, "alerts", path)
    for i, raw in enumerate(alerts):
        try:
            Alert.from_dict(raw)
        except TypeError:
            raise RunDirError(
                f"{path}: alerts[{i}] lacks a required field (rule, severity, message, key); the file is damaged."
            ) from None
        if raw["severity"] not in SEVERITY_ORDER:
            raise RunDirError(
                f"{path}: alerts[{i}] has unknown severity {raw['severity']!r}; expected one of "
                f"{', '.join(SEVERITY_ORDER)}."
            )
    summary["alerts"] = alerts
    trajectories = summary.get("trajectories") or {}
    if not isinstance(trajectories, dict):
        raise RunDirError(f"{path}: 'trajectories' must be an object of word to share list.")
    summary["trajectories"] = trajectories
    summary.setdefault("run_name", run_dir.name)
    summary.setdefault("status", "unknown")
    summary.setdefault("config", {})
    summary.setdefault("stabilisation", None)
    return summary


def read_snapshots(path: str | Path) -> tuple[list[Snapshot], list[str]]:
    """Read ``attributions.jsonl``: one :class:`Snapshot` a line, ordered by check index.

    A run killed while writing leaves an incomplete last line: it is skipped and a note says
    so. A bad line anywhere else means a damaged file and raises :class:`RunDirError`. When a
    resumed run wrote the same check twice, the later line wins.
    """
    path = Path(path)
    if not path.is_file():
        return [], [f"{path.name} is missing; no heatmaps."]
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = [(n, line) for n, line in enumerate(fh, 1) if line.strip()]
    notes: list[str] = []
    by_index: dict[int, Snapshot] = {}
    for pos, (n, line) in enumerate(lines):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            if pos == len(lines) - 1:
                notes.append(
                    f"{path.name} line {n} is incomplete (the run was probably killed while writing it); skipped."
                )
                break
            raise RunDirError(f"{path}:{n}: not valid JSON ({err.msg}); the file is damaged.") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{path}:{n}: expected a snapshot object, got {type(data).__name__}.")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise RunDirError(
                f"{path}:{n}: schema_version {version!r}, this explain-callbacks reads {SCHEMA_VERSION}."
            )
        try:
            snapshot = Snapshot.from_dict(data)
        except (TypeError, AttributeError):
            raise RunDirError(f"{path}:{n}: not a snapshot (a required field is missing); the file is damaged.") from None
        by_index[snapshot.check_index] = snapshot
    return [by_index[i] for i in sorted(by_index)], notes


def read_probes(path: str | Path) -> list[Probe]:
    """Read ``probes.jsonl``; a missing file gives no probes, a damaged one raises."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        return list(ProbeSet.from_file(path))
    except ProbeError as err:
        raise RunDirError(f"{path}: {err}") from None


def load_run(run_dir: str | Path) -> RunData:
    """Read a whole run directory (see :func:`load_summary` and :func:`read_snapshots`)."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    snapshots, notes = read_snapshots(run_dir / ATTRIBUTIONS_FILE)
    probes = read_probes(run_dir / PROBES_FILE)
    if summary["status"] == "running":
        notes.insert(0, "The run has not finished (status 'running'): it is still going or was killed.")
    return RunData(run_dir=run_dir, summary=summary, probes=probes, snapshots=snapshots, notes=notes)


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
    return text.replace("$", r"\$")


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
        "error": snapshot.error,
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
        key=lambda a: (-SEVERITY_ORDER.get(a.severity, 0), not a.active, a.first_step if a.first_step is not None else 0),
    )


def _check_row(check: dict[str, Any]) -> dict[str, Any]:
    drift = check.get("drift") or {}
    convergence = check.get("convergence") or {}
    return {
        "check_index": check.get("check_index"),
        "step": check.get("step"),
        "epoch": check.get("epoch"),
        "error": check.get("error"),
        "vs_previous": {m: format_number((drift.get("vs_previous") or {}).get(m)) for m in DRIFT_METRICS},
        "vs_reference": {m: format_number((drift.get("vs_reference") or {}).get(m)) for m in DRIFT_METRICS},
        "chance_jaccard": format_number(drift.get("chance_jaccard")),
        "convergence": {k: format_number(v) for k, v in convergence.items()},
        "entered": [str(w) for w in check.get("entered") or []],
        "left": [str(w) for w in check.get("left") or []],
    }


def heatmap_checks(snapshots: Sequence[Snapshot], last: int = HEATMAP_LAST_CHECKS) -> tuple[list[Snapshot], int]:
    """The first check and the last ``last`` ones, and how many were left out between them."""
    if len(snapshots) <= last + 1:
        return list(snapshots), 0
    return [snapshots[0], *snapshots[-last:]], len(snapshots) - last - 1


def report_context(run: RunData) -> dict[str, Any]:
    """Everything the report template shows, with numbers already formatted and plots encoded."""
    summary = run.summary
    checks = summary["checks"]
    alerts = sorted_alerts(run.alerts)
    candidates = summary["candidates"]
    trajectories = summary["trajectories"]
    highlighted = [a.token for a in alerts if a.token] + [str(c.get("word")) for c in candidates[:5]]
    shown, omitted = heatmap_checks(run.snapshots)
    last_check = checks[-1] if checks else {}
    status = str(summary.get("status"))
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
        "alerts": [_alert_view(a) for a in alerts],
        "candidates": [
            {"word": str(c.get("word")), "score": format_number(c.get("score")), "evidence": evidence_items(c.get("evidence"))}
            for c in candidates
        ],
        "checks": [_check_row(c) for c in checks],
        "drift_metrics": DRIFT_METRICS,
        "top_tokens": [
            {
                "rank": t.get("rank"),
                "word": str(t.get("word")),
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


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
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


def render_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Render ``run_dir`` to ``output`` (default ``run_dir/report.html``) and return its path.

    The file is replaced atomically, so a browser or another process never reads half a page.
    Raises :class:`RunDirError` when the run directory cannot be read.
    """
    run = load_run(run_dir)
    html = render_report_html(run)
    target = Path(output) if output is not None else run.run_dir / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
