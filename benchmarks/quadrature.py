"""Quadrature policies for the path integral, compared on the real integrands of real probes.

Which rule reaches a token error (against a 128-step reference) with the fewest gradient
evaluations? Running every candidate through the engine would cost a check per candidate, so
each probe's integrand is sampled once, densely: F and every token's path derivative at
``--dense + 1`` equally spaced points of the path (one batched engine pass). A cubic spline
through those samples stands in for the integrand at any point, and each policy is played on
it: the points it would evaluate, the token scores its rule gives, the delta it would report.

The engine's own policy (12 equal intervals, then the intervals that miss bisected until the
relative delta is at most 5%) is played with the engine's own functions
(``explain_callbacks.attribution.quadrature``), and the real engine is run on the same probes
beside it: the two must agree (evaluations and token error), which checks the stand-in.

Candidates (issue 24):

- *coarser start*: fewer first intervals, bisected where an interval's known error
  (trapezoid minus ``F(b) - F(a)``) is large; also with a stricter rule (the sum of the
  intervals' absolute errors, not the signed total, within the tolerance);
- *uniform doubling*: when the first grid misses, the next equal grid at twice the intervals
  (nested, every point kept), so the trapezoid rule's error cancellation between intervals stays;
- *higher-order rules using F*: each interval's known error spread over the tokens (in
  proportion to their share of the interval), the whole path's error spread by each token's
  projection on the total derivative, the trapezoid rule in F instead of alpha, Gregory's end
  corrections, Gauss-Legendre at the same points;
- *from the previous check*: the previous check's refined grid as the start, a grid placed by
  the previous check's derivative (its points equidistributing ``sqrt |dF/dalpha|``), and the
  previous check's scores as a control variate (``I2 = I1 + Q(g2 - g1)`` on a subset of its
  points), played on the same probes after one more epoch of fine-tuning.

The same model and probes as ``speed.py`` (all-MiniLM-L6-v2 with a two-class head, one epoch on
300 generated reviews; 32 generated probes), plus long texts: real Rotten Tomatoes snippets of
one movie and class joined to 110 words (``shortcut_reviews.read_reviews``, ~140 tokens).

    python benchmarks/quadrature.py --threads 1            # 32 short + 6 long probes (11 min on 2 shared cores)
    python benchmarks/quadrature.py --probes 4 --long 1 --dense 32 --out /tmp/x   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from scipy.interpolate import CubicSpline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from speed import REFERENCE_STEPS, fine_tune, load_classifier, long_texts
from synthetic_reviews import planted_reviews
from tables import markdown_table, print_rich

from explain_callbacks import AttributionEngine, ProbeSet
from explain_callbacks.attribution.engine import _Task
from explain_callbacks.attribution.isolation import isolated_from_training
from explain_callbacks.attribution.quadrature import interval_errors, points_to_add, trapezoid_weights, uniform_points

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.05
MAX_POINTS = 129  # the engine's max_steps + 1


# ------------------------------------------------------------------------- the integrands
@dataclass
class Integrand:
    """One probe's path integrand: F and the token derivatives as splines over dense samples,
    and the reference token scores (``REFERENCE_STEPS`` Gauss-Legendre steps through the engine)."""

    f: CubicSpline
    g: CubicSpline
    reference: np.ndarray

    def sample(self, points: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(points, dtype=float)
        return self.f(a), self.g(a)

    def token_error(self, scores: np.ndarray) -> float:
        return float(np.abs(scores - self.reference).sum() / np.abs(self.reference).sum())


def sample_integrands(model: Any, tokenizer: Any, probes: ProbeSet, dense: int) -> list[Integrand]:
    """Every probe's F and token derivatives at ``dense + 1`` equal points (the engine's own path
    evaluation), and its reference scores."""
    engine = AttributionEngine(model, tokenizer, target="gold")
    encoded = engine._encode(list(probes))
    alphas = [i / dense for i in range(dense + 1)]
    with isolated_from_training(model):
        engine.calibrate(encoded)
        tasks = [_Task(enc=e, target=t) for e in encoded for t in engine._targets_for(e.probe, None)]
        engine._evaluate_path([(t, a) for t in tasks for a in alphas])
    reference = AttributionEngine(model, tokenizer, target="gold", method="gausslegendre",
                                  n_steps=REFERENCE_STEPS, max_steps=REFERENCE_STEPS).attribute(probes)
    x = np.array(alphas)
    out = []
    for t, ref in zip(tasks, reference):
        f = np.array([t.path[a][0] for a in alphas])
        g = torch.stack([t.path[a][1] for a in alphas]).double().numpy()
        out.append(Integrand(CubicSpline(x, f), CubicSpline(x, g, axis=0), np.array(ref.token_scores)))
    return out


# --------------------------------------------------------------------------------- rules
def trapezoid(points: np.ndarray, f: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.array(trapezoid_weights(list(points))) @ g


def spread_interval_errors(points: np.ndarray, f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Each interval's known error spread over its tokens in proportion to |their share|."""
    h = np.diff(points)[:, None]
    parts = h * (g[:-1] + g[1:]) / 2
    miss = np.diff(f) - parts.sum(1)
    mass = np.abs(parts).sum(1, keepdims=True)
    return (parts + miss[:, None] * np.abs(parts) / np.where(mass == 0, 1, mass)).sum(0)


