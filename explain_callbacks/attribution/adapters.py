"""Model adapters: turn probes into model inputs and name the layer that Integrated Gradients
attributes to.

``HuggingFaceAdapter`` covers ``AutoModelForSequenceClassification`` families: BERT-style
encoders, RoBERTa-style ones that number positions from the padding index, XLNet (sequence-first),
decoder-only models that classify at the last non-pad token, encoder-decoders (BART, T5: the
encoder's embedding call is attributed), PEFT-wrapped and ``torch.compile``d models.
``ForwardFunctionAdapter`` covers any model the user describes with a forward function, an
embedding layer and a (fast) tokenizer. Other adapters (Flair's) subclass ``ModelAdapter``.

Only the output of the word-embedding layer is replaced along the path. The model gets the same
``input_ids`` and every tensor its tokenizer returns that its forward accepts (attention mask,
token types, ...), padded as the tokenizer pads; it builds its own positions, so the path integral
runs over the word embeddings alone and F(x) is the model's own forward on the tokenizer's output.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from explain_callbacks.attribution.isolation import isolated_from_training
from explain_callbacks.attribution.probes import Probe
from explain_callbacks.attribution.words import span_index, word_spans


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
    #: tokenizer outputs besides ``input_ids`` (``attention_mask``, ``token_type_ids``, ...), unpadded
    model_inputs: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class ModelBatch:
    """Padded tensors for a group of probes. ``forward_kwargs`` are never attributed."""

    input_ids: torch.Tensor
    baseline_ids: torch.Tensor
    forward_kwargs: dict[str, torch.Tensor]
    lengths: list[int]
    padding_side: str = "right"

    def real(self, i: int, row: torch.Tensor) -> torch.Tensor:
        """The probe's own positions of ``row`` (the ``i``-th of the batch), padding dropped."""
        n = self.lengths[i]
        return row[row.shape[0] - n :] if self.padding_side == "left" else row[:n]


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

    padding_side: str = "right"
    #: XLNet embeds ``input_ids`` transposed, shape (length, batch); the engine's hook follows.
    sequence_first: bool = False

    def pad_value(self, name: str) -> int:
        """The value padding positions of model input ``name`` get."""
        return 0

    def batch_key(self, encoded: EncodedProbe) -> Any:
        """Probes share a batch only when this is equal (by default always)."""
        return 0

    def batch(self, encoded: Sequence[EncodedProbe], width: int | None = None) -> ModelBatch:
        """Pad a group of probes on ``padding_side`` (to ``width``, default the longest);
        baselines keep special tokens and put the baseline token everywhere else."""
        width = max([len(e) for e in encoded] + [width or 0])
        n = len(encoded)
        names = self.forward_arg_names()
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        base = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        extra = {k: torch.full((n, width), self.pad_value(k), dtype=torch.long) for k in names}
        for i, e in enumerate(encoded):
            length = len(e)
            cols = slice(width - length, width) if self.padding_side == "left" else slice(0, length)
            ids[i, cols] = torch.tensor(e.input_ids)
            base[i, cols] = torch.tensor(
                [self.baseline_token(t, bool(s)) for t, s in zip(e.input_ids, e.special_mask)]
            )
            for k in names:
                values = e.model_inputs.get(k)
                if k == "attention_mask" and values is None:
                    values = [1] * length
                if values is not None:
                    extra[k][i, cols] = torch.tensor(values)
        device = self.device
        kwargs = {k: v.to(device) for k, v in extra.items()}
        return ModelBatch(ids.to(device), base.to(device), kwargs, [len(e) for e in encoded], self.padding_side)


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

        self.padding_side = "left" if getattr(tokenizer, "padding_side", "right") == "left" else "right"

    def baseline_token(self, token_id: int, is_special: bool) -> int:
        return token_id if is_special else self._baseline_id

    @property
    def baseline_id(self) -> int:
        """The token id non-special positions of the baseline take."""
        return self._baseline_id

    def set_baseline_id(self, token_id: int) -> None:
        self._baseline_id = int(token_id)

    def pad_value(self, name: str) -> int:
        if name == "token_type_ids":
            return int(getattr(self.tokenizer, "pad_token_type_id", 0) or 0)
        return 0

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
                    model_inputs={
                        k: list(v) for k, v in enc.items()
                        if k not in _NOT_MODEL_INPUTS and isinstance(v, list) and len(v) == len(ids)
                    },
                )
            )
        return out


_NOT_MODEL_INPUTS = ("input_ids", "offset_mapping", "special_tokens_mask", "overflow_to_sample_mapping", "length")


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


