"""Model adapters: turn probes into model inputs and name the layer that Integrated Gradients
attributes to.

``HuggingFaceAdapter`` covers ``AutoModelForSequenceClassification`` families (BERT, RoBERTa,
XLM-R, DistilBERT, DeBERTa-v2, ELECTRA, ALBERT, GPT-2 style with a pad token).
``ForwardFunctionAdapter`` covers any model the user describes with a forward function, an
embedding layer and a (fast) tokenizer. Other adapters (Flair's) subclass ``ModelAdapter``.

Only the input embeddings are attributed. Attention mask, token types and positions travel as
extra forward arguments, so the path integral runs over the word embeddings alone and the
convergence delta measures the integral, not a shifted baseline.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .isolation import isolated_from_training
from .probes import Probe
from .words import span_index, word_spans


class AdapterError(ValueError):
    """A model, tokenizer or option the adapter cannot work with, and what to do about it."""


@dataclass
class Word:
    """A word as the user wrote it, with the token span ``[start, end)`` that makes it up."""

    text: str
    start: int
    end: int
    segment: int = 0


@dataclass
class EncodedProbe:
    """One probe, tokenised: ids without padding, and where its words lie."""

    probe: Probe
    input_ids: list[int]
    tokens: list[str]
    words: list[Word]
    special_mask: list[int]
    token_type_ids: list[int] | None = None
    truncated: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class ModelBatch:
    """Padded tensors for a group of probes. ``forward_kwargs`` are never attributed."""

    input_ids: torch.Tensor
    baseline_ids: torch.Tensor
    forward_kwargs: dict[str, torch.Tensor]
    lengths: list[int]


PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


class ModelAdapter:
    """What the engine needs from a model.

    Subclasses provide ``model`` (the module whose state is guarded), ``embedding_layer`` (the
    layer whose output is attributed), ``label_names``, ``problem_type``, ``encode`` and
    ``forward``. ``batch`` pads encoded probes and builds baselines.
    """

    model: nn.Module
    embedding_layer: nn.Module
    label_names: list[str]
    problem_type: str = "single_label_classification"
    pad_token_id: int = 0

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def encode(self, probes: Sequence[Probe]) -> list[EncodedProbe]:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, *forward_args: torch.Tensor) -> torch.Tensor:
        """Return the head's outputs, shape ``(batch, num_labels)``."""
        raise NotImplementedError

    def forward_arg_names(self) -> list[str]:
        """Names of the extra tensors ``forward`` takes after ``input_ids``, in order."""
        return ["attention_mask"]

    def baseline_token(self, token_id: int, is_special: bool) -> int:
        return token_id if is_special else self.pad_token_id

    def batch(self, encoded: Sequence[EncodedProbe]) -> ModelBatch:
        """Right-pad a group of probes; baselines keep special tokens and pad the rest."""
        width = max(len(e) for e in encoded)
        n = len(encoded)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        base = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        types = torch.zeros((n, width), dtype=torch.long)
        for i, e in enumerate(encoded):
            length = len(e)
            ids[i, :length] = torch.tensor(e.input_ids)
            base[i, :length] = torch.tensor(
                [self.baseline_token(t, bool(s)) for t, s in zip(e.input_ids, e.special_mask)]
            )
            mask[i, :length] = 1
            if e.token_type_ids is not None:
                types[i, :length] = torch.tensor(e.token_type_ids)
        available = {"attention_mask": mask, "token_type_ids": types}
        available["position_ids"] = self.position_ids(ids, mask)
        device = self.device
        kwargs = {k: available[k].to(device) for k in self.forward_arg_names()}
        return ModelBatch(ids.to(device), base.to(device), kwargs, [len(e) for e in encoded])

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.arange(input_ids.shape[1]).unsqueeze(0).expand_as(input_ids).contiguous()


