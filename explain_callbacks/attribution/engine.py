"""``AttributionEngine``: batched, adaptive Layer Integrated Gradients over a probe set.

Probes are bucketed by length and attributed together, chunked so that no forward pass holds
more than ``tokens_per_chunk`` tokens (sequences x steps x length). Every probe gets its signed
convergence delta and relative delta. The logit (not the softmax) of the target is attributed.

The default ``method="adaptive_trapezoid"`` starts from ``n_steps`` equal intervals and bisects
only the intervals of a probe whose trapezoid estimate misses the exact ``F(b) - F(a)`` (known
from the forward values that come with each gradient), keeping every point already evaluated
(see ``quadrature``). F(x) and F(baseline) are the path's end points, so no separate forward
pass of the probes runs unless a target is the prediction and not yet fixed. Captum's fixed-grid
methods cannot reuse points or localise the error: redoing a probe at doubled steps threw away a
third of the work. On a confident fine-tuned MiniLM (``benchmarks/speed.py --lr 1e-4``), 12
bisected intervals cost 15.4 gradient evaluations per probe and 16 cost 19.2, where 16
Gauss-Legendre steps with doubling cost 39.0; token scores were 1.3%, 1.0% and 2.1% (L1) away
from a 128-step reference. With no refinement (``max_steps == n_steps``) the scores equal
Captum's ``LayerIntegratedGradients`` with ``riemann_trapezoid`` at ``n_steps + 1`` points times
``(n_steps + 1) / n_steps`` (Captum's trapezoid weights sum to ``n / (n + 1)``, not 1). Captum's
methods remain available; their probes above ``rel_tolerance`` are redone with doubled steps up
to ``max_steps``.
"""

from __future__ import annotations

import inspect
import json
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from explain_callbacks.attribution.adapters import AdapterError, EncodedProbe, ModelAdapter, ModelBatch, as_adapter
from explain_callbacks.attribution.isolation import full_precision, isolated_from_training
from explain_callbacks.attribution.probes import Probe, ProbeSet, as_probe_set
from explain_callbacks.attribution.quadrature import interval_errors, points_to_add, trapezoid_weights, uniform_points
from explain_callbacks.attribution.records import ProbeAttribution
from explain_callbacks.attribution.validation import is_int, positive_int

log = logging.getLogger(__name__)

ADAPTIVE = "adaptive_trapezoid"
DEFAULT_N_STEPS = 12
DEFAULT_MAX_STEPS = 128
METHODS = (ADAPTIVE, "gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")
TARGET_MODES = ("auto", "gold", "predicted", "all")


class NonFiniteOutputError(RuntimeError):
    """The model's outputs are NaN or infinite for some probes: no attribution can be trusted."""



def validate_engine_options(
    n_steps: Any, max_steps: Any, method: Any, rel_tolerance: Any, tokens_per_chunk: Any, owner: str = "AttributionEngine"
) -> None:
    """The one rule for the engine's numeric options, applied by ``AttributionEngine`` and, before
    any model is known, by ``MonitorOptions`` (so an integration refuses them at construction)."""
    positive_int(n_steps, "n_steps", owner, minimum=2)
    if not is_int(max_steps) or max_steps < n_steps:
        raise ValueError(f"{owner}: max_steps ({max_steps!r}) must be an int >= n_steps ({n_steps}).")
    if method not in METHODS:
        raise ValueError(f"{owner}: method {method!r} is not one of {METHODS}.")
    if isinstance(rel_tolerance, bool) or not isinstance(rel_tolerance, (int, float)) or not 0 < rel_tolerance < 1:
        raise ValueError(f"{owner}: rel_tolerance must be in (0, 1), got {rel_tolerance!r}.")
    if not is_int(tokens_per_chunk) or tokens_per_chunk < 64:
        raise ValueError(f"{owner}: tokens_per_chunk must be an integer of at least 64, got {tokens_per_chunk!r}.")


