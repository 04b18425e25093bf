"""The one reader of a run directory, used by the report, the CLI and the sink's resume: it
parses ``attributions.jsonl``, ``probes.jsonl`` and ``summary.json`` (checked against the summary
schema, so a damaged or hand-edited file is one :class:`RunDirError`, never a traceback), and
turns a run's failures into the events a CI gate reads."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explain_callbacks.attribution.probes import Probe, ProbeError, ProbeSet
from explain_callbacks.attribution.records import SCHEMA_VERSION, SEVERITY_ORDER, Alert, Snapshot
from explain_callbacks.attribution.validation import is_int
from explain_callbacks.run.directory import ATTRIBUTIONS_FILE, PROBES_FILE, SUMMARY_FILE, RunDirError

# --------------------------------------------------------------------------- reading


def _nan_as_null(name: str) -> None:
    return None  # NaN / Infinity from another writer: an undefined figure, as we write it


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_nan_as_null)


def _parse(raw: bytes, where: str) -> Any:
    """JSON from ``raw``; any failure is a one-line :class:`RunDirError` that starts with ``where``."""
    try:
        return _loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as err:
        problem = f"not valid JSON ({err.msg} at line {err.lineno})"
    except RecursionError:
        problem = "nested too deeply"
    raise RunDirError(f"{where} {problem}; the file is damaged.")


def read_records(path: str | os.PathLike[str]) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """The one reader of ``attributions.jsonl``: ``(line number, object)`` pairs and notes.

    A last line without its newline was cut short and is skipped with a note; a line that is
    not a JSON object anywhere else raises :class:`RunDirError`.
    """
    path = Path(path)
    if not path.is_file():
        return [], [f"{path.name} is missing; no heatmaps."]
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    notes: list[str] = []
    if lines and lines[-1].strip():  # no newline after it: the write was cut short
        notes.append(
            f"{path.name} line {len(lines)} is incomplete (the run was probably killed while writing it, "
            "or the disk was full); skipped."
        )
    records = []
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        data = _parse(line, f"{path}:{number}:")
        if not isinstance(data, dict):
            raise RunDirError(f"{path}:{number}: expected a snapshot object, got {type(data).__name__}.")
        records.append((number, data))
    return records, notes


def read_snapshots(path: str | os.PathLike[str]) -> tuple[list[Snapshot], list[str]]:
    """``attributions.jsonl`` as snapshots ordered by check index; when a resumed run wrote the
    same check twice the later line wins. See :func:`read_records` for torn and damaged lines."""
    path = Path(path)
    records, notes = read_records(path)
    by_index: dict[int, Snapshot] = {}
    for number, data in records:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise RunDirError(f"{path}:{number}: schema_version {version!r}, this explain-callbacks reads {SCHEMA_VERSION}.")
        problem = _snapshot_problem(data)
        if problem:
            raise RunDirError(f"{path}:{number}: not a snapshot ({problem}); the file is damaged.")
        try:
            snapshot = Snapshot.from_dict(data)
        except (TypeError, AttributeError):
            raise RunDirError(f"{path}:{number}: not a snapshot (a required field is missing); the file is damaged.") from None
        by_index[snapshot.check_index] = snapshot
    return [by_index[i] for i in sorted(by_index)], notes


def read_probes(path: str | os.PathLike[str]) -> list[Probe]:
    """Read ``probes.jsonl``; a missing file gives no probes, a damaged one raises."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        return list(ProbeSet.from_file(path))
    except (ProbeError, RecursionError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: {err}") from None


def recorded_fingerprint(run_path: str | os.PathLike[str]) -> str | None:
    """The probe fingerprint a run path recorded (``probes.jsonl``, else ``summary.json``)."""
    run_path = Path(run_path)
    if (run_path / PROBES_FILE).exists():
        return ProbeSet.from_file(run_path / PROBES_FILE).fingerprint
    if (run_path / SUMMARY_FILE).exists():
        value = load_summary(run_path).get("probe_fingerprint")
        return value if isinstance(value, str) else None
    return None


# --------------------------------------------------------------------------- summary schema

_INT = "an integer or null"
_NUM = "a number or null"
_STR = "a string or null"


def _is_int(v: Any) -> bool:
    return v is None or is_int(v)


def _is_num(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def _is_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int, float))


