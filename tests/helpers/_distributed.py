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
