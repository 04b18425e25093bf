"""The Lightning callback's logic, written once for both Lightning namespaces.

``lightning.pytorch`` and ``pytorch_lightning`` ship separate ``Callback`` classes that must not
mix, so this module imports neither. ``explain_callbacks.integrations.lightning`` and
``explain_callbacks.integrations.pytorch_lightning`` each declare
``class AttributionDriftCallback(AttributionDriftLogic, <namespace>.Callback)`` with ``_pl`` set
to their namespace; everything else lives in :class:`AttributionDriftLogic`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from torch import nn

from explain_callbacks.attribution.adapters import (
    ForwardFunctionAdapter,
    HuggingFaceAdapter,
    ModelAdapter,
    find_hf_model,
    resolve_attr,
)
from explain_callbacks.integrations._lightning_support import (
    LoggerSink,
    default_run_name,
    refuse_sharded_strategy,
    validation_dataset,
)
from explain_callbacks.monitor import AttributionMonitor
from explain_callbacks.options import MonitorOptions
from explain_callbacks.run.sinks.base import Sink

log = logging.getLogger(__name__)


class AttributionDriftLogic:
    """Watch what a Hugging Face (or custom) text classifier learns while Lightning trains it.

    Every ``every_n_epochs`` epochs (at the end of the epoch's validation, or of the training
    epoch when there is none) or every ``every_n_steps`` optimizer steps, runs Layer Integrated
    Gradients on a fixed probe set and reports drift, convergence and alerts to the run
    directory and to the trainer's loggers (TensorBoard, W&B, or ``log_metrics`` for others).

    Args:
        tokenizer: the model's fast tokenizer.
        probes: a ``ProbeSet``, list or probe file; by default ``probe_sample_size`` probes are
            sampled (seeded, stratified by ``label_key``) from the validation dataset's
            ``text_key`` column, and a resumed checkpoint reuses its probes.
        model_attr: the attribute holding the classifier, when the LightningModule is not a
            ``PreTrainedModel`` and holds no single one.
        forward_fn, embedding_layer, label_names: a custom model: ``forward_fn(input_ids,
            attention_mask) -> logits`` and its token embedding module (either may be given as
            an attribute name of the LightningModule).
        text_key, label_key: the validation dataset's columns probes are sampled from.
        **options: ``MonitorOptions`` fields, validated there: ``every_n_epochs``,
            ``every_n_steps``, ``probe_sample_size``, ``n_steps``, ``top_k``, ``watch_tokens``,
            ``run_dir``, ``run_name``, ``fail_on`` (``"warning"`` or ``"error"`` raise
            ``AttributionAlertError`` at the end of fit), ``sinks``, ``rules``, ...

    Probes of a resumed run: the checkpoint's stored probes, else (``resume=True``) the run
    directory's ``probes.jsonl``; they are never resampled (``MonitorOptions.run_probes``).

    Shortcut discovery's training statistics are gathered without being passed: from the train
    dataloader's dataset when it holds texts (or input ids) with labels, else from the first
    epoch's batches as ``on_train_batch_start`` sees them (``input_ids`` and ``labels``/``label``
    of a dict or ``BatchEncoding``, or a tuple's id and label tensors); the sampler is never
    touched. They are kept in the checkpoint.

    FSDP and DeepSpeed are refused at setup; under DDP every rank attributes its share of
    the probes and rank zero logs once.
    """

    _pl: Any = None  # the Lightning namespace module, set by each namespace's class

    def __init__(
        self,
        tokenizer: Any,
        probes: Any = None,
        *,
        model_attr: str | None = None,
        forward_fn: Callable[..., torch.Tensor] | str | None = None,
        embedding_layer: nn.Module | str | None = None,
        label_names: Sequence[str] | None = None,
        text_key: str = "text",
        label_key: str | None = "label",
        **options: Any,
    ):
        super().__init__()
        if tokenizer is None:
            raise ValueError("tokenizer is required: pass the model's fast tokenizer.")
        if forward_fn is not None and embedding_layer is None:
            raise ValueError("forward_fn= needs embedding_layer= (the module whose output is the token embeddings).")
        if forward_fn is not None and model_attr is not None:
            raise ValueError("give model_attr= (a Hugging Face model) or forward_fn= (a custom model), not both.")
        self.options = MonitorOptions(probes=probes, **options)
        self.tokenizer = tokenizer
        self.model_attr, self.forward_fn, self.embedding_layer = model_attr, forward_fn, embedding_layer
        self.label_names = label_names
        self.text_key, self.label_key = text_key, label_key
        self.monitor: AttributionMonitor | None = None
        self._adapter: ModelAdapter | None = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        name = self.options.run_name
        return self._generate_state_key(run=name) if name else type(self).__qualname__

    # ----------------------------------------------------------------- set-up
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        refuse_sharded_strategy(trainer.strategy)
        if self.monitor is not None and self._pending_state is None:
            self._pending_state = self.state_dict()  # a second fit() continues the same history
        self.monitor = None
        self._adapter = self._build_adapter(pl_module)

    def _build_adapter(self, pl_module: nn.Module) -> ModelAdapter:
        extra = self.options.adapter_kwargs()
        layer = self.embedding_layer
        if isinstance(layer, str):
            layer = resolve_attr(pl_module, layer, "embedding_layer")
        if self.forward_fn is not None:
            fn = self.forward_fn
            if isinstance(fn, str):
                fn = resolve_attr(pl_module, fn, "forward_fn")
            return ForwardFunctionAdapter(
                fn, layer, self.tokenizer, model=pl_module, label_names=self.label_names, **extra
            )
        if layer is not None:
            extra["embedding_layer"] = layer
        return HuggingFaceAdapter(find_hf_model(pl_module, self.model_attr), self.tokenizer, **extra)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Build the monitor: dataloaders and a restored checkpoint are known by now."""
        if self._adapter is None:
            raise RuntimeError("AttributionDriftCallback.setup() did not run for this fit.")
        state, self._pending_state = self._pending_state, None
        probes = self.options.run_probes(
            state, sample_from=validation_dataset(self._pl, trainer), where="the validation dataset (its dataloader)",
            text_key=self.text_key, label_key=self.label_key,
        )
        if isinstance(self._adapter, ForwardFunctionAdapter) and self.label_names is None:
            self._adapter.infer_label_names(probes[0])
        monitor = AttributionMonitor.from_options(self.options, self._adapter, probes=probes, adapter_built=True,
                                                  run_name=default_run_name(trainer))
        if state:
            monitor.load_state_dict(state)
        monitor.start_schedule(step=trainer.global_step, epochs=trainer.current_epoch)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                monitor.add_sink(self._logger_sink(logger))
        monitor.setup()
        monitor.observe_dataset(getattr(trainer.train_dataloader, "dataset", None), self.text_key)
        self.monitor = monitor

    def _logger_sink(self, logger: Any) -> Sink:
        loggers = self._pl.loggers
        if isinstance(logger, loggers.TensorBoardLogger):
            from explain_callbacks.run.sinks.tensorboard import TensorBoardSink

            return TensorBoardSink(writer=logger.experiment)
        if isinstance(logger, loggers.WandbLogger):
            from explain_callbacks.run.sinks.wandb import WandbSink

            return WandbSink(run=logger.experiment, step_key="trainer/global_step")
        return LoggerSink(logger)

    # ----------------------------------------------------------------- checks
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # mid-epoch validation (val_check_interval < 1) leaves the check to the epoch's end
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_last_batch:
            return
        self._check_epoch(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._check_epoch(trainer)  # epochs without validation

    def _check_epoch(self, trainer: Any) -> None:
        epoch = trainer.current_epoch
        if self.monitor is not None and self.monitor.due(epochs=epoch + 1):
            self.monitor.check(step=trainer.global_step, epoch=epoch)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Training statistics for shortcut discovery, from the batches training draws anyway
        (the first epoch's; a text dataset is read at the start instead)."""
        if self.monitor is not None:
            self.monitor.observe_batch(batch, trainer.current_epoch, trainer.num_training_batches)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step  # repeats across accumulated batches: due() answers once per step
        if self.monitor is not None and self.monitor.due(step=step):
            self.monitor.check(step=step, epoch=trainer.current_epoch)

    # ------------------------------------------------------------------ end
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Flush the sinks and render the report; raises ``AttributionAlertError`` per ``fail_on``."""
        if self.monitor is not None:
            self.monitor.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Flush what the checks wrote, marking the run crashed; no collective call, since other
        ranks may be gone."""
        if self.monitor is not None:
            self.monitor.finish(raise_on_alert=False, collective=False, status="crashed")

    # ------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        if self.monitor is None:
            return dict(self._pending_state or {})
        return {**self.monitor.state_dict(), "probes": [p.to_dict() for p in self.monitor.probes]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the state until the monitor is built (``on_train_start``) and apply it there."""
        if self.monitor is not None:
            self.monitor.load_state_dict(state_dict)
        else:
            self._pending_state = dict(state_dict)