_CHECKS = {"int": (_is_int, _INT), "num": (_is_num, _NUM), "str": (_is_str, _STR), "scalar": (_is_scalar, "a plain value")}

_CHECK_FIELDS = {"check_index": "int", "step": "int", "epoch": "int"}  # older summaries' per-check "error" (always null) is ignored
_ALERT_FIELDS = {
    "rule": "str", "message": "str", "key": "str", "token": "str",
    "first_step": "int", "first_epoch": "int", "first_check": "int",
    "last_step": "int", "last_epoch": "int", "last_check": "int",
}
_TOP_TOKEN_FIELDS = {"word": "str", "rank": "int", "mean_share": "num", "sum_share": "num", "n_probes": "int"}
_STABILISATION_FIELDS = {"check_index": "int", "step": "int", "epoch": "int"}
_HEALTH_FIELDS = {"n_probes": "int", "n_labelled": "int", "n_correct": "int", "accuracy": "num"}
_COVERAGE_FIELDS = {"invariance_pairs": "int", "n_training_examples": "int", "n_labelled_probes": "int"}


class _Schema:
    """Type checks for ``summary.json`` with one-line errors that name the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, what: str) -> None:
        raise RunDirError(f"{self.path}: '{where}' must be {what}; the file is damaged (or not written by explain-callbacks).")

    def fields(self, obj: dict[str, Any], spec: dict[str, str], where: str) -> None:
        for name, kind in spec.items():
            check, what = _CHECKS[kind]
            if not check(obj.get(name)):
                self.fail(f"{where}.{name}", what)

    def obj(self, value: Any, where: str, optional: bool = False) -> dict[str, Any]:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(where, "an object")
        return value

    def objects(self, value: Any, where: str) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(where, "a list of objects")
        return value

    def strings(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(where, "a list of strings")
        return value

    def scalars(self, value: Any, where: str, kind: str = "scalar") -> dict[str, Any]:
        value = self.obj(value, where, optional=True)
        check, what = _CHECKS[kind]
        for name, v in value.items():
            if not check(v):
                self.fail(f"{where}.{name}", what)
        return value

    def check(self, check: dict[str, Any], where: str) -> None:
        self.fields(check, _CHECK_FIELDS, where)
        drift = self.obj(check.get("drift"), f"{where}.drift", optional=True)
        for ref in ("vs_previous", "vs_reference"):
            self.scalars(drift.get(ref), f"{where}.drift.{ref}", "num")
        for name, value in drift.items():
            if name not in ("vs_previous", "vs_reference", "per_probe") and not _is_scalar(value):
                self.fail(f"{where}.drift.{name}", "a plain value")
        self.scalars(check.get("convergence"), f"{where}.convergence")
        self.scalars(check.get("timings"), f"{where}.timings", "num")
        faithfulness = self.obj(check.get("faithfulness"), f"{where}.faithfulness", optional=True)
        for name, value in faithfulness.items():  # means per check; "fractions" lists the removal sizes
            values = value if name == "fractions" and isinstance(value, list) else [value]
            if not all(_is_num(v) for v in values):
                self.fail(f"{where}.faithfulness.{name}", "a number or null")
        for i, row in enumerate(self.objects(check.get("top_tokens"), f"{where}.top_tokens")):
            self.fields(row, _TOP_TOKEN_FIELDS, f"{where}.top_tokens[{i}]")
        self.strings(check.get("entered"), f"{where}.entered")
        self.strings(check.get("left"), f"{where}.left")
        health = self.obj(check.get("health"), f"{where}.health", optional=True)  # absent in older summaries
        self.fields(health, _HEALTH_FIELDS, f"{where}.health")
        for name in ("prediction_counts", "label_counts"):
            self.scalars(health.get(name), f"{where}.health.{name}", "int")

    def coverage(self, raw: Any) -> dict[str, Any] | None:
        """``coverage``: the options that decide what can fire (absent in older summaries: None)."""
        if raw is None:
            return None
        coverage = self.obj(raw, "coverage")
        self.fields(coverage, _COVERAGE_FIELDS, "coverage")
        for name in ("watch_tokens", "watched_absent"):
            self.strings(coverage.get(name), f"coverage.{name}")
        if not isinstance(coverage.get("training_statistics"), (bool, type(None))):
            self.fail("coverage.training_statistics", "true, false or null")
        return coverage

    def alert(self, raw: dict[str, Any], where: str) -> None:
        for name in ("rule", "severity", "message", "key"):
            if name not in raw:
                raise RunDirError(
                    f"{self.path}: {where} lacks a required field (rule, severity, message, key); the file is damaged."
                )
        if not isinstance(raw["severity"], str) or raw["severity"] not in SEVERITY_ORDER:
            raise RunDirError(
                f"{self.path}: {where} has unknown severity {raw['severity']!r:.60}; expected one of "
                f"{', '.join(SEVERITY_ORDER)}."
            )
        self.fields(raw, _ALERT_FIELDS, where)
        if not isinstance(raw.get("active", True), bool):
            self.fail(f"{where}.active", "true or false")


def load_summary(run_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``summary.json``; missing optional keys get empty defaults.

    Raises :class:`RunDirError` (one line) for a missing folder or file, text that is not
    UTF-8 or not JSON, a schema version this package does not read, or any field of the wrong
    type, so that a damaged file never becomes a traceback.
    """
    run_path = Path(run_path)
    if not run_path.exists():
        raise RunDirError(f"run directory {run_path} does not exist.")
    if not run_path.is_dir():
        raise RunDirError(f"{run_path} is not a directory; pass the run directory that holds summary.json.")
    path = run_path / SUMMARY_FILE
    if not path.is_file():
        raise RunDirError(
            f"{run_path} has no {SUMMARY_FILE}; is it a run directory written by explain-callbacks "
            "(a folder inside the monitor's run_dir)?"
        )
    summary = _parse(path.read_bytes(), f"{path} is")
    if not isinstance(summary, dict):
        raise RunDirError(f"{path} holds a JSON {type(summary).__name__}, expected an object.")
    version = summary.get("schema_version")
    if version is None:
        raise RunDirError(f"{path} has no schema_version; it was not written by explain-callbacks.")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise RunDirError(
            f"{path} has schema_version {version!r:.40}, this explain-callbacks reads {SCHEMA_VERSION}; "
            "use the explain-callbacks version that wrote the run."
        )
    schema = _Schema(path)
    summary = dict(summary)
    summary["checks"] = schema.objects(summary.get("checks"), "checks")
    for i, check in enumerate(summary["checks"]):
        schema.check(check, f"checks[{i}]")
    summary["alerts"] = schema.objects(summary.get("alerts"), "alerts")
    for i, raw in enumerate(summary["alerts"]):
        schema.alert(raw, f"alerts[{i}]")
    summary["candidates"] = schema.objects(summary.get("candidates"), "candidates")
    for i, candidate in enumerate(summary["candidates"]):
        schema.fields(candidate, {"word": "str", "score": "num"}, f"candidates[{i}]")
    trajectories = schema.obj(summary.get("trajectories"), "trajectories", optional=True)
    for word, values in trajectories.items():
        if not isinstance(values, list) or not all(_is_num(v) for v in values):
            schema.fail(f"trajectories.{word[:40]}", "a list of numbers or nulls")
    summary["trajectories"] = trajectories
    stabilisation = summary.get("stabilisation")
    if stabilisation is not None:
        schema.fields(schema.obj(stabilisation, "stabilisation"), _STABILISATION_FIELDS, "stabilisation")
        summary["stabilisation"] = {k: stabilisation.get(k) for k in _STABILISATION_FIELDS}
    summary["config"] = schema.obj(summary.get("config"), "config", optional=True)
    summary["failed_checks"] = schema.strings(summary.get("failed_checks"), "failed_checks")
    summary["sink_errors"] = schema.strings(summary.get("sink_errors"), "sink_errors")
    summary["write_failures"] = schema.strings(summary.get("write_failures"), "write_failures")
    summary["coverage"] = schema.coverage(summary.get("coverage"))
    schema.fields(summary, {"run_name": "str", "status": "str", "probe_fingerprint": "str", "n_probes": "int"}, "summary")
    summary.setdefault("run_name", run_path.name)
    summary["run_name"] = summary["run_name"] if summary["run_name"] is not None else run_path.name
    summary["status"] = summary.get("status") or "unknown"
    summary.setdefault("stabilisation", None)
    return summary


