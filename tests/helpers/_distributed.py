"""Start and end of the DDP jobs that tests run as subprocesses (``tests/jobs/``)."""

from __future__ import annotations

import faulthandler
import os
import sys

import torch

HANG_LIMIT_S = 200  # under the tests' 300 s subprocess timeout, so a hang reports its stacks


def report_a_hang(seconds: int = HANG_LIMIT_S) -> None:
    """If the job is still running after ``seconds``, print every thread's stack and exit with
    status 1: a hung collective then fails the test with where it hung, instead of a timeout."""
    faulthandler.dump_traceback_later(seconds, exit=True)


def exit_after_all_ranks() -> None:
    """Wait for every rank, then leave without tearing gloo down. ``destroy_process_group()``,
    and gloo's threads at interpreter exit, can hang or abort a process after a clean run
    (pytorch/pytorch#75097); the job's results are written by then."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script, args, log_path, nproc: int = 2, timeout: int = 240) -> int | None:
    """Run ``script`` under ``torchrun --nproc_per_node nproc`` with this checkout first on the
    path; output to ``log_path``. Returns the exit status (``None``: killed after ``timeout``),
    and leaves no rank behind (the whole session is killed)."""
    import signal
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    path = [str(root / "tests"), str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(free_port()), str(script), *map(str, args)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