class TokenizerAdapter(ModelAdapter):
    """Encoding shared by every adapter built on a Hugging Face fast tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int | None, baseline: str | int = "pad"):
        if tokenizer is None:
            raise AdapterError("a tokenizer is required; pass tokenizer= (a Hugging Face fast tokenizer).")
        if not getattr(tokenizer, "is_fast", False):
            raise AdapterError(
                f"{type(tokenizer).__name__} is a slow tokenizer; word-level scores need a fast one. "
                "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        if tokenizer.pad_token_id is None:
            raise AdapterError(
                "the tokenizer has no pad token, needed for batching and the baseline. For GPT-2 style "
                "models set tokenizer.pad_token = tokenizer.eos_token and "
                "model.config.pad_token_id = tokenizer.pad_token_id."
            )
        self.tokenizer = tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)
        limit = getattr(tokenizer, "model_max_length", None) or 512
        if limit > 100_000:  # tokenizers without a configured limit report a huge sentinel
            limit = 512
        self.max_length = int(min(max_length, limit) if max_length else limit)
        self.baseline = baseline
        if baseline == "pad":
            self._baseline_id = self.pad_token_id
        elif baseline == "mask":
            if tokenizer.mask_token_id is None:
                raise AdapterError("baseline='mask' but the tokenizer has no mask token; use 'pad' or an id.")
            self._baseline_id = int(tokenizer.mask_token_id)
        elif isinstance(baseline, int) and not isinstance(baseline, bool):
            if not 0 <= baseline < len(tokenizer):
                raise AdapterError(f"baseline id {baseline} is outside the vocabulary (size {len(tokenizer)}).")
            self._baseline_id = baseline
        else:
            raise AdapterError(f"baseline must be 'pad', 'mask' or a token id, got {baseline!r}.")

    def baseline_token(self, token_id: int, is_special: bool) -> int:
        return token_id if is_special else self._baseline_id

    def encode(self, probes: Sequence[Probe]) -> list[EncodedProbe]:
        out = []
        for probe in probes:
            enc = self.tokenizer(
                probe.text,
                probe.text_pair,
                truncation=True,
                max_length=self.max_length,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
            encoding = enc.encodings[0]
            ids = list(enc["input_ids"])
            if not any(m == 0 for m in enc["special_tokens_mask"]):
                raise AdapterError(f"probe {probe.id!r} produced no tokens besides special tokens.")
            out.append(
                EncodedProbe(
                    probe=probe,
                    input_ids=ids,
                    tokens=self.tokenizer.convert_ids_to_tokens(ids),
                    words=_words_from_encoding(enc, probe),
                    special_mask=list(enc["special_tokens_mask"]),
                    token_type_ids=list(enc["token_type_ids"]) if "token_type_ids" in enc else None,
                    truncated=bool(encoding.overflowing),
                )
            )
        return out


def _words_from_encoding(enc: Any, probe: Probe) -> list[Word]:
    """Group sub-word tokens by (segment, word id), and join the tokenizer's words that lie in one
    word of :mod:`.words` (``don't``, ``state-of-the-art``); each word's text is its span in the source."""
    word_ids = enc.word_ids()
    seq_ids = enc.sequence_ids()
    offsets = enc["offset_mapping"]
    sources = (probe.text, probe.text_pair or "")
    spans = [word_spans(source) for source in sources]
    words: list[Word] = []
    key_prev = span_prev = None
    for t, (wid, sid) in enumerate(zip(word_ids, seq_ids)):
        if wid is None or sid is None:
            key_prev = span_prev = None
            continue
        start, end = offsets[t]
        while start < end and sources[sid][start].isspace():
            start += 1
        span = (sid, span_index(spans[sid], start)) if start < end else None
        key = (sid, wid)
        if key == key_prev or (span is not None and span[1] is not None and span == span_prev):
            words[-1].end = t + 1
        else:
            words.append(Word(text="", start=t, end=t + 1, segment=sid))
        key_prev, span_prev = key, span
    for w in words:
        source = probe.text if w.segment == 0 else (probe.text_pair or "")
        start = offsets[w.start][0]
        end = offsets[w.end - 1][1]
        w.text = source[start:end].strip() or "".join(enc.tokens()[w.start : w.end])
    return words


def _accepted_args(forward: Callable, wanted: Sequence[str]) -> list[str]:
    params = inspect.signature(forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return list(wanted)
    return [name for name in wanted if name in params]


def _find_embedding(model: nn.Module, vocab_size: int | None) -> nn.Module:
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            layer = getter()
        except NotImplementedError:
            layer = None
        if isinstance(layer, nn.Module):
            return layer
    candidates = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if vocab_size is not None:
        candidates = [m for m in candidates if m.num_embeddings >= vocab_size] or candidates
    if not candidates:
        raise AdapterError(
            f"no input embedding layer found in {type(model).__name__} (no get_input_embeddings() and "
            "no nn.Embedding). Pass embedding_layer= the module whose output is the token embeddings."
        )
    return max(candidates, key=lambda m: m.num_embeddings)


class HuggingFaceAdapter(TokenizerAdapter):
    """A ``PreTrainedModel`` for sequence classification with its fast tokenizer."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        baseline: str | int = "pad",
        embedding_layer: nn.Module | None = None,
    ):
        config = getattr(model, "config", None)
        if config is None:
            raise AdapterError(
                f"{type(model).__name__} has no .config; for a custom model use "
                "ForwardFunctionAdapter(forward_fn, embedding_layer, tokenizer)."
            )
        model_limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if model_limit and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            model_limit -= 2  # padding_idx + 1 positions are reserved
        limits = [x for x in (max_length, model_limit) if x]
        super().__init__(tokenizer, min(limits) if limits else None, baseline)
        if getattr(config, "pad_token_id", None) is None and config.model_type in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2"):
            raise AdapterError(
                f"{config.model_type} finds the last token through config.pad_token_id, which is unset. "
                "Set model.config.pad_token_id = tokenizer.pad_token_id."
            )
        self.model = model
        self.embedding_layer = embedding_layer or _find_embedding(model, len(tokenizer))
        num_labels = int(getattr(config, "num_labels", 1))
        id2label = getattr(config, "id2label", None) or {}
        self.label_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_labels)]
        problem = getattr(config, "problem_type", None)
        if problem is None:
            problem = "regression" if num_labels == 1 else "single_label_classification"
        if problem not in PROBLEM_TYPES:
            raise AdapterError(f"problem_type {problem!r} is not supported; use one of {PROBLEM_TYPES}.")
        self.problem_type = problem
        self._padding_idx = None
        if config.model_type in ("roberta", "xlm-roberta", "camembert", "longformer"):
            self._padding_idx = int(config.pad_token_id)
        wanted = ["attention_mask", "position_ids"]
        if "token_type_ids" in tokenizer.model_input_names and getattr(config, "type_vocab_size", 0) > 0:
            wanted.insert(1, "token_type_ids")
        self._arg_names = _accepted_args(model.forward, wanted)

    def forward_arg_names(self) -> list[str]:
        return self._arg_names

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self._padding_idx is None:
            return super().position_ids(input_ids, attention_mask)
        # RoBERTa numbers positions from padding_idx + 1 and gives padding padding_idx.
        return torch.cumsum(attention_mask, dim=1) * attention_mask + self._padding_idx

    def forward(self, input_ids: torch.Tensor, *forward_args: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self._arg_names, forward_args))
        return self.model(input_ids=input_ids, **kwargs).logits


