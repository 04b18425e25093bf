"""Flair: ``FlairModelWrapper`` (a ``TextClassifier`` as a model adapter) and
``AttributionDriftPlugin`` (a ``TrainerPlugin`` that runs checks during ``ModelTrainer`` runs).

The wrapper goes through Flair's own tensor path: ``prepare_tensors`` builds the inputs of each
probe (a Flair ``Sentence``, tokenised as Flair tokenises), ``embeddings.forward`` pools them
(``cls``/``mean``/``max``, the chosen ``layers``, ``layer_mean``) and the classifier's decoder
gives the logits. Integrated Gradients runs on the transformer's input embeddings; words are the
``Sentence``'s tokens, each with the sub-tokens Flair maps to it.

Needs ``pip install "explain-callbacks[flair]"``.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import sys
from typing import Any, Sequence

import torch
from torch import nn

from ..adapters import AdapterError, EncodedProbe, ModelBatch, TokenizerAdapter, Word
from ..isolation import isolated_from_training
from ..monitor import AttributionAlertError
from ..options import MonitorOptions
from ..probes import Probe, ProbeSet

try:
    from flair.data import Sentence
    from flair.embeddings import TransformerEmbeddings
    from flair.embeddings.transformer import TransformerJitEmbeddings, TransformerOnnxEmbeddings
    from flair.models import TextClassifier
    from flair.trainers.plugins import MetricRecord, TrainerPlugin
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError('explain_callbacks.integrations.flair needs flair: pip install "explain-callbacks[flair]"') from err

log = logging.getLogger(__name__)

# Inputs ``prepare_tensors`` makes for layout and vision models: probes carry no boxes or images.
_UNSUPPORTED_INPUTS = ("bbox", "pixel_values", "image")
# What a padded position holds in each per-token input Flair builds.
_PAD_VALUES = {"attention_mask": 0, "word_ids": -100}
MAX_TRAINING_EXAMPLES = 20_000


class FlairModelWrapper(TokenizerAdapter):
    """A Flair ``TextClassifier`` over ``TransformerDocumentEmbeddings``, ready for the engine.

    Args:
        classifier: the ``TextClassifier`` (single- or multi-label).
        use_tokenizer: how probe texts become ``Sentence``s; pass what built the training data
            (``True`` is Flair's default segtok tokenizer, ``False`` splits on spaces, or a
            Flair ``Tokenizer``).
        baseline: ``"pad"``, ``"mask"`` or a token id; special tokens keep their ids.
    """

    def __init__(self, classifier: Any, *, use_tokenizer: Any = True, baseline: str | int = "pad"):
        if not isinstance(classifier, TextClassifier):
            raise AdapterError(f"FlairModelWrapper takes a flair TextClassifier, got {type(classifier).__name__}.")
        embeddings = classifier.embeddings
        if isinstance(embeddings, (TransformerOnnxEmbeddings, TransformerJitEmbeddings)):
            raise AdapterError(
                f"{type(embeddings).__name__} runs an exported ONNX/TorchScript graph with no torch module to "
                "differentiate; attribute the classifier with its original TransformerDocumentEmbeddings "
                "(before export_onnx / TorchScript conversion)."
            )
        if not isinstance(embeddings, TransformerEmbeddings):
            raise AdapterError(
                f"{type(embeddings).__name__} is not supported; FlairModelWrapper needs "
                "TransformerDocumentEmbeddings (a Hugging Face transformer inside Flair)."
            )
        if not isinstance(getattr(embeddings, "model", None), nn.Module):
            raise AdapterError(
                f"the embeddings' .model is a {type(getattr(embeddings, 'model', None)).__name__}, not a torch "
                "nn.Module, so there is no input embedding layer to attribute."
            )
        super().__init__(embeddings.tokenizer, None, baseline)
        self.classifier = classifier
        self.embeddings = embeddings
        self.model = classifier
        self.embedding_layer = embeddings.model.get_input_embeddings()
        self.label_names = [str(x) for x in classifier.label_dictionary.get_items()]
        self.problem_type = "multi_label_classification" if classifier.multi_label else "single_label_classification"
        self.use_tokenizer = use_tokenizer
        with isolated_from_training(classifier):
            inputs = embeddings.prepare_tensors([Sentence("a", use_tokenizer=use_tokenizer)], device=torch.device("cpu"))
        unsupported = sorted(set(inputs) & set(_UNSUPPORTED_INPUTS))
        if unsupported:
            raise AdapterError(
                f"{embeddings.name} needs {unsupported} (layout or image inputs), which text probes do not have."
            )
        order = list(inspect.signature(embeddings.forward).parameters)
        self._arg_names = sorted((k for k in inputs if k != "input_ids"), key=order.index)

    def forward_arg_names(self) -> list[str]:
        return self._arg_names

    def sentence(self, text: str) -> Sentence:
        """The probe text as a Flair ``Sentence``, tokenised as the classifier's data was."""
        return Sentence(text, use_tokenizer=self.use_tokenizer)

    def encode(self, probes: Sequence[Probe]) -> list[EncodedProbe]:
        # Eval mode: in training mode Flair's context dropout draws random numbers.
        with isolated_from_training(self.model):
            return [self._encode(p) for p in probes]

    def _encode(self, probe: Probe) -> EncodedProbe:
        if probe.text_pair is not None:
            raise AdapterError(f"probe {probe.id!r} has a text_pair; a TextClassifier reads one text.")
        sentence = self.sentence(probe.text)
        if len(sentence) == 0:
            raise AdapterError(f"probe {probe.id!r} has no tokens after Flair's tokenisation.")
        emb = self.embeddings
        inputs = emb.prepare_tensors([sentence], device=torch.device("cpu"))
        ids = inputs.pop("input_ids")
        if ids.shape[0] != 1:
            raise AdapterError(
                f"probe {probe.id!r} is longer than the model's window and Flair would split it "
                "(allow_long_sentences); shorten the probe."
            )
        length = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else ids.shape[1]
        input_ids = ids[0, :length].tolist()
        # Flair's word -> sub-token map for fast tokenizers: the same tokenizer call, word_ids().
        tokens, offset = _tokens_with_context(emb, sentence)
        enc = self.tokenizer(
            [[t.text for t in tokens]],
            is_split_into_words=True,
            truncation=emb.truncate,
            stride=emb.stride,
            return_overflowing_tokens=emb.allow_long_sentences,
        )
        if list(enc["input_ids"][0][:length]) != input_ids:
            raise AdapterError(f"probe {probe.id!r}: tokenizer output differs from Flair's prepare_tensors.")
        spans: dict[int, list[int]] = {}
        for position, word_id in enumerate(enc.word_ids(0)[:length]):
            if word_id is not None and 0 <= word_id - offset < len(sentence):
                spans.setdefault(word_id - offset, [position, position])[1] = position + 1
        if not spans:
            raise AdapterError(f"probe {probe.id!r} produced no tokens besides special tokens.")
        words = [Word(text=sentence[i].text, start=s, end=e) for i, (s, e) in sorted(spans.items())]
        in_words = {t for w in words for t in range(w.start, w.end)}
        extras = {k: (v[0, :length] if v.dim() == 2 else v[0]) for k, v in inputs.items()}
        return EncodedProbe(
            probe=probe,
            input_ids=input_ids,
            tokens=self.tokenizer.convert_ids_to_tokens(input_ids),
            words=words,
            special_mask=[0 if t in in_words else 1 for t in range(length)],
            truncated=bool(enc.encodings[0].overflowing),
            extras={"flair_inputs": extras},
        )

    def batch(self, encoded: Sequence[EncodedProbe], width: int | None = None) -> ModelBatch:
        """Right-pad ids and Flair's inputs (to ``width``, default the longest): each row computes
        as the probe alone would."""
        n, width = len(encoded), max([len(e) for e in encoded] + [width or 0])
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        base = ids.clone()
        kwargs: dict[str, torch.Tensor] = {}
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e.input_ids)
            base[i, : len(e)] = torch.tensor([self.baseline_token(t, bool(s)) for t, s in zip(e.input_ids, e.special_mask)])
        for name in self._arg_names:
            if name == "overflow_to_sample_mapping":
                kwargs[name] = torch.arange(n)
                continue
            rows = [e.extras["flair_inputs"][name] for e in encoded]
            if rows[0].dim() == 0:
                kwargs[name] = torch.stack(rows)
                continue
            padded = torch.stack([r[-1:] for r in rows]).expand(n, width).clone()  # e.g. a language id
            if name in _PAD_VALUES:
                padded.fill_(_PAD_VALUES[name])
            for i, r in enumerate(rows):
                padded[i, : len(r)] = r
            kwargs[name] = padded
        device = self.device
        return ModelBatch(ids.to(device), base.to(device), {k: v.to(device) for k, v in kwargs.items()}, [len(e) for e in encoded])

    def forward(self, input_ids: torch.Tensor, *forward_args: torch.Tensor) -> torch.Tensor:
        """Flair's computation: the embeddings' forward (layers, pooling), then the decoder."""
        pooled = self.embeddings.forward(input_ids, **dict(zip(self._arg_names, forward_args)))
        return self.classifier.decoder(pooled["document_embeddings"])


