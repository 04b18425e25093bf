"""Reading what a Hugging Face ``Trainer`` holds, for ``integrations.transformers``: the
``report_to`` list, the tokenizer, probes sampled from its datasets, this callback's state in a
resumed ``TrainerState`` and what it writes there, the Trainer's TensorBoard writer, and
(fallback only) the Trainer up the call stack."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from explain_callbacks.attribution.probes import ProbeError, ProbeSet

log = logging.getLogger("explain_callbacks.integrations.transformers")  # the adapter's messages keep its name

TRAINING_DATA = ("training_texts", "training_labels")
WANDB_STEP_KEY = "train/global_step"


def report_targets(args: Any) -> list[str]:
    return [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])


def find_tokenizer(explicit: Any, trainer: Any, kwargs: dict[str, Any]) -> Any:
    """``explicit``, else the event's or the Trainer's ``processing_class`` (a multimodal
    processor's own tokenizer)."""
    candidates = (explicit, kwargs.get("processing_class"), kwargs.get("tokenizer"),
                  getattr(trainer, "processing_class", None))
    found = next((c for c in candidates if c is not None), None)
    if found is not None and not hasattr(found, "is_fast") and hasattr(found, "tokenizer"):
        found = found.tokenizer  # a multimodal processor wraps its tokenizer
    if found is None:
        raise ValueError(
            "AttributionDriftCallback found no tokenizer: pass tokenizer=..., or give the Trainer "
            "processing_class=tokenizer."
        )
    return found


def sample_probes(options: Any, stored: dict[str, Any] | None, trainer: Any, kwargs: dict[str, Any],
                  sampling: dict[str, Any]) -> ProbeSet:
    """The run's probes by ``MonitorOptions.run_probes``; sampled from the Trainer's eval dataset
    (its first, if several), else its train dataset, else the training dataloader's;
    ``sampling`` holds the column names."""
    if trainer is not None and trainer.eval_dataset is not None:
        dataset, where = trainer.eval_dataset, "eval_dataset"
        if isinstance(dataset, Mapping):
            where, dataset = f"eval_dataset[{next(iter(dataset))!r}]", next(iter(dataset.values()))
    elif trainer is not None:
        dataset, where = trainer.train_dataset, "train_dataset"
    else:
        dataset, where = getattr(kwargs.get("train_dataloader"), "dataset", None), "training dataloader's dataset"
    text_key = sampling["text_key"]
    try:
        return options.run_probes(stored, sample_from=dataset, where=f"the Trainer's {where}", **sampling)
    except ProbeError as err:
        raise ProbeError(
            f"AttributionDriftCallback: {err} (e.g. ProbeSet.sample(raw_dataset, ...)), or keep the raw {text_key!r} "
            f"column in the dataset given to the Trainer (tokenize with map() without remove_columns=[{text_key!r}]; "
            "with remove_unused_columns=True the Trainer drops it before the model)."
        ) from None


def init_args(probes: ProbeSet | None, named: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The callback's constructor arguments as ``ExportableState`` stores them: probes as dicts,
    ``run_dir`` as a string, sequences as lists (what JSON cannot hold is left to :func:`callback_state`)."""
    json_options = {k: (list(v) if k in ("watch_tokens", "sinks") else v) for k, v in options.items()}
    if json_options.get("run_dir") is not None:
        json_options["run_dir"] = str(json_options["run_dir"])
    return {"probes": None if probes is None else [p.to_dict() for p in probes], **named, **json_options}


def callback_state(args: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    """What ``trainer_state.json`` keeps: the JSON-able ``args`` and ``attributes``; the names of
    the arguments it cannot keep go in ``attributes["rebuilt_without"]``."""
    json_args, dropped = {}, []
    for name, value in args.items():
        if name in ("tokenizer", "sinks", *TRAINING_DATA) and not value:
            continue
        if name in TRAINING_DATA:
            dropped.append(name)  # user data, thousands of texts: not copied into every checkpoint
            continue
        try:
            json.dumps(value)
            json_args[name] = value
        except (TypeError, ValueError):
            dropped.append(name)
    return {"args": json_args, "attributes": {**attributes, "rebuilt_without": dropped}}


def stored_state(state: Any, name: str) -> dict[str, Any]:
    """This callback's attributes in a resumed ``TrainerState`` (the first, if several were saved)."""
    stored = (getattr(state, "stateful_callbacks", None) or {}).get(name) or {}
    if isinstance(stored, list):
        stored = stored[0] if stored else {}
    return dict(stored.get("attributes") or {})


def trainer_on_stack(callback: Any) -> Any:
    """Fallback only (see the module doc): the Trainer whose callback handler is calling
    ``callback`` now, found a few frames up the call stack (no ``gc`` scan)."""
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        handler = getattr(owner, "callback_handler", None)
        if handler is not None and any(cb is callback for cb in getattr(handler, "callbacks", ())):
            return owner
        frame = frame.f_back
    return None


def add_trainer_sinks(monitor: Any, args: Any, trainer: Any, tensorboard: bool) -> None:
    """The loggers ``report_to`` names (the Trainer's TensorBoard writer, the active W&B run), and
    a TensorBoard writer under the run directory with ``tensorboard=True``, as sinks of ``monitor``."""
    report_to = report_targets(args)
    if "tensorboard" in report_to:
        writer = trainer_tb_writer(trainer)
        if writer is None:
            log.warning("report_to includes tensorboard, but the Trainer's TensorBoard writer was not found; "
                        "use cb.attach(trainer) or tensorboard=True.")
        else:
            from explain_callbacks.run.sinks.tensorboard import TensorBoardSink

            monitor.add_sink(TensorBoardSink(writer=writer))
    if "wandb" in report_to:
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            from explain_callbacks.run.sinks.wandb import WandbSink

            monitor.add_sink(WandbSink(run=wandb.run, step_key=WANDB_STEP_KEY))
        else:
            log.warning("report_to includes wandb, but no W&B run is active; attribution checks skip W&B.")
    if tensorboard:
        from explain_callbacks.run.sinks.tensorboard import TensorBoardSink

        monitor.add_sink(TensorBoardSink(log_dir=monitor.run_path / "tensorboard"))


def trainer_tb_writer(trainer: Any) -> Any:
    from transformers.integrations import TensorBoardCallback

    handler = getattr(trainer, "callback_handler", None)
    for cb in getattr(handler, "callbacks", ()):
        if isinstance(cb, TensorBoardCallback) and cb.tb_writer is not None:
            return cb.tb_writer
    return None