class ForwardFunctionAdapter(TokenizerAdapter):
    """Any model: ``forward_fn(input_ids, attention_mask) -> logits`` plus its embedding layer.

    ``model`` is the module whose training state the check guards (defaults to the embedding
    layer's owner if the forward function is a bound method of a module).
    """

    def __init__(
        self,
        forward_fn: Callable[..., torch.Tensor],
        embedding_layer: nn.Module,
        tokenizer: Any,
        *,
        model: nn.Module | None = None,
        label_names: Sequence[str] | None = None,
        problem_type: str = "single_label_classification",
        max_length: int | None = None,
        baseline: str | int = "pad",
    ):
        super().__init__(tokenizer, max_length, baseline)
        if not callable(forward_fn):
            raise AdapterError("forward_fn must be callable: forward_fn(input_ids, attention_mask) -> logits.")
        if not isinstance(embedding_layer, nn.Module):
            raise AdapterError("embedding_layer must be the nn.Module whose output is the token embeddings.")
        if problem_type not in PROBLEM_TYPES:
            raise AdapterError(f"problem_type {problem_type!r} is not supported; use one of {PROBLEM_TYPES}.")
        owner = model if model is not None else getattr(forward_fn, "__self__", None)
        if not isinstance(owner, nn.Module):
            raise AdapterError("pass model= (the nn.Module being trained) so the check can guard its state.")
        self.model = owner
        self.embedding_layer = embedding_layer
        self._forward_fn = forward_fn
        self.problem_type = problem_type
        self._label_names = list(label_names) if label_names is not None else None

    @property
    def label_names(self) -> list[str]:  # type: ignore[override]
        if self._label_names is None:
            raise AdapterError("label_names unknown; pass label_names= to ForwardFunctionAdapter.")
        return self._label_names

    def infer_label_names(self, probe: Probe) -> None:
        """Name the classes ``LABEL_0``, ... from one forward pass on ``probe``, unless
        ``label_names`` were given."""
        if self._label_names is not None:
            return
        batch = self.batch(self.encode([probe]))
        with isolated_from_training(self.model), torch.no_grad():
            scores = self.forward(batch.input_ids, *batch.forward_kwargs.values())
        self._label_names = [f"LABEL_{i}" for i in range(int(scores.shape[-1]))]

    def forward(self, input_ids: torch.Tensor, *forward_args: torch.Tensor) -> torch.Tensor:
        out = self._forward_fn(input_ids, *forward_args)
        return getattr(out, "logits", out)


