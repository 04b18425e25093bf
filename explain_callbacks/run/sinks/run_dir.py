"""The run directory: the default sink, a plain folder that needs no account and no server.

``explain_runs/<name>/`` (the *run path*) holds ``probes.jsonl``, ``attributions.jsonl`` (one
snapshot a line, appended and fsynced per check), ``summary.json`` (replaced atomically per
check) and, at the end, ``report.html``; :mod:`explain_callbacks.run.directory` owns that format and
this sink writes only through it. A process killed mid-run leaves a readable directory: every
finished check is on disk and ``summary.json`` is always a whole file. A write that fails (a
full disk) is rolled back, named in ``summary.json`` under ``write_failures`` and raised, so the
monitor logs it and ``explain-callbacks check`` reports it as an error.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import CheckResult
from explain_callbacks.run.directory import (
    ATTRIBUTIONS_FILE,
    PROBES_FILE,
    SUMMARY_FILE,
    RunDirectoryInUseError,  # noqa: F401  (raised by start(); exported by the package)
    RunDirError,
    RunLock,
    append_record,
    clean_stale_temps,
    cut_torn_tail,
    validate_run_name,
    write_json_atomic,
    write_records_atomic,
)
from explain_callbacks.run.readers import load_summary, read_records, recorded_fingerprint
from explain_callbacks.run.sinks.base import RunInfo

logger = logging.getLogger(__name__)

class RunDirectoryExistsError(ValueError):
    """The run directory already holds a run and this run was not asked to resume it."""


class ResumeWithoutStateError(RunDirectoryExistsError):
    """``resume=True``, but the monitor holds none of the recorded run's history."""


class ProbeSetChangedError(ValueError):
    """A resumed run was given probes other than the ones its run directory recorded."""


