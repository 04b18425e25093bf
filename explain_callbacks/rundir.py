"""The run directory's format, owned here: file names, strict atomic writes, appends that a full
disk cannot tear, the claim on a run's folder, and the one reader that the sink, the report and
the CLI all use.

A *run path* is one run's own folder (``explain_runs/<name>/``); the monitor's ``run_dir``
option is the parent folder that holds the runs. The run path holds:

- ``probes.jsonl``: the probe set, one probe a line;
- ``attributions.jsonl``: one :class:`~explain_callbacks.records.Snapshot` a line, appended and
  fsynced per check. A line counts once its newline is on disk: a last line without one was cut
  short (a kill, a full disk) and is skipped by the reader and cut by the next writer; a bad
  line anywhere else means the file was damaged;
- ``summary.json``: replaced atomically (temporary file, fsync, rename) after every check;
- ``report.html``: rendered at the end;
- ``.lock``: held (``flock``) by the process that writes the run, so two runs never share it.

Everything written is strict JSON (``NaN`` and infinities become ``null``).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .probes import Probe, ProbeError, ProbeSet
from .records import SCHEMA_VERSION, SEVERITY_ORDER, Alert, Snapshot, json_safe
from .validation import is_int

logger = logging.getLogger(__name__)

PROBES_FILE = "probes.jsonl"
ATTRIBUTIONS_FILE = "attributions.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
_TEMP_SUFFIX = ".tmp"


class RunDirError(ValueError):
    """A run directory that cannot be read. The message is one line naming the file and the fix."""


class RunDirectoryInUseError(RuntimeError):
    """Another run (in this process or another) is writing the same run directory."""


# --------------------------------------------------------------------------- names


def validate_run_name(name: Any) -> str:
    """``name`` if it is one plain folder name; raises ``ValueError`` otherwise."""
    text = name if isinstance(name, str) else None
    bad = (
        text is None
        or not text.strip()
        or text != text.strip()
        or text in (".", "..")
        or any(sep in text for sep in ("/", "\\", os.sep, os.altsep or "/"))
        or "\x00" in text
        or Path(text).is_absolute()
    )
    if bad:
        raise ValueError(
            f"run name {name!r} must be a single, non-empty folder name (no '/', '\\', '.' or '..', "
            "no surrounding spaces); put parent folders in run_dir= (the folder that holds the runs)."
        )
    return text


def default_run_name(prefix: str = "run") -> str:
    """``run-20260101-120000-<pid>-<random>``: unique for jobs started in the same second.

    The suffix comes from the operating system's entropy (``secrets``), never from the global
    ``random`` / NumPy / torch streams, so naming a run never changes training.
    """
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- writing


def strict_json(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON text: non-finite numbers as ``null``, never ``NaN``."""
    return json.dumps(json_safe(data), ensure_ascii=False, allow_nan=False, indent=indent)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def write_atomic(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path``, fsync it and rename it over
    ``path``: a reader sees the old whole file or the new one, never a part. On any failure
    the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # mkstemp's 0600 would hide the run from the people it is meant for
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """``data`` as strict, indented JSON, replacing ``path`` atomically (see :func:`write_atomic`)."""
    text = strict_json(data, indent=2) + "\n"  # serialised first: a failure leaves no temp file
    write_text_atomic(path, text)


def write_records_atomic(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """One strict JSON object a line, replacing ``path`` atomically."""
    text = "".join(strict_json(r) + "\n" for r in records)
    write_text_atomic(path, text)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cut_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut a last line that has no newline (a write cut short); return the bytes dropped."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        return _cut_torn_tail(fd)
    finally:
        os.close(fd)


def _read_at(fd: int, n: int, offset: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)  # (os.pread is POSIX only)
    return os.read(fd, n)


def _cut_torn_tail(fd: int) -> int:
    size = os.fstat(fd).st_size
    if size == 0 or _read_at(fd, 1, size - 1) == b"\n":
        return 0
    keep, block = 0, 65536
    end = size
    while end > 0:  # find the last newline, reading backwards
        start = max(0, end - block)
        chunk = _read_at(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            keep = start + cut + 1
            break
        end = start
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return size - keep


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append ``record`` as one strict JSON line and fsync it.

    Nothing written after a failed append can corrupt what came before: a torn line left by an
    earlier failure is cut first, and a write that fails part-way (``ENOSPC``) is rolled back
    to the previous size before the ``OSError`` propagates.
    """
    data = (strict_json(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        dropped = _cut_torn_tail(fd)
        if dropped:
            logger.warning("%s: cut %d bytes of a partly written last line before appending", path, dropped)
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError:  # the next append cuts the torn line instead
                logger.warning("%s: could not roll back a failed append", path, exc_info=True)
            raise
    finally:
        os.close(fd)


def clean_stale_temps(directory: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files a killed atomic write left behind; return their names."""
    removed = []
    directory = Path(directory)
    for name in (SUMMARY_FILE, PROBES_FILE, ATTRIBUTIONS_FILE, REPORT_FILE):
        for tmp in directory.glob(f".{name}.*{_TEMP_SUFFIX}"):
            try:
                tmp.unlink()
                removed.append(tmp.name)
            except OSError:
                pass
    if removed:
        logger.warning("%s: removed temporary files left by an interrupted write: %s", directory, ", ".join(removed))
    return removed


class RunLock:
    """An exclusive, advisory claim on a run path, held until :meth:`release` or the process
    ends (``flock`` on ``.lock``; the kernel drops it when the process dies, so a crashed run
    leaves no stale claim). The file itself stays: removing it would let two claims race."""

    def __init__(self, run_path: str | os.PathLike[str]):
        self.path = Path(run_path) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = _read_at(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                here = holder.startswith(f"pid {os.getpid()} ")
                raise RunDirectoryInUseError(
                    f"run directory {self.path.parent} is being written by another run ({holder}"
                    + (": a monitor in this process that was never finished; call its finish() or drop it" if here else "")
                    + "). Give this run another run_name, or wait for that run to finish."
                )
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


def _try_lock(fd: int) -> bool:
    """Take an exclusive non-blocking lock; False when another holder has it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        logger.warning("cannot lock %s (%s); two runs with one run name would not be detected", fd, err)
    return True


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

    def _repr_html_(self) -> str:
        """The report in a notebook cell: ``load_run(path)`` as a cell's last line shows it. It
        sits in a sandboxed ``iframe`` so its styles never restyle the notebook."""
        import html

        from .report import render_report_html

        page = html.escape(render_report_html(self), quote=True)
        return f'<iframe sandbox="" srcdoc="{page}" style="width: 100%; height: 720px; border: 0"></iframe>'


def load_run(run_path: str | os.PathLike[str]) -> RunData:
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


def resolve_run_path(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``path`` itself when it holds a run; when it is a folder of runs (the monitor's
    ``run_dir``), its most recently updated run, with a note saying which."""
    path = Path(path)
    if not path.is_dir() or (path / SUMMARY_FILE).exists():
        return path, None
    runs = [child for child in path.iterdir() if child.is_dir() and (child / SUMMARY_FILE).is_file()]
    if not runs:
        return path, None
    latest = max(runs, key=lambda child: ((child / SUMMARY_FILE).stat().st_mtime, child.name))
    return latest, f"{path} holds {len(runs)} run(s); using the latest, {latest.name}"
