"""``FlairModelWrapper``: a Flair ``TextClassifier`` as a model adapter (see
``explain_callbacks.integrations.flair``, which exports it)."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from flair.data import Sentence
from flair.embeddings import TransformerEmbeddings
from flair.embeddings.transformer import TransformerJitEmbeddings, TransformerOnnxEmbeddings
from flair.models import TextClassifier
from torch import nn

from explain_callbacks.attribution.adapters import AdapterError, EncodedProbe, ModelBatch, TokenizerAdapter, Word
from explain_callbacks.attribution.isolation import isolated_from_training
from explain_callbacks.attribution.probes import Probe

# Inputs ``prepare_tensors`` makes for layout and vision models: probes carry no boxes or images.
_UNSUPPORTED_INPUTS = ("bbox", "pixel_values", "image")
# What a padded position holds in each per-token input Flair builds.
_PAD_VALUES = {"attention_mask": 0, "word_ids": -100}


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
