"""The run directory's format, owned here: file names, strict atomic writes, appends that a full
disk cannot tear, and the claim on a run's folder. Its one reader is :mod:`.readers`.

A *run path* is one run's own folder (``explain_runs/<name>/``); the monitor's ``run_dir``
option is the parent folder that holds the runs. The run path holds:

- ``probes.jsonl``: the probe set, one probe a line;
- ``attributions.jsonl``: one :class:`~explain_callbacks.attribution.records.Snapshot` a line, appended and
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
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from explain_callbacks.attribution.records import json_safe

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