def is_hf_model(obj: Any) -> bool:
    """A ``PreTrainedModel`` by duck type: a module with ``.config`` and ``get_input_embeddings``."""
    return (
        isinstance(obj, nn.Module)
        and getattr(obj, "config", None) is not None
        and callable(getattr(obj, "get_input_embeddings", None))
    )


def resolve_attr(root: nn.Module, path: str, option: str) -> Any:
    """``root.<path>`` (dotted); a missing attribute names the ``option`` that gave the path."""
    obj: Any = root
    for part in path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{option}={path!r}: {type(root).__name__} has no attribute {path!r}.")
        obj = getattr(obj, part)
    return obj


def find_hf_model(module: nn.Module, model_attr: str | None = None) -> nn.Module:
    """The classifier to attribute inside a training wrapper (a LightningModule, say):
    ``module.<model_attr>``, the module itself, or its one Hugging Face child."""
    if model_attr is not None:
        model = resolve_attr(module, model_attr, "model_attr")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model_attr={model_attr!r} is a {type(model).__name__}, not an nn.Module.")
        return model
    if is_hf_model(module):
        return module
    names = [name for name, child in module.named_children() if is_hf_model(child)]
    if len(names) == 1:
        return getattr(module, names[0])
    owner = type(module).__name__
    if not names:
        raise ValueError(
            f"no Hugging Face model found among the attributes of {owner}. Name it with "
            "model_attr='...', or for a custom model pass forward_fn= and embedding_layer=."
        )
    raise ValueError(
        f"{owner} holds several Hugging Face models ({', '.join(names)}); name the classifier "
        f"to attribute with model_attr=, e.g. model_attr={names[0]!r}."
    )


def as_adapter(model_or_adapter: Any, tokenizer: Any = None, **kwargs: Any) -> ModelAdapter:
    """Wrap a Hugging Face model (with its tokenizer) in an adapter; pass adapters through."""
    if isinstance(model_or_adapter, ModelAdapter):
        if tokenizer is not None or kwargs:
            raise AdapterError("tokenizer and adapter options go to the adapter, not next to one.")
        return model_or_adapter
    if isinstance(model_or_adapter, nn.Module):
        return HuggingFaceAdapter(model_or_adapter, tokenizer, **kwargs)
    raise AdapterError(
        f"expected a ModelAdapter or a Hugging Face model, got {type(model_or_adapter).__name__}."
    )