# Model types that classify at the last non-pad token, found through ``config.pad_token_id``.
LAST_TOKEN_MODELS = (
    "gpt2", "gpt_neo", "gptj", "gpt_neox", "gpt_bigcode", "opt", "bloom", "llama", "mistral", "mixtral", "qwen2",
    "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3", "gemma3_text", "phi", "phi3", "falcon", "mpt",
    "ctrl", "biogpt", "starcoder2", "stablelm", "olmo", "olmo2", "persimmon", "cohere", "granite",
)
# Encoder-decoder classification heads that pool the last <eos> of each row.
EOS_POOLING_MODELS = ("bart", "mbart", "plbart", "mvp", "led", "t5", "mt5", "umt5", "bigbird_pegasus")
# Model types that number positions from ``padding_idx + 1`` (RoBERTa style) or from 2.
_POSITION_OFFSET = {"nystromformer": 2, "yoso": 2}
_PADDING_IDX_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "mpnet",
                          "xlm-roberta-xl", "roberta-prelayernorm", "ibert", "luke", "markuplm", "esm")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module to run: a ``torch.compile``d model's original module (same parameters).

    Attributing through the compiled graph would recompile for every hook and batch shape; the
    eager module computes the same function with the same weights."""
    while hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), nn.Module):
        model = model._orig_mod
    return model


def _core_model(model: nn.Module) -> nn.Module:
    """The Hugging Face ``PreTrainedModel`` inside a PEFT wrapper (or the model itself)."""
    getter = getattr(model, "get_base_model", None)
    if callable(getter):
        try:
            base = getter()
        except Exception:  # pragma: no cover - defensive
            base = None
        if isinstance(base, nn.Module) and getattr(base, "config", None) is not None:
            return base
    return model


def _encoder_embedding(model: nn.Module) -> nn.Module | None:
    """An encoder-decoder's encoder token embedding: the one call the classification reads.

    ``get_input_embeddings()`` is the ``shared`` table, which BART and T5 on 5.x never call in
    forward (encoder and decoder hold their own, tied), and which on 4.57 T5 calls for the encoder
    and the decoder alike."""
    for holder in (model, getattr(model, "transformer", None), getattr(model, "model", None)):
        getter = getattr(holder, "get_encoder", None)
        if not callable(getter):
            continue
        try:
            encoder = getter()
        except Exception:
            continue
        layer = getattr(encoder, "embed_tokens", None)
        if isinstance(layer, nn.Module):
            return layer
        inner = getattr(encoder, "get_input_embeddings", None)
        if callable(inner):
            found = inner()
            if isinstance(found, nn.Module):
                return found
    return None


class HuggingFaceAdapter(TokenizerAdapter):
    """A ``PreTrainedModel`` for sequence classification with its fast tokenizer.

    The model is called with the probe's ``input_ids`` and every tensor the tokenizer returns
    that its forward accepts, padded as the tokenizer pads (``padding_side``,
    ``pad_token_type_id``). Positions are left to the model. PEFT models are called as they are
    (their forward), their base model supplies config and signature; a ``torch.compile``d model is
    run through its original module.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        baseline: str | int = "pad",
        embedding_layer: nn.Module | None = None,
    ):
        model = unwrap_model(model)
        core = _core_model(model)
        config = getattr(core, "config", None)
        if config is None:
            raise AdapterError(
                f"{type(model).__name__} has no .config; for a custom model use "
                "ForwardFunctionAdapter(forward_fn, embedding_layer, tokenizer)."
            )
        model_type = getattr(config, "model_type", "")
        model_limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if not isinstance(model_limit, int) or model_limit <= 0:  # XLNet: -1, relative positions only
            model_limit = None
        elif model_type in _PADDING_IDX_POSITIONS and getattr(config, "pad_token_id", None) is not None:
            model_limit -= int(config.pad_token_id) + 1  # positions run from padding_idx + 1
        elif model_type in _POSITION_OFFSET:
            model_limit -= _POSITION_OFFSET[model_type]
        limits = [x for x in (max_length, model_limit) if x]
        super().__init__(tokenizer, min(limits) if limits else None, baseline)
        if model_type in LAST_TOKEN_MODELS:
            pad = getattr(config, "pad_token_id", None)
            if pad is None:
                raise AdapterError(
                    f"{model_type} finds the last token through config.pad_token_id, which is unset. "
                    "Set model.config.pad_token_id = tokenizer.pad_token_id."
                )
            if int(pad) != self.pad_token_id:
                raise AdapterError(
                    f"{model_type} finds the last token through config.pad_token_id ({pad}), but the tokenizer "
                    f"pads with {self.pad_token_id}; set model.config.pad_token_id = tokenizer.pad_token_id."
                )
        self.model = model
        self.model_type = model_type
        self.sequence_first = model_type == "xlnet"
        if embedding_layer is None and getattr(config, "is_encoder_decoder", False):
            embedding_layer = _encoder_embedding(core)
        self.embedding_layer = embedding_layer or _find_embedding(core, len(tokenizer))
        num_labels = int(getattr(config, "num_labels", 1))
        id2label = getattr(config, "id2label", None) or {}
        self.label_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(num_labels)]
        problem = getattr(config, "problem_type", None)
        if problem is None:
            problem = "regression" if num_labels == 1 else "single_label_classification"
        if problem not in PROBLEM_TYPES:
            raise AdapterError(f"problem_type {problem!r} is not supported; use one of {PROBLEM_TYPES}.")
        self.problem_type = problem
        returned = [n for n in getattr(tokenizer, "model_input_names", []) if n != "input_ids"]
        wanted = ["attention_mask"] + [n for n in returned if n != "attention_mask"]
        self._arg_names = _accepted_args(core.forward, wanted)

        self._eos_pooling = model_type in EOS_POOLING_MODELS
        self._eos_id = getattr(config, "eos_token_id", None)

    def batch_key(self, encoded: EncodedProbe) -> Any:
        """BART- and T5-style heads pool the <eos> tokens and refuse a batch whose rows hold
        different numbers of them (a text pair holds more than a single text)."""
        if self._eos_pooling and isinstance(self._eos_id, int):
            return encoded.input_ids.count(self._eos_id)
        return 0

    def forward_arg_names(self) -> list[str]:
        return self._arg_names

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