def spread_by_projection(points: np.ndarray, f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The whole path's known error spread by each token's projection on the total derivative."""
    w = np.array(trapezoid_weights(list(points)))
    s = g.sum(1)
    c = (w * s) @ g / ((w * s) @ s)
    scores = w @ g
    return scores + ((f[-1] - f[0]) - scores.sum()) * c


def trapezoid_in_f(points: np.ndarray, f: np.ndarray, g: np.ndarray, floor: float = 0.3) -> np.ndarray:
    """Each token's share of dF/dalpha integrated against dF (trapezoid in F) where the total
    derivative is well away from zero, the alpha trapezoid elsewhere."""
    s = g.sum(1)
    big = floor * np.abs(s).max()
    scores = np.zeros(g.shape[1])
    for i in range(len(points) - 1):
        if min(abs(s[i]), abs(s[i + 1])) >= big and s[i] * s[i + 1] > 0:
            scores += (f[i + 1] - f[i]) * (g[i] / s[i] + g[i + 1] / s[i + 1]) / 2
        else:
            scores += (points[i + 1] - points[i]) * (g[i] + g[i + 1]) / 2
    return scores


def gregory_weights(k: int) -> np.ndarray:
    """Trapezoid on k equal intervals with Gregory's second-order end corrections."""
    w = np.full(k + 1, 1.0 / k)
    for i, v in enumerate((3 / 8, 7 / 6, 23 / 24)):
        w[i] = w[-1 - i] = v / k
    return w


# ------------------------------------------------------------------------------- policies
@dataclass
class Played:
    evaluations: int
    scores: np.ndarray
    delta: float
    gap: float
    points: np.ndarray

    @property
    def rel_delta(self) -> float:
        return abs(self.delta) / abs(self.gap) if self.gap else (0.0 if self.delta == 0 else float("inf"))

    @property
    def converged(self) -> bool:
        return self.rel_delta <= TOLERANCE or abs(self.delta) <= 1e-4


def bisected(start: Sequence[float], rule: Callable = trapezoid, strict: float | None = None) -> Callable[[Integrand], Played]:
    """The engine's policy from ``start``: bisect the intervals that miss until the signed delta
    is within the tolerance (``strict``: until the sum of absolute interval errors is within
    ``strict`` x the tolerance), up to ``MAX_POINTS``."""

    def play(it: Integrand) -> Played:
        points = sorted(set(start))
        while True:
            f, g = it.sample(points)
            s = g.sum(1)
            errors = interval_errors(points, s.tolist(), f.tolist())
            gap = f[-1] - f[0]
            allowed = max(TOLERANCE * abs(gap), 1e-4)
            miss = abs(sum(errors)) if strict is None else sum(abs(e) for e in errors) / strict
            if miss <= allowed or len(points) >= MAX_POINTS:
                break
            new = points_to_add(points, errors, allowed if strict is None else strict * allowed, MAX_POINTS - len(points))
            if not new:
                break
            points = sorted(set(points) | set(new))
        a = np.array(points)
        return Played(len(points), rule(a, f, g), float(sum(errors)), float(gap), a)

    return play


def doubled(start: int) -> Callable[[Integrand], Played]:
    """Equal intervals, doubled (nested) until the signed delta is within the tolerance."""

    def play(it: Integrand) -> Played:
        k = start
        while True:
            a = np.linspace(0, 1, k + 1)
            f, g = it.sample(a)
            scores = trapezoid(a, f, g)
            delta = float(scores.sum() - (f[-1] - f[0]))
            if abs(delta) <= max(TOLERANCE * abs(f[-1] - f[0]), 1e-4) or 2 * k + 1 > MAX_POINTS:
                return Played(k + 1, scores, delta, float(f[-1] - f[0]), a)
            k *= 2

    return play


def fixed(points: np.ndarray, weights: np.ndarray) -> Callable[[Integrand], Played]:
    def play(it: Integrand) -> Played:
        f, g = it.sample(points)
        f0, f1 = it.sample([0.0, 1.0])[0]
        scores = weights @ g
        return Played(len(points), scores, float(scores.sum() - (f1 - f0)), float(f1 - f0), points)

    return play


def gauss_legendre(n: int) -> Callable[[Integrand], Played]:
    x, w = np.polynomial.legendre.leggauss(n)
    return fixed((x + 1) / 2, w / 2)


def from_previous_grid(previous: Sequence[Played]) -> list[Callable[[Integrand], Played]]:
    """The previous check's refined grid as this check's start, refined as the engine does."""
    return [bisected(list(p.points)) for p in previous]


def placed_by_previous(previous_integrands: Sequence[Integrand], previous: Sequence[Played], k: int) -> list[Callable[[Integrand], Played]]:
    """k intervals equidistributing sqrt|dF/dalpha| as the previous check's points saw it, then
    bisected as the engine does."""
    plays = []
    for it, p in zip(previous_integrands, previous):
        s = np.abs(it.sample(p.points)[1].sum(1))
        x = np.linspace(0, 1, 2049)
        density = np.sqrt(np.interp(x, p.points, s))
        density += 0.5 * density.mean() + 1e-12
        cdf = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2)])
        start = np.interp(np.linspace(0, 1, k + 1), cdf / cdf[-1], x)
        start[0], start[-1] = 0.0, 1.0
        plays.append(bisected(list(start)))
    return plays