def _snapshot_problem(data: dict[str, Any]) -> str | None:
    """Why ``data`` is not a snapshot the report can draw, or None."""
    if not _is_int(data.get("check_index")) or data.get("check_index") is None:
        return "check_index must be an integer"
    if not _is_int(data.get("step")) or not _is_int(data.get("epoch")):
        return "step and epoch must be integers"
    attributions = data.get("attributions")
    if not isinstance(attributions, list) or not all(isinstance(a, dict) for a in attributions):
        return "attributions must be a list of objects"
    for a in attributions:
        for name in ("probe_id", "text", "target", "words", "word_shares"):
            if name not in a:
                return f"an attribution lacks {name}"
        words, shares = a.get("words"), a.get("word_shares")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            return "words must be a list of strings"
        if not isinstance(shares, list) or not all(_is_num(s) for s in shares):
            return "word_shares must be a list of numbers"
        if not isinstance(a.get("word_segments", []), list) or not all(_is_int(s) for s in a.get("word_segments", [])):
            return "word_segments must be a list of integers"
        for name in ("rel_delta", "delta"):
            if not _is_num(a.get(name)):
                return f"{name} must be a number or null"
    return None


# --------------------------------------------------------------------------- events


def run_events(summary: dict[str, Any]) -> list[Alert]:
    """The alerts, plus the run's own failures as error-level events (a failed check, a
    write the run directory lost) and warnings (another sink that failed), so a CI gate sees
    them: a failed check is not a clean run."""
    events = [Alert.from_dict(a) for a in summary.get("alerts") or []]
    for i, text in enumerate(summary.get("failed_checks") or []):
        events.append(Alert(rule="check_failed", severity="error", message=text, key=f"check_failed:{i}"))
    for i, text in enumerate(summary.get("write_failures") or []):
        events.append(Alert(rule="write_failed", severity="error", message=text, key=f"write_failed:{i}"))
    for i, text in enumerate(summary.get("sink_errors") or []):
        events.append(Alert(rule="sink_failed", severity="warning", message=text, key=f"sink_failed:{i}"))
    return events


