"""Flair: ``FlairModelWrapper`` (a ``TextClassifier`` as a model adapter) and
``AttributionDriftPlugin`` (a ``TrainerPlugin`` that runs checks during ``ModelTrainer`` runs).

The wrapper (``_flair_wrapper.py``) goes through Flair's own tensor path: ``prepare_tensors`` builds the inputs of each
probe (a Flair ``Sentence``, tokenised as Flair tokenises), ``embeddings.forward`` pools them
(``cls``/``mean``/``max``, the chosen ``layers``, ``layer_mean``) and the classifier's decoder
gives the logits. Integrated Gradients runs on the transformer's input embeddings; words are the
``Sentence``'s tokens, each with the sub-tokens Flair maps to it.

Needs ``pip install "explain-callbacks[flair]"``.
"""

from __future__ import annotations

import itertools
import logging
import sys
from typing import Any

from explain_callbacks.monitor import AttributionAlertError, AttributionMonitor
from explain_callbacks.options import MonitorOptions

try:
    from flair.trainers.plugins import MetricRecord, TrainerPlugin

    from explain_callbacks.integrations._flair_wrapper import FlairModelWrapper
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError('explain_callbacks.integrations.flair needs flair: pip install "explain-callbacks[flair]"') from err

__all__ = ["AttributionDriftPlugin", "FlairModelWrapper"]

log = logging.getLogger(__name__)

MAX_TRAINING_EXAMPLES = 20_000


def _labelled_examples(dataset: Any, label_type: str, multi_label: bool) -> list[tuple[str, Any]]:
    """``(text, label)`` of a Flair split; a list of labels per text for multi-label models."""
    out = []
    for sentence in itertools.islice(iter(dataset), MAX_TRAINING_EXAMPLES):
        labels = [label.value for label in sentence.get_labels(label_type)]
        if labels:
            out.append((sentence.to_original_text(), labels if multi_label else labels[0]))
    return out


class AttributionDriftPlugin(TrainerPlugin):
    """Runs an attribution check after evaluation every ``every_n_epochs`` epochs (or every
    ``every_n_steps`` batches) of ``ModelTrainer.train`` / ``fine_tune`` / ``train_custom``.

    Each check's scalars go out as Flair ``MetricRecord``s (so ``TensorboardLogger`` and other
    logger plugins show them, at the epoch or batch count as global step), to the run directory,
    to ``sinks``, and to W&B when ``wandb.run`` is active. ``probes=None`` samples ``probe_sample_size`` from
    the corpus's dev (else test) split; the training split feeds shortcut discovery for
    single-label models unless ``training_texts`` is given. With ``fail_on`` met,
    ``AttributionAlertError`` leaves the trainer call after training and its final evaluation.
    Options (``every_n_epochs``, ``every_n_steps``, ``n_steps``, ``top_k``, ``watch_tokens``,
    ``run_dir``, ``run_name``, ``fail_on``, ``sinks``, ``rules``, ...) are ``MonitorOptions``
    fields; ``use_tokenizer`` / ``baseline`` go to ``FlairModelWrapper``.

    Epochs are counted from 0 as in the other integrations (Flair's epoch 1 is check epoch 0).
    Probes follow the rule of every integration (``MonitorOptions.run_probes``): with
    ``resume=True`` and a ``run_name`` the run directory's ``probes.jsonl`` is reused, never
    resampled. Flair's trainer keeps no plugin state, so a run that already holds checks cannot
    be continued (refused at set-up, as any resume without checkpoint state).
    """

    def __init__(
        self,
        probes: Any = None,
        *,
        use_tokenizer: Any = True,
        baseline: str | int = "pad",
        **options: Any,
    ):
        super().__init__()
        self.options = MonitorOptions(probes=probes, **options)
        self.wrapper_options = {"use_tokenizer": use_tokenizer, "baseline": baseline}
        self.monitor: Any = None
        self._step = 0
        self._failure: AttributionAlertError | None = None

    @TrainerPlugin.hook
    def after_setup(self, **kw: Any) -> None:
        """Bind to the trainer's model (refusing what cannot be attributed) before epoch one."""
        model, corpus = self.trainer.model, self.trainer.corpus
        wrapper = FlairModelWrapper(model, **self.wrapper_options)
        opts = self.options
        split = corpus.dev or corpus.test
        examples = _labelled_examples(split, model.label_type, model.multi_label) if split and opts.probes is None else None
        probes = opts.run_probes(sample_from=examples, where="the corpus's dev or test split",
                                 stratified=not model.multi_label)
        self.monitor = AttributionMonitor.from_options(opts, wrapper, probes=probes)
        run = getattr(sys.modules.get("wandb"), "run", None)  # only if the user imported wandb
        if run is not None:
            from explain_callbacks.run.sinks.wandb import WandbSink  # wandb is imported already

            self.monitor.add_sink(WandbSink(run=run, step_key="flair/batch_count"))
        self.monitor.start_schedule()
        self.monitor.setup()
        if opts.training_texts is None and not model.multi_label and corpus.train:
            examples = _labelled_examples(corpus.train, model.label_type, False)
            self.monitor.observe_examples([t for t, _ in examples], labels=[y for _, y in examples])
        if self.monitor.run_path is not None:
            log.info("attribution checks write to %s", self.monitor.run_path)
        # Registered now, after every plugin the trainer attached itself, so it runs last.
        self._hook_handles.append(self.trainer.register_hook(self._raise_if_failed, "after_training"))

    @TrainerPlugin.hook
    def after_training_batch(self, batch_count: int, epoch: int, **kw: Any) -> None:
        self._step = batch_count
        if self.monitor.due(step=batch_count):
            self._check(epoch, global_step=batch_count)

    @TrainerPlugin.hook
    def after_evaluation(self, epoch: int, **kw: Any) -> None:
        if self.monitor.due(epochs=epoch):  # Flair's epoch counts from 1: the epochs completed
            self._check(epoch, global_step=epoch)

    def _check(self, flair_epoch: int, global_step: int) -> None:
        """``flair_epoch`` counts from 1 (Flair's); the check's epoch counts from 0, as elsewhere.
        ``global_step`` is the step Flair's logger plugins see (Flair's epoch or batch count)."""
        result = self.monitor.check(step=self._step, epoch=flair_epoch - 1)
        if result is None:
            return
        for name, value in result.scalars().items():
            self.trainer.dispatch("metric_recorded", MetricRecord.scalar(name.split("/"), value, global_step))

    @TrainerPlugin.hook
    def _training_finally(self, **kw: Any) -> None:
        """Flush the sinks and write the report, also when training stopped early or crashed."""
        if self.monitor is None:
            return
        try:
            self.monitor.finish()
        except AttributionAlertError as err:
            self._failure = err

    def _raise_if_failed(self, **kw: Any) -> None:
        # Not TrainingInterrupt: the trainer catches that and returns as if training succeeded.
        if self._failure is not None:
            raise self._failure

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "run_dir": str(self.options.run_dir), "fail_on": self.options.fail_on}
