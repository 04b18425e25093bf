"""The one reader of a run directory, used by the report, the CLI and the sink's resume: it
parses ``attributions.jsonl``, ``probes.jsonl`` and ``summary.json`` (checked against the summary
schema, so a damaged or hand-edited file is one :class:`RunDirError`, never a traceback), and
turns a run's failures into the events a CI gate reads."""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explain_callbacks.attribution.probes import Probe, ProbeError, ProbeSet
from explain_callbacks.attribution.records import SCHEMA_VERSION, Alert, Snapshot
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

SUMMARY_SCHEMA_FILE = Path(__file__).parent / "schemas" / "summary.schema.json"
_STABILISATION_FIELDS = ("check_index", "step", "epoch")


@functools.lru_cache(maxsize=1)
def _summary_validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(SUMMARY_SCHEMA_FILE.read_text(encoding="utf-8")))


def _json_path(error: Any) -> str:
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else (f".{str(part)[:40]}" if where else str(part)[:40])
    return where or "summary"


def _schema_problem(path: Path, summary: dict[str, Any]) -> RunDirError | None:
    """The first way ``summary`` breaks ``summary.schema.json``, as one line naming the field."""
    error = min(_summary_validator().iter_errors(summary), key=lambda e: (list(map(str, e.absolute_path)), e.validator),
                default=None)
    if error is None:
        return None
    where = _json_path(error)
    if error.validator == "required":
        return RunDirError(f"{path}: {where} lacks a required field ({', '.join(error.validator_value)}); "
                           "the file is damaged.")
    if error.validator == "enum" and where.endswith(".severity"):
        return RunDirError(f"{path}: {where.removesuffix('.severity')} has unknown severity {error.instance!r:.60}; "
                           f"expected one of {', '.join(error.validator_value)}.")
    what = error.schema.get("description", "of another type") if isinstance(error.schema, dict) else "of another type"
    return RunDirError(f"{path}: '{where}' must be {what}; the file is damaged (or not written by explain-callbacks).")


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
    problem = _schema_problem(path, summary)
    if problem is not None:
        raise problem
    summary = dict(summary)
    for name in ("checks", "alerts", "candidates", "failed_checks", "sink_errors", "write_failures"):
        summary[name] = summary.get(name) or []
    summary["trajectories"] = summary.get("trajectories") or {}
    summary["config"] = summary.get("config") or {}
    summary["coverage"] = summary.get("coverage")
    stabilisation = summary.get("stabilisation")
    summary["stabilisation"] = None if stabilisation is None else {k: stabilisation.get(k) for k in _STABILISATION_FIELDS}
    summary["run_name"] = summary.get("run_name") if summary.get("run_name") is not None else run_path.name
    summary["status"] = summary.get("status") or "unknown"
    return summary


def _is_int(v: Any) -> bool:
    return v is None or is_int(v)


def _is_num(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


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


