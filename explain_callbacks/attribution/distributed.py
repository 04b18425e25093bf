"""Lockstep for sharded models: every rank runs the same forwards, and no rank waits forever.

Under FSDP (``fully_shard``, ``FullyShardedDataParallel``), tensor parallelism or DeepSpeed
ZeRO-3 every forward and backward of the model is a collective: all ranks must run the same
sequence of them or training hangs. A check on such a model therefore runs every probe on every
rank (instead of splitting them as under DDP), and ``Lockstep`` keeps the ranks together:

* ``gate()`` comes before each forward. Every rank reports whether it is still well; a rank
  whose check failed anywhere outside a forward calls ``fail()`` instead, which meets the
  others' next gate, so all ranks end the check at once and training goes on.
* ``share()`` after each forward hands rank zero's outputs to every rank, so every refinement,
  calibration and target decision downstream is the same everywhere, even where floating point
  differs between processes.
* The agreement runs on a gloo group of its own with a timeout: a rank that never arrives
  makes the others fail the check after ``timeout_s`` instead of waiting forever; the lockstep
  is then broken and later checks fail at once.
* ``lead()`` / ``serve()`` make rank zero's later model calls (shortcut discovery's
  counterfactual predictions) collective: rank zero sends each request, the other ranks run it.

A failure inside a forward itself (between FSDP's own collectives) cannot be caught up with here:
the process group's own timeout bounds it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_SYNC_TIMEOUT_S = 600.0


class PeerCheckFailed(RuntimeError):
    """Another rank's check failed (or did not arrive in time); this rank's ends with it."""


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sharding_of(model: nn.Module) -> str | None:
    """What shards ``model``'s parameters across ranks (``"fsdp2"``, ``"fsdp1"``, ``"dtensor"``,
    ``"deepspeed_zero3"``), or ``None`` for a replicated model (one process, DDP, ZeRO 1-2)."""
    if _world()[1] == 1:
        return None
    for module in model.modules():
        names = {cls.__name__ for cls in type(module).__mro__}
        if "FSDPModule" in names:
            return "fsdp2"
        if "FullyShardedDataParallel" in names:
            return "fsdp1"
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        DTensor = ()  # type: ignore[assignment]
    for p in model.parameters():
        if DTensor and isinstance(p, DTensor):
            return "dtensor"
        if hasattr(p, "ds_id"):  # a ZeRO-3 partitioned parameter
            return "deepspeed_zero3"
    return None


def reshard(model: nn.Module) -> None:
    """Free the whole parameters FSDP2 gathered for a check's forwards.

    FSDP2 keeps the root's parameters unsharded after a forward that no backward follows; left
    so after the first check's calibration (before training's first forward), training came out
    different (not bit for bit). Resharded, the next training step gathers as it would have."""
    for module in model.modules():
        if "FSDPModule" in {cls.__name__ for cls in type(module).__mro__}:
            module.reshard()


class Lockstep:
    """Agreement among ranks for a sharded model's check (see the module docstring).

    Created on every rank at the same point (it makes a process group, a collective)."""

    def __init__(self, sharding: str, timeout_s: float = DEFAULT_SYNC_TIMEOUT_S):
        dist = torch.distributed
        self.sharding = sharding
        self.timeout_s = float(timeout_s)
        self.rank, self.world = _world()
        self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout_s))
        self.broken: str | None = None
        self._depth = 0

    # ------------------------------------------------------------ agreement
    def _failed_rank(self, ok: bool) -> int | None:
        """Meet the other ranks; the highest rank that reported a failure, or ``None``."""
        if self.broken is not None:
            raise PeerCheckFailed(self.broken)
        flag = torch.tensor([0 if ok else self.rank + 1], dtype=torch.int64)
        try:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self.group)
        except Exception as err:
            self.broken = (f"the ranks did not meet within {self.timeout_s:.0f} s ({type(err).__name__}: {err}); "
                           "checks are off for the rest of this run")
            raise PeerCheckFailed(self.broken) from err
        return int(flag) - 1 if int(flag) else None

    def gate(self) -> None:
        """Before a forward: go on only if every rank is well."""
        failed = self._failed_rank(True)
        if failed is not None:
            raise PeerCheckFailed(f"the check failed on rank {failed} (its log says why); it ends on every rank")

    def fail(self) -> None:
        """This rank's check failed: meet the others' next gate with the news."""
        try:
            self._failed_rank(False)
        except PeerCheckFailed:
            pass

    @contextmanager
    def phase(self, model: nn.Module) -> Iterator[None]:
        """A unit of collective work (``attribute``, ``predict``, ``prepare``) on ``model``: it
        succeeds on every rank or fails on every rank, and leaves the model resharded. Nested
        phases join the outermost."""
        self._depth += 1
        try:
            yield
        except PeerCheckFailed:
            raise
        except BaseException:
            if self._depth == 1:
                self.fail()
            raise
        else:
            if self._depth == 1:
                self.gate()
        finally:
            self._depth -= 1
            if self._depth == 0:
                reshard(model)

    def share(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Rank zero's values of ``tensors`` (same shapes on every rank), on every rank."""
        out = []
        for t in tensors:
            host = t.detach().to("cpu", copy=True).contiguous()
            torch.distributed.broadcast(host, src=0, group=self.group)
            out.append(host.to(t.device))
        return out

    # ------------------------------------------------- rank zero's requests
    def _broadcast(self, message: Any) -> Any:
        box = [message]
        try:
            torch.distributed.broadcast_object_list(box, src=0, group=self.group)
        except Exception as err:
            self.broken = f"rank zero's request did not arrive within {self.timeout_s:.0f} s ({err})"
            raise PeerCheckFailed(self.broken) from err
        return box[0]

    def lead(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """On rank zero: ``fn`` announced to the serving ranks before each call."""

        def announced(*args: Any, **kwargs: Any) -> Any:
            self._broadcast((args, kwargs))
            return fn(*args, **kwargs)

        return announced

    def end_requests(self) -> None:
        """On rank zero: no more requests; the serving ranks return."""
        if self.broken is None:
            self._broadcast(None)

    def serve(self, fn: Callable[..., Any]) -> None:
        """On the other ranks: run rank zero's requests of ``fn`` until it ends them."""
        while True:
            request = self._broadcast(None)
            if request is None:
                return
            args, kwargs = request
            try:
                fn(*args, **kwargs)
            except PeerCheckFailed:
                if self.broken is not None:
                    raise
            except Exception:
                log.exception("a model call rank zero requested failed on rank %s.", self.rank)


def lockstep_for(model: nn.Module, timeout_s: float = DEFAULT_SYNC_TIMEOUT_S) -> Lockstep | None:
    """A ``Lockstep`` when ``model`` is sharded across ranks, else ``None``. Collective."""
    sharding = sharding_of(model)
    return Lockstep(sharding, timeout_s) if sharding else None