# --------------------------------------------------------------------------- a whole run


@dataclass
class RunData:
    """Everything a run path holds, parsed. ``notes`` say what was tolerated."""

    run_dir: Path  # the run's own folder (kept under this name: it is public)
    summary: dict[str, Any]
    probes: list[Probe]
    snapshots: list[Snapshot]
    notes: list[str] = field(default_factory=list)

    @property
    def run_path(self) -> Path:
        return self.run_dir

    @property
    def alerts(self) -> list[Alert]:
        return [Alert.from_dict(a) for a in self.summary["alerts"]]

    @property
    def events(self) -> list[Alert]:
        """Alerts plus failed checks and lost writes (see :func:`run_events`)."""
        return run_events(self.summary)


def read_run(run_path: str | os.PathLike[str]) -> RunData:
    """Read a whole run path (see :func:`load_summary` and :func:`read_snapshots`)."""
    run_path = Path(run_path)
    summary = load_summary(run_path)
    snapshots, notes = read_snapshots(run_path / ATTRIBUTIONS_FILE)
    probes = read_probes(run_path / PROBES_FILE)
    status = summary["status"]
    if status == "running":
        notes.insert(0, "The run has not finished (status 'running'): it is still going or was killed.")
    elif status in ("crashed", "failed"):
        notes.insert(0, f"The run ended with an error (status '{status}'); these are the checks it wrote.")
    return RunData(run_dir=run_path, summary=summary, probes=probes, snapshots=snapshots, notes=notes)