# The one use of a private Flair method. ``flair==0.15.1`` is pinned (pyproject's ``flair``
# extra); its ``TransformerEmbeddings._expand_sentence_with_context(sentence)`` returns
# ``(left context + tokens + right context, len(left context))``. Another version is refused
# where the method is missing, and a changed result is caught by ``_encode``'s comparison with
# ``prepare_tensors`` (tests: test_flair.py's context tests).
FLAIR_VERSIONS_READ = ("0.15",)


def _tokens_with_context(embeddings: Any, sentence: Sentence) -> tuple[list[Any], int]:
    """The tokens Flair hands its tokenizer for ``sentence``, and where the sentence starts.

    Without context (``context_length == 0``, the document embeddings' default) they are the
    sentence's own tokens: public API only. With context (FLERT) only Flair's private
    ``_expand_sentence_with_context`` knows them; it is called in eval mode (see ``encode``),
    so context dropout draws nothing."""
    if not getattr(embeddings, "context_length", 0):
        return list(sentence.tokens), 0
    expand = getattr(embeddings, "_expand_sentence_with_context", None)
    if expand is None:
        import flair

        raise AdapterError(
            f"flair {flair.__version__}: TransformerEmbeddings has no _expand_sentence_with_context, which "
            f"FlairModelWrapper reads for context_length > 0 (read in flair {', '.join(FLAIR_VERSIONS_READ)}); "
            "install the pinned flair (pip install \"explain-callbacks[flair]\") or use context_length=0."
        )
    tokens, offset = expand(sentence)
    return list(tokens), int(offset)


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
    Probes follow the rule of every integration (``MonitorOptions.resumed_probes``): with
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
        probes = opts.resumed_probes()
        if probes is None:
            split = corpus.dev or corpus.test
            if not split:
                raise ValueError("no probes: pass probes=, or give the corpus a dev or test split to sample them from.")
            examples = _labelled_examples(split, model.label_type, model.multi_label)
            probes = ProbeSet.sample(examples, opts.probe_sample_size, seed=0, stratified=not model.multi_label)
        if opts.training_texts is None and not model.multi_label and corpus.train:
            examples = _labelled_examples(corpus.train, model.label_type, False)
            opts.training_texts, opts.training_labels = [t for t, _ in examples], [y for _, y in examples]
        self.monitor = opts.build_monitor(wrapper, probes=probes)
        run = getattr(sys.modules.get("wandb"), "run", None)  # only if the user imported wandb
        if run is not None:
            from ..sinks.wandb import WandbSink  # wandb is imported already

            if not any(isinstance(s, WandbSink) for s in self.monitor.sinks):
                self.monitor.add_sink(WandbSink(run=run, step_key="flair/batch_count"))
        self.monitor.setup()
        if self.monitor.run_path is not None:
            log.info("attribution checks write to %s", self.monitor.run_path)
        # Registered now, after every plugin the trainer attached itself, so it runs last.
        self._hook_handles.append(self.trainer.register_hook(self._raise_if_failed, "after_training"))

    @TrainerPlugin.hook
    def after_training_batch(self, batch_count: int, epoch: int, **kw: Any) -> None:
        self._step = batch_count
        if self.options.schedule.due_at_step(batch_count):
            self._check(epoch, global_step=batch_count)

    @TrainerPlugin.hook
    def after_evaluation(self, epoch: int, **kw: Any) -> None:
        if self.options.schedule.due_at_epoch_end(epoch - 1):
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
