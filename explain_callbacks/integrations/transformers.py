"""Hugging Face ``Trainer`` integration: ``AttributionDriftCallback``.

Add it like any ``TrainerCallback``: ``Trainer(..., callbacks=[cb])`` or ``trainer.add_callback(cb)``.
At ``on_train_begin`` it binds an ``AttributionMonitor`` to the Trainer's model (unwrapped from
DDP) and tokenizer (``tokenizer=``, else the Trainer's ``processing_class``), samples probes from
the Trainer's eval (else train) dataset when none were given, and adds the Trainer's loggers:
the ``tb_writer`` of its ``TensorBoardCallback`` and the active ``wandb.run`` when ``report_to``
names them. Checks run at ``on_evaluate`` or ``on_epoch_end`` (``run_on``) on every rank; rank
zero logs. ``on_train_end`` finishes the run and raises ``AttributionAlertError`` if ``fail_on``
says so, so ``trainer.train()`` raises after training.

Hugging Face hands callbacks no reference to the Trainer, only event kwargs (``model``,
``processing_class``, ``train_dataloader``, ...). ``cb.attach(trainer)`` is the normal way to give
it one; without it the kwargs are used, and the Trainer is looked for up the call stack only where
the kwargs cannot serve: probes to sample from the raw ``eval_dataset`` (the dataloaders hold the
columns the model takes, without the text), or the TensorBoard writer of ``report_to``. That
search (``trainer_on_stack``) logs that it was used.

Resume: the callback is an ``ExportableState``, so the monitor's ``state_dict()`` and the probes
are saved in each checkpoint's ``trainer_state.json`` and read back at ``on_train_begin`` of a
resumed run; drift history and alerts continue with the stored probes, never resampled (as in
Lightning: ``MonitorOptions.run_probes``), whatever ``restore_callback_states_from_checkpoint`` says. When it
is ``True``, Hugging Face replaces the callback with one rebuilt from its JSON-able options, so
options JSON cannot hold (sinks, a tokenizer object, custom ``rules``) are lost for the resumed
run; a warning names them. Leave it ``False`` to keep them. ``training_texts`` and
``training_labels`` are never stored: they are the user's training data, too big and too
private to copy into every checkpoint (the monitor's state keeps their word-label counts).

Shortcut discovery's training statistics come from the Trainer's ``train_dataset`` at
``on_train_begin``: its ``text_key`` column when present, else its input ids (decoded back to
words), with its labels; read by column, or by row under a guard that refuses a dataset whose
indexing draws random numbers. Nothing needs to be passed.
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Any

from transformers import TrainerCallback

from explain_callbacks.integrations._trainer_support import (
    add_trainer_sinks,
    callback_state,
    find_tokenizer,
    init_args,
    report_targets,
    sample_probes,
    stored_state,
    trainer_on_stack,
)
from explain_callbacks.monitor import AttributionMonitor
from explain_callbacks.options import MonitorOptions
from explain_callbacks.run.directory import REPORT_FILE

try:  # transformers >= 4.41
    from transformers.trainer_callback import ExportableState
except ImportError:  # pragma: no cover - older transformers: no checkpointed callback state
    ExportableState = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

RUN_ON = ("evaluate", "epoch_end")


class AttributionDriftCallback(TrainerCallback, ExportableState):
    """Attribution checks on a fixed probe set while a Hugging Face ``Trainer`` trains.

    Args:
        probes: texts, dicts, a probe file or a ``ProbeSet``; ``None`` samples
            ``probe_sample_size`` probes (seeded, stratified) from the Trainer's eval dataset, else
            its train dataset, reading columns ``text_key`` / ``text_pair_key`` / ``label_key``.
        tokenizer: the model's fast tokenizer; default: the Trainer's ``processing_class``.
        every_n_epochs, every_n_steps: the schedule. A check runs at the first ``run_on`` event
            after each boundary (epoch ``n``, ``2n``, ... or step ``n``, ``2n``, ...).
        run_on: ``"evaluate"`` (needs an ``eval_strategy``) or ``"epoch_end"``.
        stop_on_alert: stop training when a new alert reaches ``fail_on`` (``"warning"`` when
            ``fail_on="never"``).
        tensorboard: also write TensorBoard events to ``<run dir>/tensorboard``, e.g. with
            ``report_to="none"``. The Trainer's own TensorBoard writer is used whenever
            ``report_to`` includes ``"tensorboard"``.
        **options: ``MonitorOptions`` fields, validated there (``every_n_epochs``,
            ``every_n_steps``, ``probe_sample_size``, ``n_steps``, ``top_k``, ``watch_tokens``,
            ``run_dir``, ``run_name``, ``fail_on``, ``sinks``, ``rules``, ...).
    """

    def __init__(
        self,
        probes: Any = None,
        *,
        tokenizer: Any = None,
        run_on: str = "evaluate",
        stop_on_alert: bool = False,
        text_key: str = "text",
        text_pair_key: str | None = None,
        label_key: str | None = "label",
        tensorboard: bool = False,
        **options: Any,
    ):
        if run_on not in RUN_ON:
            raise ValueError(f"run_on must be one of {RUN_ON}, got {run_on!r}.")
        self.options = MonitorOptions(probes=probes, **options)
        if tensorboard and self.options.run_dir is None:
            raise ValueError(
                "tensorboard=True writes under the run directory, but run_dir=None; set run_dir or pass "
                "sinks=[TensorBoardSink(log_dir=...)]."
            )
        self.tokenizer = tokenizer
        self.run_on = run_on
        self.stop_on_alert = bool(stop_on_alert)
        self.sampling = {"text_key": text_key, "text_pair_key": text_pair_key, "label_key": label_key}
        self.tensorboard = bool(tensorboard)
        self._init_args = init_args(self.options.probes, {
            "tokenizer": tokenizer, "run_on": run_on, "stop_on_alert": stop_on_alert, "text_key": text_key,
            "text_pair_key": text_pair_key, "label_key": label_key, "tensorboard": tensorboard}, options)
        self.monitor: AttributionMonitor | None = None
        # The attributes below ride in trainer_state.json (see ``state``).
        self.resume_state: dict[str, Any] | None = None
        self.rebuilt_without: list[str] = []
        self._trainer: weakref.ref | None = None
        self._training = False

    # ---------------------------------------------------------------- set-up
    def attach(self, trainer: Any) -> "AttributionDriftCallback":
        """Add this callback to ``trainer`` and remember the Trainer (instead of finding it)."""
        trainer.add_callback(self)
        self._trainer = weakref.ref(trainer)
        return self

    @property
    def run_path(self):
        """The run directory of the current (or last) run; ``None`` before training."""
        return self.monitor.run_path if self.monitor is not None else None

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self._find_trainer(args)
        if self.rebuilt_without:
            log.warning(
                "restore_callback_states_from_checkpoint=True rebuilt AttributionDriftCallback from its JSON "
                "options; %s could not be stored and are not used in this run. Leave that flag False to keep "
                "them (the callback restores its own state either way).",
                ", ".join(self.rebuilt_without),
            )
        strategy = getattr(args, "eval_strategy", "no")
        if self.run_on == "evaluate" and getattr(strategy, "value", strategy) == "no":
            raise ValueError(
                "AttributionDriftCallback(run_on='evaluate') but the Trainer never evaluates "
                "(eval_strategy='no'); set eval_strategy='epoch' or 'steps', or run_on='epoch_end'."
            )
        model = kwargs["model"]
        model = getattr(model, "module", model)  # DDP's wrapper: attribute the module it trains
        stored = stored_state(state, type(self).__name__) if state.global_step > 0 else {}
        probes = sample_probes(self.options, stored.get("resume_state"), trainer, kwargs, self.sampling)
        tokenizer = find_tokenizer(self.tokenizer, trainer, kwargs)
        self.monitor = AttributionMonitor.from_options(self.options, model, tokenizer, probes)
        if stored.get("resume_state"):
            self.monitor.load_state_dict(stored["resume_state"])
        self.monitor.start_schedule(state.global_step, state.epoch or 0.0, recorded=stored.get("last_check_boundary"))
        if state.is_world_process_zero:
            add_trainer_sinks(self.monitor, args, trainer, self.tensorboard)
        self.monitor.setup()
        train = trainer.train_dataset if trainer is not None else getattr(kwargs.get("train_dataloader"), "dataset", None)
        self.monitor.observe_dataset(train, self.sampling["text_key"])  # training statistics for shortcut discovery
        self._training = True
        if state.is_world_process_zero and self.run_path is not None:
            log.info("attribution checks write to %s", self.run_path)

    def _find_trainer(self, args: Any) -> Any:
        """The attached Trainer; else ``None`` when the event kwargs serve, else the stack search."""
        if self._trainer is not None:
            return self._trainer()
        if self.options.probes is not None and "tensorboard" not in report_targets(args):
            return None  # model, tokenizer and training data all come with the event
        trainer = trainer_on_stack(self)
        if trainer is not None:
            log.info("AttributionDriftCallback found its Trainer up the call stack (it was not attached); "
                     "cb.attach(trainer) passes it explicitly.")
        return trainer

    # ---------------------------------------------------------------- checks
    def _maybe_check(self, state: Any, control: Any) -> None:
        if self.monitor is None or not self._training:
            return  # trainer.evaluate() outside train(): nothing is training
        if not self.monitor.due(step=state.global_step, epochs=state.epoch or 0.0):
            return
        epoch = max(0, math.ceil((state.epoch or 0.0) - 1e-6) - 1)  # the epoch the check falls in, from 0
        result = self.monitor.check(step=state.global_step, epoch=epoch)
        if self.stop_on_alert and self.monitor.should_stop(result):
            log.warning("attribution alert at step %d: stopping training (stop_on_alert=True).", state.global_step)
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, **kwargs):
        if self.run_on == "evaluate":
            self._maybe_check(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.run_on == "epoch_end":
            self._maybe_check(state, control)

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is None or not self._training:
            return
        self._training = False
        self.monitor.finish()  # raises AttributionAlertError when fail_on is met
        if state.is_world_process_zero and self.run_path is not None:
            log.info("attribution report: %s", self.run_path / REPORT_FILE)

    # ------------------------------------------------------------ checkpoint
    def _resume_state(self) -> dict[str, Any] | None:
        """The monitor's state with its probes (a resumed run reuses them), as Lightning stores it."""
        if self.monitor is None:
            return self.resume_state
        return {**self.monitor.state_dict(), "probes": [p.to_dict() for p in self.monitor.probes]}

    def state(self) -> dict[str, Any]:
        """What ``trainer_state.json`` keeps: JSON-able options and the monitor's state (which
        holds the schedule's position)."""
        return callback_state(self._init_args, {"resume_state": self._resume_state()})