def control_variate(previous_integrands: Sequence[Integrand], previous: Sequence[Played], every: int) -> list[Callable[[Integrand], Played]]:
    """``I2 = I1 + Q(g2 - g1)`` on every ``every``-th point of the previous check's grid; the
    difference's known interval errors decide where more of those points are added. When all of
    them are not enough, the probe falls back to the engine's policy on a fresh start."""
    plays = []
    for old, p in zip(previous_integrands, previous):
        f1, g1 = old.sample(p.points)

        def play(it: Integrand, f1=f1, g1=g1, p=p) -> Played:
            n = len(p.points)
            chosen = sorted(set(range(0, n, every)) | {n - 1})
            while True:
                a = p.points[chosen]
                f2, g2 = it.sample(a)
                d, df = g2 - g1[chosen], f2 - f1[chosen]
                errors = interval_errors(list(a), d.sum(1).tolist(), df.tolist())
                scores = p.scores + trapezoid(a, df, d)
                gap = float(f2[-1] - f2[0])
                delta = float(scores.sum() - gap)
                allowed = max(TOLERANCE * abs(gap), 1e-4)
                if (abs(delta) <= allowed and sum(abs(e) for e in errors) <= allowed) or len(chosen) == n:
                    break
                worst = [i for i in np.argsort(-np.abs(errors)) if chosen[i + 1] - chosen[i] > 1]
                chosen = sorted(set(chosen) | {(chosen[i] + chosen[i + 1]) // 2 for i in worst[: max(1, len(errors) // 3)]})
            if abs(delta) <= allowed:
                return Played(len(chosen), scores, delta, gap, a)
            fresh = bisected(uniform_points(12))(it)
            return Played(len(chosen) + fresh.evaluations, fresh.scores, fresh.delta, fresh.gap, fresh.points)

        plays.append(play)
    return plays


# ------------------------------------------------------------------------------ reporting
def table_row(name: str, evaluations: Sequence[int], converged: Sequence[bool], errors: Sequence[float]) -> dict[str, Any]:
    return {
        "policy": name,
        "evaluations": float(np.mean(evaluations)),
        "share_under_tolerance": float(np.mean(converged)),
        "mean_token_error": float(np.mean(errors)),
        "p95_token_error": float(np.quantile(errors, 0.95)),
    }


def summarise(name: str, plays: Sequence[Played], integrands: Sequence[Integrand]) -> dict[str, Any]:
    return table_row(name, [p.evaluations for p in plays], [p.converged for p in plays],
                     [it.token_error(p.scores) for p, it in zip(plays, integrands)])


COLUMNS = [
    ("policy", "policy", "{}"),
    ("evaluations", "evaluations / probe", "{:.1f}"),
    ("share_under_tolerance", "rel.d <= 5%", "{:.0%}"),
    ("mean_token_error", "token err", "{:.4f}"),
    ("p95_token_error", "p95 token err", "{:.4f}"),
]

TARGET = "<= 8 evaluations per probe, >= 95% under 5% relative delta, token error <= 0.0135"


def meets(row: dict[str, Any]) -> bool:
    return row["evaluations"] <= 8 and row["share_under_tolerance"] >= 0.95 and row["mean_token_error"] <= 0.0135


def cold_policies() -> dict[str, Callable[[Integrand], Played]]:
    policies: dict[str, Callable[[Integrand], Played]] = {"engine default: 12 intervals, bisected": bisected(uniform_points(12))}
    for k in (6, 8):
        policies[f"coarser start: {k} intervals, bisected"] = bisected(uniform_points(k))
        policies[f"coarser start: {k}, bisected until the absolute interval errors sum to <= 2x tolerance"] = bisected(uniform_points(k), strict=2.0)
    for k in (6, 8):
        policies[f"uniform doubling from {k} intervals"] = doubled(k)
    policies["12, bisected; interval errors spread over tokens (F)"] = bisected(uniform_points(12), spread_interval_errors)
    policies["12, bisected; path error spread by projection (F)"] = bisected(uniform_points(12), spread_by_projection)
    policies["11, bisected; path error spread by projection (F)"] = bisected(uniform_points(11), spread_by_projection)
    policies["8, bisected; path error spread by projection (F)"] = bisected(uniform_points(8), spread_by_projection)
    policies["8, bisected; trapezoid in F where dF/dalpha is large"] = bisected(uniform_points(8), trapezoid_in_f)
    policies["7 intervals, Gregory end corrections (fixed)"] = fixed(np.linspace(0, 1, 8), gregory_weights(7))
    policies["Gauss-Legendre 8 (fixed)"] = gauss_legendre(8)
    return policies


def play_all(policies: dict[str, Callable[[Integrand], Played]], integrands: Sequence[Integrand]) -> dict[str, list[Played]]:
    return {name: [play(it) for it in integrands] for name, play in policies.items()}


def engine_row(model: Any, tokenizer: Any, probes: ProbeSet, integrands: Sequence[Integrand]) -> dict[str, Any]:
    """The real engine at its defaults on the same probes (checks the spline stand-in)."""
    records = AttributionEngine(model, tokenizer, target="gold").attribute(probes)
    return table_row("engine defaults, run for real (check of the stand-in)", [r.n_steps for r in records],
                     [r.converged for r in records],
                     [it.token_error(np.array(r.token_scores)) for r, it in zip(records, integrands)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probes", type=int, default=32, help="short generated probes")
    p.add_argument("--long", type=int, default=6, help="long real-review probes (0: none)")
    p.add_argument("--dense", type=int, default=128, help="intervals of the dense sample")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--train-examples", type=int, default=300)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--no-next-check", action="store_true", help="skip the second check (previous-check policies)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--name", default="quadrature")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer, model_info = load_classifier(True, args.seed, args.train_examples, args.lr)
    data = planted_reviews(args.probes, shortcut=None, seed=args.seed + 1000)
    short = ProbeSet([{"text": t, "label": y, "id": f"p{i}"} for i, (t, y) in enumerate(zip(data.texts, data.labels))])
    sets = {"short (speed benchmark's probes)": short}
    if args.long:
        sets["long (real reviews, 110 words)"] = ProbeSet(
            [{"text": t, "label": y, "id": f"l{i}"} for i, (t, y) in enumerate(long_texts(args.long, args.seed))])
    tables: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, tuple[list[Integrand], list[Played]]] = {}
    for name, probes in sets.items():
        integrands = sample_integrands(model, tokenizer, probes, args.dense)
        played = play_all(cold_policies(), integrands)
        rows = [engine_row(model, tokenizer, probes, integrands)]
        rows += [summarise(policy, plays, integrands) for policy, plays in played.items()]
        tables[f"{name}, first check"] = rows
        first[name] = (integrands, played["engine default: 12 intervals, bisected"])
        tokens = np.mean([len(it.reference) for it in integrands])
        print(f"{name}: {len(integrands)} probes, {tokens:.0f} tokens on average", flush=True)
    if not args.no_next_check:
        model.train()
        fine_tune(model, tokenizer, planted_reviews(args.train_examples, shortcut=None, seed=args.seed + 7),
                  seed=args.seed + 7, lr=args.lr)
        model.eval()
        name = "short (speed benchmark's probes)"
        old_integrands, old_played = first[name]
        integrands = sample_integrands(model, tokenizer, sets[name], args.dense)
        change = np.mean([np.abs(new.reference - old.reference).sum() / np.abs(old.reference).sum()
                          for new, old in zip(integrands, old_integrands)])
        per_probe = {
            "from the previous check's refined grid": from_previous_grid(old_played),
            "8 intervals placed by the previous check's dF/dalpha, bisected": placed_by_previous(old_integrands, old_played, 8),
            "previous scores as control variate, every 2nd point": control_variate(old_integrands, old_played, 2),
        }
        rows = [summarise("engine default: 12 intervals, bisected", [bisected(uniform_points(12))(it) for it in integrands], integrands)]
        rows += [summarise(policy, [play(it) for play, it in zip(plays, integrands)], integrands)
                 for policy, plays in per_probe.items()]
        tables[f"{name}, next check (one more epoch; scores moved {change:.0%} in L1)"] = rows
    report = {
        "schema_version": 1,
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "threads": torch.get_num_threads(), "tolerance": TOLERANCE, "reference_steps": REFERENCE_STEPS},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
        "model": model_info,
        "tables": tables,
        "target": TARGET,
        "met_by": [r["policy"] for rows in tables.values() for r in rows if meets(r)],
        "seconds": time.perf_counter() - started,
    }
    print_tables(report)
    write_results(report, args.out / args.name)
    return report


def print_tables(report: dict[str, Any]) -> None:
    for title, rows in report["tables"].items():
        print_rich(COLUMNS, rows, title)
    print(f"target ({report['target']}): met by {report['met_by'] or 'no policy'}")


def write_results(report: dict[str, Any], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    s = report["settings"]
    lines = [f"# Quadrature policies on real integrands ({s['probes']} short, {s['long']} long probes; dense sample {s['dense']} intervals)", "",
             f"Model: {report['model']['model']}, fine-tuned 1 epoch on {s['train_examples']} generated reviews at lr {s['lr']:g}. "
             f"Token error: L1 distance to {REFERENCE_STEPS}-step Gauss-Legendre over the reference's L1 norm. "
             f"Evaluations: gradient evaluations along the path per probe. Run time {report['seconds']:.0f} s, "
             f"{s['threads']} torch thread(s).", ""]
    for title, rows in report["tables"].items():
        lines += [f"## {title}", "", markdown_table(COLUMNS, rows), ""]
    lines += [f"Target ({report['target']}): met by {', '.join(report['met_by']) or 'no policy'}.", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