@dataclass
class Calibration:
    """What the first check learnt about the model: the padding side that leaves outputs
    unchanged, whether probes of different lengths may share a batch, and the baseline token when
    the configured one was degenerate (``degenerate_baseline`` keeps that one's id)."""

    padding_side: str = "right"
    mix_lengths: bool = True
    baseline_id: int | None = None
    degenerate_baseline: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        return cls(**{k: data[k] for k in ("padding_side", "mix_lengths", "baseline_id", "degenerate_baseline") if k in data})


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + float(a.abs().max()))))


def _probe_key(probe: Probe) -> str:
    return json.dumps(probe.to_dict(), sort_keys=True, default=str)


def _check_finite(logits: torch.Tensor, probe_ids: Sequence[str]) -> None:
    bad = ~torch.isfinite(logits.float()).all(dim=-1)
    if bool(bad.any()):
        names = sorted({str(p) for p, b in zip(probe_ids, bad.cpu().tolist()) if b})
        raise NonFiniteOutputError(
            f"the model's outputs are not finite (NaN or inf) for probe(s) {', '.join(map(repr, names))}; "
            "the weights may have diverged (learning rate, fp16 overflow). No attributions were computed."
        )


def _fit(replacement: torch.Tensor, ids: Any, input_ids: torch.Tensor, output: torch.Tensor, sequence_first: bool) -> torch.Tensor:
    """``replacement`` (batch, width, ...) laid out as the embedding call ``output`` of ``ids``."""
    if not torch.is_tensor(ids) or ids.dim() != 2:
        raise AdapterError("the embedding layer was not called with a (batch, length) tensor of token ids; "
                           "pass embedding_layer= the module that embeds input_ids.")
    n, width = input_ids.shape
    layouts = [(False, ids.shape == (n, width)), (True, ids.shape == (width, n))]
    if sequence_first:
        layouts.reverse()
    for transposed, shape_ok in layouts:
        if shape_ok and torch.equal(ids.t() if transposed else ids, input_ids):
            return replacement.transpose(0, 1) if transposed else replacement
    if ids.shape[0] == n and ids.shape[1] > width and torch.equal(ids[:, :width], input_ids):
        # the model padded the ids on the right (to its attention window or block size)
        return torch.cat([replacement, output[:, width:].to(replacement.dtype)], dim=1)
    raise AdapterError(
        "the embedding layer's first call in the forward pass did not embed the probes' input_ids "
        f"(got ids of shape {tuple(ids.shape)}, expected {(n, width)}); pass embedding_layer= the module that "
        "embeds input_ids."
    )


@dataclass
class _Task:
    """One probe attributed for one target class."""

    enc: EncodedProbe
    target: int
    f_input: float = 0.0
    f_baseline: float = 0.0
    scores: Any = None
    token_scores: Any = None
    delta: float = float("nan")
    rel_delta: float = float("inf")
    n_steps: int = 0
    path: dict[float, tuple[float, Any]] = field(default_factory=dict)  # alpha -> (F, token slopes)


