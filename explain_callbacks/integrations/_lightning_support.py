"""What the Lightning callback reads from a ``Trainer``, for ``_lightning_callback``: loggers as
sinks, the strategies it refuses, the validation dataset probes are sampled from, a run name."""

from __future__ import annotations

from typing import Any

from explain_callbacks.attribution.records import CheckResult
from explain_callbacks.run.directory import default_run_name as unique_run_name
from explain_callbacks.run.sinks.base import RunInfo

# FSDP1 and DeepSpeed run the model through a wrapper the check cannot call into (and neither runs on
# CPU here); FSDP2 under ModelParallelStrategy is checked in lockstep (``attribution.distributed``).
REFUSED_STRATEGIES = ("FSDPStrategy", "DeepSpeed")


class LoggerSink:
    """Sends each check's ``attribution/*`` scalars through a Lightning logger (CSV, MLflow, ...)."""

    def __init__(self, logger: Any):
        self.logger = logger

    def start(self, run: RunInfo) -> None:
        pass

    def log_check(self, result: CheckResult, summary: dict[str, Any]) -> None:
        self.logger.log_metrics(result.scalars(), step=result.snapshot.step)

    def finish(self, summary: dict[str, Any]) -> None:
        self.logger.save()


def refuse_sharded_strategy(strategy: Any) -> None:
    names = [cls.__name__ for cls in type(strategy).__mro__]
    if any(word in name for name in names for word in REFUSED_STRATEGIES):
        raise ValueError(
            f"AttributionDriftCallback does not support {type(strategy).__name__}: the model runs "
            "through its wrapper, which a check cannot call into. Use ModelParallelStrategy with "
            "fully_shard (FSDP2) in configure_model, where checks run on the sharded model in "
            "lockstep, or strategy='ddp' (or a single device)."
        )


def validation_dataset(pl: Any, trainer: Any) -> Any:
    """The dataset behind the (first) validation dataloader, or ``None``."""
    loaders = trainer.val_dataloaders
    datamodule = trainer.datamodule
    overridden = pl.utilities.model_helpers.is_overridden
    if loaders is None and datamodule is not None and overridden("val_dataloader", datamodule):
        loaders = datamodule.val_dataloader()  # not loaded yet when validation skips the first epoch
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return getattr(loaders, "dataset", None)


def default_run_name(trainer: Any) -> str:
    """The first logger's name and version (``lightning_logs_version_3``), else a timestamp."""
    for logger in trainer.loggers:
        version = getattr(logger, "version", None)
        if version is not None:
            version = version if isinstance(version, str) else f"version_{version}"
            return "_".join(str(p) for p in (getattr(logger, "name", None), version) if p)
    return unique_run_name("lightning")
