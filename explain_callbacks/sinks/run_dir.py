"""The run directory: the default sink, a plain folder that needs no account and no server.

``explain_runs/<name>/`` holds ``probes.jsonl`` (the probe set, so a resumed or repeated run
uses the same probes), ``attributions.jsonl`` (one :class:`~explain_callbacks.records.Snapshot`
a line, appended and fsynced per check), ``summary.json`` (rewritten atomically per check) and,
at the end, ``report.html``. A process killed mid-run leaves a readable directory: every
finished check is on disk and ``summary.json`` is always a whole file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from ..probes import ProbeSet
from ..records import CheckResult
from .base import RunInfo

logger = logging.getLogger(__name__)

PROBES_FILE = "probes.jsonl"
ATTRIBUTIONS_FILE = "attributions.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


class RunDirectoryExistsError(ValueError):
    """The run directory already holds a run and this run was not asked to resume it."""


class ProbeSetChangedError(ValueError):
    """A resumed run was given probes other than the ones its run directory recorded."""


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON so that ``path`` is always either the old or the new whole file.

    The text goes to a temporary file in the same directory, is fsynced, then renamed over
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows).
    """

    def write(fh: TextIO) -> None:
        json.dump(data, fh, ensure_ascii=False, indent=2)
        fh.write("\n")

    _write_atomic(Path(path), write)


def _write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    _write_atomic(path, lambda fh: fh.writelines(line + "\n" for line in lines))


def _write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # mkstemp's 0600 would hide the run from the people it is meant for
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def read_attribution_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse ``attributions.jsonl``; a torn last line (a process killed mid-write) is skipped.

    A bad line anywhere else is an error: it means the file was damaged, not interrupted.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the write was cut short
                logger.warning("%s:%d: skipping a partly written last line", path, number)
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg}); the file is damaged.") from None
    return records


class RunDirectorySink:
    """Keeps every check in ``root/name``; the monitor's embedded default sink.

    ``name`` defaults to the run's name. A directory that already holds a run
    (``summary.json`` or ``attributions.jsonl``) is refused unless ``resume=True`` (or the
    monitor starts the run with ``RunInfo.resume``); a resumed run must use the same probes and
    appends to the history. ``render_report=False`` skips ``report.html`` at :meth:`finish`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "explain_runs",
        name: str | None = None,
        resume: bool = False,
        render_report: bool = True,
    ):
        if name is not None and (not str(name).strip() or Path(name).name != str(name)):
            raise ValueError(
                f"run name {name!r} must be a single, non-empty folder name (no '/' or '..'); "
                "put parent folders in root= instead."
            )
        self.root = Path(root)
        self.name = name
        self.resume = resume
        self.render_report = render_report
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        """The run directory (``root/name``); known once :meth:`start` ran."""
        if self._path is None:
            if self.name is None:
                raise RuntimeError("the run directory is not known before start(); pass name= to know it earlier.")
            return self.root / self.name
        return self._path

    @property
    def attributions_path(self) -> Path:
        return self.path / ATTRIBUTIONS_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    def start(self, run: RunInfo) -> None:
        path = self.root / (self.name or run.name)
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        holds_run = (path / SUMMARY_FILE).exists() or (path / ATTRIBUTIONS_FILE).exists()
        if holds_run and not (self.resume or run.resume):
            raise RunDirectoryExistsError(
                f"run directory {path} already holds a run (summary.json / attributions.jsonl). "
                "Pass resume=True to continue it, or choose a new run name (or another root)."
            )
        if holds_run:
            self._check_same_probes(run.probes)
            self._repair_torn_last_line()
        if not holds_run or not (path / PROBES_FILE).exists():
            _write_lines_atomic(
                path / PROBES_FILE, (json.dumps(p.to_dict(), ensure_ascii=False) for p in run.probes)
            )

    def _check_same_probes(self, probes: ProbeSet) -> None:
        recorded = self._recorded_fingerprint()
        if recorded is not None and recorded != probes.fingerprint:
            raise ProbeSetChangedError(
                f"run directory {self.path} was recorded with other probes (fingerprint "
                f"{recorded[:12]}, now {probes.fingerprint[:12]}); drift against its history "
                "would compare different texts. Resume with the probes in "
                f"{self.path / PROBES_FILE} (ProbeSet.from_file), or start a new run name."
            )

    def _recorded_fingerprint(self) -> str | None:
        probes_file = self.path / PROBES_FILE
        if probes_file.exists():
            return ProbeSet.from_file(probes_file).fingerprint
        if self.summary_path.exists():
            with open(self.summary_path, encoding="utf-8") as fh:
                return json.load(fh).get("probe_fingerprint")
        return None

    def _repair_torn_last_line(self) -> None:
        """Cut a partly written last line, so appended lines do not join it."""
        path = self.attributions_path
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        logger.warning("%s: dropped a partly written last line left by an interrupted run", path)

    def truncate_after_check(self, check_index: int) -> int:
        """Drop snapshots with ``check_index`` greater than ``check_index``; return how many.

        Called when a run resumes from a checkpoint older than the last check on disk, so the
        file never mixes the abandoned history with the resumed one.
        """
        records = read_attribution_lines(self.attributions_path)
        kept = [r for r in records if int(r.get("check_index", -1)) <= check_index]
        if self.attributions_path.exists():
            _write_lines_atomic(self.attributions_path, (json.dumps(r, ensure_ascii=False) for r in kept))
        return len(records) - len(kept)

    def log_check(self, result: CheckResult, summary: dict[str, Any]) -> None:
        line = json.dumps(result.snapshot.to_dict(), ensure_ascii=False)
        with open(self.attributions_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        write_json_atomic(self.summary_path, summary)

    def finish(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_path, summary)
        if not self.render_report:
            return
        try:
            from ..report import render_report
        except ImportError as err:
            logger.warning("report.html not written: the report module is unavailable (%s)", err)
            return
        try:
            render_report(self.path)
        except Exception:  # the run's data is safe on disk; the report can be rendered later
            logger.warning(
                "report.html not written for %s; render it later with `explain-callbacks report %s`",
                self.path, self.path, exc_info=True,
            )