class RunDirectorySink:
    """Keeps every check in ``root/name``; the monitor's embedded default sink.

    ``root`` is the folder that holds the runs (the monitor's ``run_dir``); ``name`` (default:
    the run's name) is this run's folder in it. :meth:`start` claims the folder (a lock held
    until :meth:`finish` or the process ends) so that two runs never write one folder. A folder
    that already holds a run (``summary.json`` or ``attributions.jsonl``) is refused unless
    ``resume=True`` (or the monitor starts the run with ``RunInfo.resume``); a resumed run must
    use the same probes and appends to the history, and a monitor that resumes without its
    checkpoint state (``RunInfo.restored=False``) is refused rather than restarting at check 0.
    ``render_report=False`` skips ``report.html`` at :meth:`finish`. A sink that never claimed
    its folder (its :meth:`start` failed, or was never called) writes nothing.
    """

    required = True  # a folder another run holds must stop set-up, not be skipped

    def __init__(
        self,
        root: str | os.PathLike[str] = "explain_runs",
        name: str | None = None,
        resume: bool = False,
        render_report: bool = True,
    ):
        if name is not None:
            validate_run_name(name)
        self.root = Path(root)
        self.name = name
        self.resume = resume
        self.render_report = render_report
        self.write_failures: list[str] = []
        self._path: Path | None = None
        self._lock: RunLock | None = None

    @property
    def path(self) -> Path:
        """The run path (``root/name``); known once :meth:`start` ran."""
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
        path = self.root / validate_run_name(self.name or run.name)
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        lock = RunLock(path)
        lock.acquire()  # RunDirectoryInUseError while another run writes this folder
        try:
            self._open(run, path)
            if run.restored and run.last_check_index is not None:  # drop checks made after the checkpoint
                self.truncate_after_check(run.last_check_index, run.summary)
        except BaseException:
            lock.release()
            raise
        self._lock = lock

    def _open(self, run: RunInfo, path: Path) -> None:
        clean_stale_temps(path)
        holds_run = (path / SUMMARY_FILE).exists() or (path / ATTRIBUTIONS_FILE).exists()
        if holds_run and not (self.resume or run.resume):
            raise RunDirectoryExistsError(
                f"run directory {path} already holds a run (summary.json / attributions.jsonl). "
                "Pass resume=True to continue it, or choose a new run name (or another root)."
            )
        if holds_run:
            recorded = self._recorded_checks()
            if run.restored is False and recorded:
                raise ResumeWithoutStateError(
                    f"resume=True, but no checkpoint state was loaded, and run directory {path} holds "
                    f"{recorded} check(s): the monitor would restart at check 0 and mix two runs. Resume "
                    "from the checkpoint that holds the monitor's state (Lightning's ckpt_path=, the "
                    "Trainer's resume_from_checkpoint=, or AttributionMonitor.load_state_dict), or "
                    "choose a new run name."
                )
            self._check_same_probes(run.probes)
            if cut_torn_tail(self.attributions_path):
                logger.warning("%s: dropped a partly written last line left by an interrupted run", self.attributions_path)
            self.write_failures = self._recorded_write_failures()
        if not holds_run or not (path / PROBES_FILE).exists():
            write_records_atomic(path / PROBES_FILE, (p.to_dict() for p in run.probes))

    def _recorded_checks(self) -> int:
        records, _ = read_records(self.attributions_path)
        if records:
            return len(records)
        try:
            return len(load_summary(self.path)["checks"])
        except RunDirError:
            return 0

    def _recorded_write_failures(self) -> list[str]:
        try:
            return list(load_summary(self.path)["write_failures"])
        except RunDirError:
            return []

    def _check_same_probes(self, probes: ProbeSet) -> None:
        recorded = recorded_fingerprint(self.path)
        if recorded is not None and recorded != probes.fingerprint:
            raise ProbeSetChangedError(
                f"run directory {self.path} was recorded with other probes (fingerprint "
                f"{recorded[:12]}, now {probes.fingerprint[:12]}); drift against its history "
                "would compare different texts. Resume with the probes in "
                f"{self.path / PROBES_FILE} (ProbeSet.from_file), or start a new run name."
            )

    def truncate_after_check(self, check_index: int, summary: dict[str, Any] | None = None) -> int:
        """Drop snapshots with a check index above ``check_index``; return how many.

        Called when a run resumes from a checkpoint older than the last check on disk, so the
        file never mixes the abandoned history with the resumed one. The dropped checks are
        logged, and ``summary`` (the resumed monitor's) replaces ``summary.json`` at once.
        """
        records, _ = read_records(self.attributions_path)
        kept = [r for _, r in records if int(r.get("check_index", -1)) <= check_index]
        dropped = [r for _, r in records if int(r.get("check_index", -1)) > check_index]
        if dropped:
            write_records_atomic(self.attributions_path, kept)
            logger.warning(
                "%s: resumed from check %d; dropped the later check(s) %s of the abandoned run",
                self.path, check_index,
                ", ".join(f"{r.get('check_index')} (step {r.get('step')})" for r in dropped),
            )
        if summary is not None:
            self.write_summary(summary)
        return len(dropped)

    def log_check(self, result: CheckResult, summary: dict[str, Any]) -> None:
        snapshot = result.snapshot
        try:
            append_record(self.attributions_path, snapshot.to_dict())
        except OSError as err:
            reason = errno.errorcode.get(err.errno or 0, type(err).__name__)
            self.write_failures.append(
                f"check {snapshot.check_index} (step {snapshot.step}): {ATTRIBUTIONS_FILE} not written "
                f"({reason}: {err.strerror or err}); its attributions are lost"
            )
            self._try_write_summary(summary)
            raise
        self.write_summary(summary)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace ``summary.json`` with ``summary`` plus this sink's ``write_failures``."""
        write_json_atomic(self.summary_path, {**summary, "write_failures": list(self.write_failures)})

    update = write_summary  # the Sink protocol's "the summary changed without a check"

    def abandon(self) -> None:
        """Let go of the folder without writing (set-up failed after this sink started)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _try_write_summary(self, summary: dict[str, Any]) -> None:
        try:
            self.write_summary(summary)
        except OSError:
            logger.warning("%s not updated either", self.summary_path, exc_info=True)

    def finish(self, summary: dict[str, Any]) -> None:
        if self._lock is None:  # the folder was never claimed (or already let go): not ours to write
            return
        try:
            self.write_summary(summary)
            if self.render_report:
                self._render_report()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _render_report(self) -> None:
        try:
            from explain_callbacks.run.report import (
                render_report,  # matplotlib and Jinja2 load only when a report is drawn
            )

            render_report(self.path)
        except Exception:  # the run's data is safe on disk; the report can be rendered later
            logger.warning(
                "report.html not written for %s; render it later with `explain-callbacks report %s`",
                self.path, self.path, exc_info=True,
            )