class AttributionEngine:
    """Attribute a probe set with Layer Integrated Gradients on the input embeddings.

    Args:
        adapter_or_model: a ``ModelAdapter`` or a Hugging Face sequence-classification model.
        tokenizer: the model's fast tokenizer (with a model; adapters carry their own).
        n_steps: integration steps of the first pass (intervals for ``adaptive_trapezoid``, whose
            first pass evaluates ``n_steps + 1`` points, both ends of the path included).
        method: ``adaptive_trapezoid`` (bisects the intervals that miss, keeping every point), or
            one of Captum's fixed-grid approximations, redone at doubled steps when they miss.
        target: ``"auto"`` (gold label when the probe has one, else the class predicted at the
            first check, kept fixed), ``"gold"``, ``"predicted"``, ``"all"``, a class index or a
            class name.
        rel_tolerance: a probe converged when ``|delta| / |F(x) - F(baseline)|`` is at most this
            (or ``|delta| <= abs_tolerance``).
        max_steps: refinement stops at this many steps (intervals); ``max_steps == n_steps``
            turns it off.
        tokens_per_chunk: memory budget of one forward pass, in tokens.
    """

    def __init__(
        self,
        adapter_or_model: Any,
        tokenizer: Any = None,
        *,
        n_steps: int = DEFAULT_N_STEPS,
        method: str = ADAPTIVE,
        target: str | int = "auto",
        rel_tolerance: float = 0.05,
        abs_tolerance: float = 1e-4,
        max_steps: int = DEFAULT_MAX_STEPS,
        tokens_per_chunk: int = 8192,
        **adapter_options: Any,
    ):
        validate_engine_options(n_steps, max_steps, method, rel_tolerance, tokens_per_chunk)
        self.adapter: ModelAdapter = as_adapter(adapter_or_model, tokenizer, **adapter_options)
        self.n_steps = n_steps
        self.method = method
        self.rel_tolerance = float(rel_tolerance)
        self.abs_tolerance = float(abs_tolerance)
        self.max_steps = max_steps
        self.tokens_per_chunk = int(tokens_per_chunk)
        self.target = self._check_target_spec(target)
        self._fixed_targets: dict[str, list[int]] = {}
        self._prepared: dict[str, EncodedProbe] = {}  # prepare()'s encodings, by probe content
        self.calibration: Calibration | None = None

    # ----------------------------------------------------------------- targets
    def _check_target_spec(self, target: str | int) -> str | int:
        if isinstance(target, bool):
            raise ValueError("target must be a mode, a class index or a class name, not a bool.")
        if isinstance(target, int):
            self._class_index(target, "target=")
            return target
        if isinstance(target, str) and target in TARGET_MODES:
            return target
        if isinstance(target, str):
            return self._class_index(target, "target=")
        raise ValueError(f"target must be one of {TARGET_MODES}, a class index or a class name; got {target!r}.")

    def _class_index(self, label: Any, where: str) -> int:
        names = self.adapter.label_names
        if hasattr(label, "item"):
            label = label.item()
        if self.adapter.problem_type == "regression":
            return 0
        if isinstance(label, bool):
            label = int(label)
        if isinstance(label, int):
            if 0 <= label < len(names):
                return label
            raise AdapterError(f"{where} class index {label} is out of range for {len(names)} classes.")
        if isinstance(label, float) and label.is_integer():
            return self._class_index(int(label), where)
        if isinstance(label, str):
            if label in names:
                return names.index(label)
            if label.strip().lstrip("-").isdigit():
                return self._class_index(int(label), where)
        raise AdapterError(f"{where} unknown class {label!r}; the model's classes are {names}.")

    def _gold_targets(self, probe: Probe) -> list[int]:
        where = f"probe {probe.id!r} label"
        if isinstance(probe.label, (list, tuple)):
            return [self._class_index(x, where) for x in probe.label]
        return [self._class_index(probe.label, where)]

    def _predicted_targets(self, scores: torch.Tensor) -> list[int]:
        if self.adapter.problem_type == "regression":
            return [0]
        if self.adapter.problem_type == "multi_label_classification":
            chosen = [i for i, s in enumerate(scores.tolist()) if s > 0]
            return chosen or [int(scores.argmax())]
        return [int(scores.argmax())]

    def _targets_for(self, probe: Probe, scores: torch.Tensor | None) -> list[int] | None:
        """The probe's target classes; ``None`` when they depend on a prediction not yet made."""
        spec = self.target
        if isinstance(spec, int):
            return [spec]
        if spec == "all":
            return list(range(self.adapter.num_labels))
        if spec == "gold" or (spec == "auto" and probe.label is not None):
            return self._gold_targets(probe)
        if probe.id not in self._fixed_targets:
            if scores is None:
                return None
            self._fixed_targets[probe.id] = self._predicted_targets(scores)
        return self._fixed_targets[probe.id]

    # ------------------------------------------------------------------ set-up
    def prepare(self, probes: Any) -> list[EncodedProbe]:
        """Encode and validate probes now, so bad input fails at set-up and not mid-epoch; then
        probe the model once (padding, baseline: see ``calibrate``)."""
        probes = as_probe_set(probes)
        encoded = self.adapter.encode(list(probes))
        self._prepared = {_probe_key(e.probe): e for e in encoded}
        for p in probes:
            if self.target == "gold" and p.label is None:
                raise AdapterError(f"target='gold' but probe {p.id!r} has no label; label it or use target='auto'.")
            if self.target in ("gold", "auto") and p.label is not None:
                self._gold_targets(p)
        for e in encoded:
            if e.truncated:
                log.warning("probe %r is longer than %s tokens and is truncated.", e.probe.id, len(e))
        with isolated_from_training(self.adapter.model):
            self.calibrate(encoded)
        return encoded

    def remember_targets(self, attributions: Sequence[ProbeAttribution]) -> None:
        """Adopt targets fixed elsewhere (another rank's share) so every rank keeps them all."""
        fixed: dict[str, list[int]] = {}
        for a in attributions:
            fixed.setdefault(a.probe_id, []).append(a.target)
        if self.target in ("auto", "predicted"):
            for probe_id, targets in fixed.items():
                self._fixed_targets.setdefault(probe_id, targets)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"fixed_targets": {k: list(v) for k, v in self._fixed_targets.items()}}
        if self.calibration is not None:
            state["calibration"] = self.calibration.to_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._fixed_targets = {k: list(v) for k, v in state.get("fixed_targets", {}).items()}
        if state.get("calibration"):
            self._apply(Calibration.from_dict(state["calibration"]))

    # ------------------------------------------------------------- calibration
    def calibrate(self, encoded: Sequence[EncodedProbe]) -> Calibration:
        """Probe the model once, at the first check (or ``prepare``), on the probes themselves.

        * Padding: the shortest probe alone and padded to the longest must give the same
          outputs (at x and at the baseline). If they do not on the tokenizer's padding side but
          do on the other, the other side is used; if on neither (the model reads padding:
          MobileBERT-, ConvBERT-style), probes are only batched with probes of their own length,
          so every probe's scores are those it gets alone.
        * Baseline: a baseline whose outputs jump at the path's start (an all-zero pad embedding
          before a scale-invariant norm, as in from-config Qwen- or Gemma-style models) makes the
          integrand singular there, and no step count resolves it. Another special token
          is then used as the baseline, with a warning naming ``baseline=``; if none works,
          ``AdapterError``.
        """
        if self.calibration is not None:
            return self.calibration
        cal = Calibration(padding_side=getattr(self.adapter, "padding_side", "right"), mix_lengths=True)
        self._apply(cal)
        if not encoded:
            return cal
        with full_precision():
            short = min(encoded, key=len)
            width = max(len(e) for e in encoded)
            if width > len(short) and "width" in inspect.signature(self.adapter.batch).parameters:
                cal = self._check_padding(short, width, cal)
            self._apply(cal)
            cal = self._check_baseline(sorted(encoded, key=len)[:4], cal)
        self._apply(cal)
        self.calibration = cal
        return cal

    def _apply(self, cal: Calibration) -> None:
        self.calibration = cal
        if hasattr(self.adapter, "padding_side"):
            self.adapter.padding_side = cal.padding_side
        if cal.baseline_id is not None and hasattr(self.adapter, "set_baseline_id"):
            self.adapter.set_baseline_id(cal.baseline_id)

    @torch.no_grad()
    def _ends(self, encoded: Sequence[EncodedProbe], alphas: Sequence[float], width: int | None = None) -> list[torch.Tensor]:
        """Outputs (all classes) at path points ``alphas`` for each probe: one tensor per alpha,
        a row per probe. With ``width``, one batch padded to it; otherwise the usual buckets."""
        groups = [list(enumerate(encoded))] if width else list(self._groups(list(enumerate(encoded)), lambda ie: ie[1]))
        rows: dict[int, list[torch.Tensor]] = {}
        adapter, layer = self.adapter, self.adapter.embedding_layer
        for group in groups:
            batch = adapter.batch([e for _, e in group], width=width) if width else adapter.batch([e for _, e in group])
            inputs, baselines = layer.forward(batch.input_ids), layer.forward(batch.baseline_ids)
            outs = []
            for a in alphas:
                path = baselines + a * (inputs - baselines)
                with self._embedding_replaced(batch, path):
                    outs.append(adapter.forward(batch.input_ids, *batch.forward_kwargs.values()).float().cpu())
                _check_finite(outs[-1], [e.probe.id for _, e in group])
            for j, (i, _) in enumerate(group):
                rows[i] = [o[j] for o in outs]
        return [torch.stack([rows[i][k] for i in range(len(encoded))]) for k in range(len(alphas))]

    def _check_padding(self, short: EncodedProbe, width: int, cal: Calibration) -> Calibration:
        alone = self._ends([short], (0.0, 1.0))
        sides = [cal.padding_side, "left" if cal.padding_side == "right" else "right"]
        for side in sides:
            self.adapter.padding_side = side
            padded = self._ends([short], (0.0, 1.0), width=width)
            if all(_close(a, b) for a, b in zip(alone, padded)):
                if side != sides[0]:
                    log.info("padding on the %s: the model's outputs change with %s padding.", side, sides[0])
                return Calibration(padding_side=side, mix_lengths=True)
        self.adapter.padding_side = sides[0]
        log.warning(
            "%s reads its padding (probe %r alone and padded give different outputs), so probes are "
            "batched only with probes of the same length: every probe gets the scores it has alone.",
            type(self.adapter.model).__name__, short.probe.id,
        )
        return Calibration(padding_side=sides[0], mix_lengths=False)

    def _degenerate(self, encoded: Sequence[EncodedProbe]) -> bool:
        """Whether the outputs jump at the path's start: over its first 1/200 they move by more
        than 10% of their largest move along it (a smooth path moves ~0.5%), for at least half the
        probes. The path derivative there is then 20x its mean or more, and no step count resolves
        it (from-config Llama: 93% of the move within the first 1/1000)."""
        f0, fs, *rest = self._ends(encoded, (0.0, 0.005, 0.25, 0.5, 1.0))
        reach = torch.stack([(f - f0).abs() for f in [fs, *rest]]).amax(dim=0)
        jump = (fs - f0).abs()
        moving = reach > 1e-6 * (1 + f0.abs())
        steep = ((jump > 0.1 * reach) & moving).any(dim=1)
        if not bool(moving.any()):
            log.warning(
                "the baseline gives the same outputs as the probes all along the path: every attribution "
                "will be zero. Pass baseline= another token (e.g. baseline='mask' or a token id)."
            )
        return bool(steep.float().mean() >= 0.5)

    def _check_baseline(self, encoded: Sequence[EncodedProbe], cal: Calibration) -> Calibration:
        adapter = self.adapter
        if not hasattr(adapter, "set_baseline_id") or not self._degenerate(encoded):
            return cal
        first = adapter.baseline_id
        tok = getattr(adapter, "tokenizer", None)
        weight = getattr(adapter.embedding_layer, "weight", None)
        candidates = []
        for name in ("mask_token_id", "unk_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
            tid = getattr(tok, name, None)
            if isinstance(tid, int) and tid != first and tid not in candidates:
                if weight is None or (0 <= tid < weight.shape[0] and bool(weight[tid].abs().sum() > 0)):
                    candidates.append(tid)
        for tid in candidates:
            adapter.set_baseline_id(tid)
            if not self._degenerate(encoded):
                token = tok.convert_ids_to_tokens(tid) if tok is not None else tid
                log.warning(
                    "baseline=%r (token id %s) is degenerate for %s: its embedding is all zeros or the model "
                    "normalises it away, so the outputs jump at the path's start and integrals would not "
                    "converge. Using token %r (id %s) as the baseline instead; pass baseline=<token id> to "
                    "choose another.", getattr(adapter, "baseline", "pad"), first, type(adapter.model).__name__,
                    token, tid,
                )
                return Calibration(cal.padding_side, cal.mix_lengths, baseline_id=tid, degenerate_baseline=first)
        adapter.set_baseline_id(first)
        raise AdapterError(
            f"baseline={getattr(adapter, 'baseline', 'pad')!r} (token id {first}) is degenerate for "
            f"{type(adapter.model).__name__}: the outputs jump at the path's start (an all-zero or normalised-away "
            "embedding), so integrals cannot converge, and no other special token works either. Pass "
            "baseline=<token id> with a non-zero embedding row."
        )

    # ------------------------------------------------------------- attribution
    def attribute(self, probes: Any) -> list[ProbeAttribution]:
        """Attribute every probe (for each of its targets); one record per (probe, target)."""
        probe_list = list(probes) if not isinstance(probes, ProbeSet) else list(probes)
        if not probe_list:
            return []
        if not all(isinstance(p, Probe) for p in probe_list):
            probe_list = list(as_probe_set(probe_list))
        encoded = self._encode(probe_list)
        adapter = self.adapter
        with isolated_from_training(adapter.model):
            self.calibrate(encoded)
            # The path evaluates alpha = 1, which is the forward pass of x: a separate forward is
            # needed only where the target is the prediction and not yet fixed.
            scores: list[torch.Tensor | None] = [None] * len(encoded)
            unknown = [i for i, e in enumerate(encoded) if self._targets_for(e.probe, None) is None]
            for i, row in zip(unknown, self._forward_all([encoded[i] for i in unknown])):
                scores[i] = row
            tasks = [
                _Task(enc=e, target=t, scores=s)
                for e, s in zip(encoded, scores)
                for t in self._targets_for(e.probe, s)
            ]
            if self.method == ADAPTIVE:
                self._integrate_adaptive(tasks)
            else:
                self._integrate(tasks)
        return [self._record(t) for t in tasks]

    def _encode(self, probes: list[Probe]) -> list[EncodedProbe]:
        """``prepare()``'s encodings where a probe was prepared (same id, text, pair and label:
        the encoding depends on nothing else), the adapter's for the rest."""
        keys = [_probe_key(p) for p in probes]
        missing = [p for p, k in zip(probes, keys) if k not in self._prepared]
        fresh = iter(self.adapter.encode(missing) if missing else [])
        return [self._prepared[k] if k in self._prepared else next(fresh) for k in keys]

    def predict(self, texts: Sequence[str], probabilities: bool = False) -> list[Any]:
        """Predicted class per text (a list of classes for multi-label; the value for regression).

        ``probabilities=True``: for single-label classification, each text's class probabilities
        (softmax) instead, so a caller can see shifts too small to change the class."""
        probes = [Probe(text=t, id=f"q{i}") for i, t in enumerate(texts)]
        if not probes:
            return []
        with isolated_from_training(self.adapter.model):
            scores = self._forward_all(self.adapter.encode(probes))
        if probabilities and self.adapter.problem_type not in ("regression", "multi_label_classification"):
            return [torch.softmax(s.double(), -1).tolist() for s in scores]
        return [self._prediction(s) for s in scores]

    def _prediction(self, scores: torch.Tensor) -> Any:
        if self.adapter.problem_type == "regression":
            return float(scores[0])
        if self.adapter.problem_type == "multi_label_classification":
            return [i for i, s in enumerate(scores.tolist()) if s > 0]
        return int(scores.argmax())

    def _groups(self, items: Sequence[Any], enc_of: Any) -> Iterable[list[Any]]:
        """Length buckets (at most ~10% padding) whose padded size stays within ``tokens_per_chunk``;
        one length per bucket for a model that reads its padding; one ``adapter.batch_key`` per
        bucket (an encoder-decoder head needs as many <eos> in every row).

        Padding is paid at every integration step, so close lengths matter more than big groups:
        on CPU this halved the tokens per probe of a 32-probe MiniLM check."""
        mix = self.calibration is None or self.calibration.mix_lengths
        key_of = getattr(self.adapter, "batch_key", None) or (lambda _e: 0)

        def length(item: Any) -> int:
            return len(enc_of(item))

        order = sorted(items, key=lambda item: (key_of(enc_of(item)), length(item)))
        group: list[Any] = []
        for item in order:
            width = length(item)
            if group:
                first = length(group[0])
                too_wide = width > 1.1 * first + 1 if mix else width != first
                too_wide = too_wide or key_of(enc_of(item)) != key_of(enc_of(group[0]))
            else:
                too_wide = False
            if group and (too_wide or (len(group) + 1) * width > self.tokens_per_chunk):
                yield group
                group = []
            group.append(item)
        if group:
            yield group

    @torch.no_grad()
    def _forward_all(self, encoded: list[EncodedProbe]) -> list[torch.Tensor]:
        if not encoded:
            return []
        out: dict[int, torch.Tensor] = {}
        with full_precision():
            for group in self._groups(list(enumerate(encoded)), lambda ie: ie[1]):
                batch = self.adapter.batch([e for _, e in group])
                logits = self.adapter.forward(batch.input_ids, *batch.forward_kwargs.values()).float().cpu()
                _check_finite(logits, [e.probe.id for _, e in group])
                for (i, _), row in zip(group, logits):
                    out[i] = row
        return [out[i] for i in range(len(encoded))]

    @contextmanager
    def _embedding_replaced(self, batch: ModelBatch, replacement: torch.Tensor) -> Iterator[None]:
        """Replace the embedding layer's output by ``replacement`` (batch-first, the batch's
        width) on its first call of the forward pass, the one that embeds ``batch.input_ids``.

        Later calls pass through: a T5 decoder sharing the encoder's table (4.57), GPT-2's
        token-type lookup. The model may hold the ids sequence-first (XLNet) or padded further on
        the right (Longformer's window, BigBird's blocks): the replacement follows, the model's own
        padding keeps the model's own embedding."""
        calls: list[int] = []
        sequence_first = getattr(self.adapter, "sequence_first", False)

        def hook(_module: Any, args: tuple, kwargs: dict, output: torch.Tensor) -> Any:
            if calls:
                return None
            calls.append(1)
            ids = args[0] if args else next(iter(kwargs.values()), None)
            return _fit(replacement, ids, batch.input_ids, output, sequence_first)

        handle = self.adapter.embedding_layer.register_forward_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
        if not calls:
            raise AdapterError(
                f"the embedding layer {type(self.adapter.embedding_layer).__name__} was never called in "
                f"{type(self.adapter.model).__name__}'s forward; pass embedding_layer= the module that embeds "
                "input_ids."
            )

    def _integrate_adaptive(self, tasks: list[_Task]) -> None:
        rows = [(t, a) for t in tasks for a in uniform_points(self.n_steps)]
        while rows:
            self._evaluate_path(rows)
            pending = {id(t): t for t, _ in rows}.values()
            rows = []
            for t in pending:
                points = sorted(t.path)
                values = [t.path[a][0] for a in points]
                token_slopes = torch.stack([t.path[a][1] for a in points])
                t.f_baseline, t.f_input = values[0], values[-1]
                t.token_scores = torch.tensor(trapezoid_weights(points)) @ token_slopes
                t.n_steps = len(points)
                self._set_delta(t)
                if self._converged(t):
                    continue
                errors = interval_errors(points, token_slopes.sum(dim=1).tolist(), values)
                allowed = max(self.rel_tolerance * abs(t.f_input - t.f_baseline), self.abs_tolerance)
                budget = self.max_steps + 1 - len(points)
                rows += [(t, a) for a in points_to_add(points, errors, allowed, budget)]

    def _evaluate_path(self, rows: list[tuple[_Task, float]]) -> None:
        """F and the token path derivatives ``(x - b) . dF/de`` at each (task, alpha), batched:
        the embedding layer's output is replaced by ``b + alpha (x - b)`` for every row."""
        layer = self.adapter.embedding_layer
        with full_precision():
            for group in self._groups(rows, lambda row: row[0].enc):
                batch = self.adapter.batch([t.enc for t, _ in group])
                with torch.no_grad():  # a lookup, not a model pass: ``forward`` keeps the layer's hooks out of it
                    inputs, baselines = layer.forward(batch.input_ids), layer.forward(batch.baseline_ids)
                direction = inputs - baselines
                alphas = torch.tensor([a for _, a in group], dtype=inputs.dtype, device=inputs.device)
                path = (baselines + alphas.view(-1, *[1] * (inputs.dim() - 1)) * direction).requires_grad_()
                with self._embedding_replaced(batch, path):
                    logits = self.adapter.forward(batch.input_ids, *batch.forward_kwargs.values())
                targets = torch.tensor([t.target for t, _ in group], device=logits.device)
                chosen = logits.gather(1, targets[:, None]).squeeze(1)
                _check_finite(logits.detach(), [t.enc.probe.id for t, _ in group])
                (grads,) = torch.autograd.grad(chosen.sum(), path)
                slopes = (grads * direction).float().sum(dim=-1).cpu()
                for i, ((t, a), f, out) in enumerate(zip(group, chosen.detach().float().cpu(), logits.detach().float().cpu())):
                    t.path[a] = (float(f), batch.real(i, slopes[i]))
                    if a == 1.0 and t.scores is None:
                        t.scores = out  # the forward pass of x itself: the model's scores for the record

    def _integrate(self, tasks: list[_Task]) -> None:
        """Captum's fixed-grid rules (its alphas and weights) on the same path evaluation,
        redone at doubled steps for the probes that miss, up to ``max_steps``."""
        pending = list(tasks)
        steps = self.n_steps
        while pending:
            for group in self._groups(pending, lambda t: t.enc):
                self._integrate_group(group, steps)
            pending = [t for t in pending if not self._converged(t)]
            steps *= 2
            if steps > self.max_steps:
                break

    def _integrate_group(self, group: list[_Task], steps: int) -> None:
        step_sizes, alphas_of = approximation_parameters(self.method)
        alphas, weights = list(alphas_of(steps)), list(step_sizes(steps))
        for t in group:
            t.path = {a: v for a, v in t.path.items() if a in (0.0, 1.0)}
        self._evaluate_path([(t, a) for t in group for a in sorted(set(alphas) | {0.0, 1.0}) if a not in t.path])
        for t in group:
            t.f_baseline, t.f_input = t.path[0.0][0], t.path[1.0][0]
            t.token_scores = sum(w * t.path[a][1] for w, a in zip(weights, alphas))
            t.n_steps = steps
            self._set_delta(t)

    @staticmethod
    def _set_delta(t: _Task) -> None:
        gap = t.f_input - t.f_baseline
        t.delta = float(t.token_scores.sum()) - gap
        t.rel_delta = abs(t.delta) / abs(gap) if gap != 0 else (0.0 if t.delta == 0 else float("inf"))

    def _converged(self, t: _Task) -> bool:
        return t.rel_delta <= self.rel_tolerance or abs(t.delta) <= self.abs_tolerance

    def _record(self, t: _Task) -> ProbeAttribution:
        enc, probe = t.enc, t.enc.probe
        token_scores = t.token_scores.tolist()
        word_scores = [float(sum(token_scores[w.start : w.end])) for w in enc.words]
        norm = sum(abs(s) for s in word_scores)
        shares = [s / norm if norm > 0 else 0.0 for s in word_scores]
        names = self.adapter.label_names
        prediction = self._prediction(t.scores)
        if isinstance(prediction, list):
            prediction_name: Any = [names[i] for i in prediction]
        elif isinstance(prediction, int):
            prediction_name = names[prediction]
        else:
            prediction_name = prediction
        return ProbeAttribution(
            probe_id=probe.id,
            text=probe.text,
            text_pair=probe.text_pair,
            label=probe.label,
            target=t.target,
            target_name=names[t.target] if t.target < len(names) else str(t.target),
            prediction=prediction,
            prediction_name=prediction_name,
            scores=[float(x) for x in t.scores.tolist()],
            tokens=list(enc.tokens),
            token_scores=token_scores,
            words=[w.text for w in enc.words],
            word_scores=word_scores,
            word_shares=shares,
            word_segments=[w.segment for w in enc.words],
            word_token_spans=[[w.start, w.end] for w in enc.words],
            delta=t.delta,
            rel_delta=t.rel_delta,
            n_steps=t.n_steps,
            converged=self._converged(t),
            f_input=t.f_input,
            f_baseline=t.f_baseline,
            truncated=enc.truncated,
            baseline_id=getattr(self.adapter, "baseline_id", None),
        )
