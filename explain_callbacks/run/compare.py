"""Compare two runs: what does the new model lean on that the old one did not?

``compare_runs(base, run)`` reads both run folders (``run/readers.py``) and compares their last
checks on the probes they share: the same probe set (fingerprint) when both used it, otherwise
the probes with the same id and text (or, failing ids, the same text), and says so.

Word shares. In one probe a word's share is the sum of its occurrences' ``|word_share|`` (shares
are L1-normalised, so a probe's words sum to 1); words are lowercased, punctuation and single
characters left out (:func:`~explain_callbacks.detection.drift.rankable_word`). A word's change is
the mean, over the shared probes that carry it, of its share in the run minus its share in the
base (paired: the same probe on both sides).

Noise. A change must pass two tests, and its p-value is the larger of the two:

* across probes: a bootstrap over the shared probes that carry the word (``N_BOOTSTRAP``
  resamples, seeded, its own generator), the two-sided p-value of a mean change of zero
  (resampled changes centred on their mean). It asks whether the change holds across probes;
  it cannot see the seed effect (two seeds of one recipe lean on a word differently in every
  probe), so
* against the run-to-run noise of the recipe: with a seed repeat of the base (``base_repeat``:
  the same recipe, another seed), every word's change between base and repeat is what the
  recipe does by chance; without one, the changes of all the words tested between base and run
  stand in for it (most words do not move for a reason, and a robust spread ignores the few
  that do). The change's z-score against that spread (median, 1.4826 x median absolute
  deviation) gives a normal two-sided p-value. With a repeat the word's own repeat change is
  added to the spread (in quadrature): a word that moves between two seeds of the base recipe
  (a from-scratch model's handling of "not") needs a larger change than one that does not.

Every word carried by at least ``min_probes`` shared probes is one family; the false discovery
rate is controlled over it (Benjamini-Hochberg, ``scipy.stats.false_discovery_control``) at
``ALPHA``. A change is significant when its q-value is at most ``ALPHA`` and its size at least
``min_change`` (default ``MIN_CHANGE``, a share of the probe's attribution); ``compare`` fails
(exit 1) on a significant rise, or on an alert the run raised that the base did not, at or above
``--fail-on`` (a rising word counts as a warning).

Beside the words: shortcut candidates and alerts found in one run only, per-probe prediction
changes, the rank-biased overlap of each shared probe's top words (``detection/drift.py``), and
the two runs' faithfulness at their last checks. Pure functions over read runs: the CLI prints
and renders what :func:`compare_runs` returns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import false_discovery_control, norm

from explain_callbacks.attribution.records import Alert, ProbeAttribution, at_or_above, json_safe
from explain_callbacks.detection.drift import compare_attributions, rankable_word
from explain_callbacks.run.directory import RunDirError
from explain_callbacks.run.readers import RunData, read_run

ALPHA = 0.05  # false discovery rate over the words tested
MIN_CHANGE = 0.15  # a change smaller than this share of a probe's attribution never fails
MIN_PROBES = 3  # shared probes a word must be in to be tested
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
TOP_K = 10  # top words per probe for the rank-biased overlap
CANDIDATES_COMPARED = 10  # the first candidates of each run that are set against the other's
FAITHFULNESS_FIGURES = ("comprehensiveness", "random_comprehensiveness", "comprehensiveness_gap", "sufficiency",
                        "share_above_random")

ProbeKey = tuple[str, int]  # (probe id, target)


@dataclass
class WordChange:
    """One word's share in the base and the run (mean over the shared probes that carry it)."""

    word: str
    n_probes: int
    base_share: float
    run_share: float
    change: float
    p_value: float | None = None  # None: carried by too few probes to be tested
    q_value: float | None = None
    significant: bool = False


@dataclass
class ProbeChange:
    """One shared probe: the prediction on each side and the overlap of its top words."""

    probe_id: str
    target: int
    text: str
    base_prediction: Any
    run_prediction: Any
    label: Any
    rbo: float | None

    @property
    def prediction_changed(self) -> bool:
        return self.base_prediction != self.run_prediction


@dataclass
class Comparison:
    """What ``compare`` found; ``to_dict`` is strict JSON."""

    base: dict[str, Any]
    run: dict[str, Any]
    probes: dict[str, Any]
    noise: dict[str, Any]
    thresholds: dict[str, Any]
    words: list[WordChange]
    probe_changes: list[ProbeChange]
    mean_rbo: float | None
    new_alerts: list[Alert]
    gone_alerts: list[Alert]
    new_candidates: list[dict[str, Any]]
    gone_candidates: list[dict[str, Any]]
    faithfulness: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def rising(self) -> list[WordChange]:
        """Significant rises, largest first."""
        return sorted((w for w in self.words if w.significant and w.change > 0), key=lambda w: (-w.change, w.word))

    @property
    def falling(self) -> list[WordChange]:
        return sorted((w for w in self.words if w.significant and w.change < 0), key=lambda w: (w.change, w.word))

    def failures(self, fail_on: str = "warning") -> list[str]:
        """Why ``compare`` fails at ``fail_on``: new alerts at or above it, and (a rising word is
        warning-level) significant rises when ``fail_on`` is ``"warning"``."""
        reasons = [f"new {a.severity} alert {a.rule}" + (f" on '{a.token}'" if a.token else "")
                   for a in self.new_alerts if at_or_above(a.severity, fail_on)]
        if at_or_above("warning", fail_on):
            reasons += [f"'{w.word}' rose from {w.base_share:.2f} to {w.run_share:.2f} of the attribution "
                        f"({w.n_probes} probes, q = {w.q_value:.3g})" for w in self.rising]
        return reasons

    def to_dict(self) -> dict[str, Any]:
        out = {
            "base": self.base, "run": self.run, "probes": self.probes, "noise": self.noise,
            "thresholds": self.thresholds, "mean_rbo": self.mean_rbo,
            "words": [asdict(w) for w in self.words],
            "probe_changes": [{**asdict(p), "prediction_changed": p.prediction_changed} for p in self.probe_changes],
            "new_alerts": [a.to_dict() for a in self.new_alerts],
            "gone_alerts": [a.to_dict() for a in self.gone_alerts],
            "new_candidates": self.new_candidates, "gone_candidates": self.gone_candidates,
            "faithfulness": self.faithfulness, "notes": self.notes,
        }
        return json_safe(out)


# --------------------------------------------------------------------------- pure pieces


def probe_word_shares(attribution: ProbeAttribution) -> dict[str, float]:
    """Each rankable lowercased word of one probe with its occurrences' ``|share|`` summed."""
    shares: dict[str, float] = {}
    for word, share in zip(attribution.words, attribution.word_shares):
        key = word.lower()
        if rankable_word(key) and share == share:
            shares[key] = shares.get(key, 0.0) + abs(float(share))
    return shares


def match_probes(base: Sequence[ProbeAttribution], run: Sequence[ProbeAttribution],
                 same_fingerprint: bool) -> tuple[list[tuple[ProbeAttribution, ProbeAttribution]], str]:
    """The attributions of the probes both runs hold, paired, and how they were matched: by
    (id, target) with the same text, or by (text, pair, target) when no id matches."""
    def text_of(a: ProbeAttribution) -> tuple[str, str | None]:
        return (a.text, a.text_pair)

    by_id = {(a.probe_id, a.target): a for a in run}
    pairs = [(a, by_id[(a.probe_id, a.target)]) for a in base
             if (a.probe_id, a.target) in by_id and text_of(by_id[(a.probe_id, a.target)]) == text_of(a)]
    how = "the same probe set, by fingerprint" if same_fingerprint else "probes with the same id and text"
    if not pairs:
        by_text = {(text_of(a), a.target): a for a in run}
        pairs = [(a, by_text[(text_of(a), a.target)]) for a in base if (text_of(a), a.target) in by_text]
        how = "probes with the same text (no id matched)"
    return pairs, how


def bootstrap_p_value(changes: Sequence[float], rng: np.random.Generator, n_resamples: int = N_BOOTSTRAP) -> float:
    """Two-sided bootstrap p-value of a zero mean change: resampled means of the changes centred
    on their mean, against the observed mean. One probe, or no spread and no change: 1."""
    values = np.asarray(changes, dtype=float)
    observed = abs(float(values.mean()))
    if len(values) < 2 or observed == 0:
        return 1.0
    centred = values - values.mean()
    means = centred[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    return float((1 + np.sum(np.abs(means) >= observed)) / (n_resamples + 1))


def spread_p_value(change: float, noise: Sequence[float], own_noise: float = 0.0) -> float:
    """Two-sided normal p-value of ``change`` against the robust spread of ``noise`` (the words'
    changes between two runs of one recipe): z = (change - median) / sqrt((1.4826 MAD)^2 +
    own_noise^2), ``own_noise`` the word's own change between those runs. Fewer than three noise
    values say nothing: 1."""
    values = np.asarray(noise, dtype=float)
    if len(values) < 3:
        return 1.0
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    if spread <= 0:
        spread = float(np.sqrt(np.mean((values - centre) ** 2))) or 1e-12
    return float(2 * norm.sf(abs(change - centre) / math.hypot(spread, own_noise)))


def _changes(pairs: Sequence[tuple[dict[str, float], dict[str, float]]]) -> tuple[list[WordChange], dict[str, list[float]]]:
    """Each word's mean shares over the pairs that carry it, and its per-probe changes."""
    rows, per_probe = [], {}
    for word in sorted({w for b, r in pairs for w in (*b, *r)}):
        carriers = [(b.get(word, 0.0), r.get(word, 0.0)) for b, r in pairs if word in b or word in r]
        base, run = np.array([b for b, _ in carriers]), np.array([r for _, r in carriers])
        rows.append(WordChange(word, len(carriers), float(base.mean()), float(run.mean()), float((run - base).mean())))
        per_probe[word] = (run - base).tolist()
    return rows, per_probe


def word_changes(pairs: Sequence[tuple[dict[str, float], dict[str, float]]],
                 repeat_pairs: Sequence[tuple[dict[str, float], dict[str, float]]] | None = None,
                 min_probes: int = MIN_PROBES, min_change: float = MIN_CHANGE, alpha: float = ALPHA,
                 seed: int = BOOTSTRAP_SEED) -> list[WordChange]:
    """Every word's change between paired per-probe shares (base, run), tested across probes and
    against the noise (``repeat_pairs``: (base, repeat) shares of the same probes; otherwise the
    tested words' own changes), FDR controlled over the words carried by at least
    ``min_probes`` probes. Largest change first."""
    rng = np.random.default_rng(seed)
    changes, per_probe = _changes(pairs)
    tested = [w for w in changes if w.n_probes >= min_probes]
    repeat = {w.word: w.change for w in _changes(repeat_pairs)[0]} if repeat_pairs is not None else {}
    noise = list(repeat.values()) if repeat_pairs is not None else [w.change for w in tested]
    for row in tested:
        row.p_value = max(bootstrap_p_value(per_probe[row.word], rng),
                          spread_p_value(row.change, noise, abs(repeat.get(row.word, 0.0))))
    if tested:
        for row, q in zip(tested, false_discovery_control([w.p_value for w in tested], method="bh")):
            row.q_value = float(q)
            row.significant = bool(q <= alpha and abs(row.change) >= min_change)
    return sorted(changes, key=lambda w: (-abs(w.change), w.word))


def _alert_identity(alert: Alert) -> tuple[str, str]:
    return (alert.rule, str(alert.token) if alert.token is not None else alert.key)


def alert_difference(base: Sequence[Alert], run: Sequence[Alert]) -> tuple[list[Alert], list[Alert]]:
    """Alerts (by rule and token, else key) the run raised and the base did not, and the reverse."""
    base_ids = {_alert_identity(a) for a in base}
    run_ids = {_alert_identity(a) for a in run}
    return [a for a in run if _alert_identity(a) not in base_ids], [a for a in base if _alert_identity(a) not in run_ids]


def candidate_difference(base: Sequence[Mapping[str, Any]], run: Sequence[Mapping[str, Any]],
                         limit: int = CANDIDATES_COMPARED) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's first ``limit`` candidates that are not among the base's candidates at all, and
    the reverse, each with its rank in its own run."""
    def ranked(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{"word": str(c.get("word")), "score": c.get("score"), "rank": i} for i, c in enumerate(rows, 1)]

    base_words = {str(c.get("word")) for c in base}
    run_words = {str(c.get("word")) for c in run}
    return ([c for c in ranked(run)[:limit] if c["word"] not in base_words],
            [c for c in ranked(base)[:limit] if c["word"] not in run_words])


def _faithfulness(summary: Mapping[str, Any]) -> dict[str, Any]:
    checks = summary.get("checks") or []
    figures = (checks[-1].get("faithfulness") if checks else None) or {}
    return {k: figures.get(k) for k in FAITHFULNESS_FIGURES + ("n_probes", "forwards_per_probe")}


def _describe(run: RunData) -> dict[str, Any]:
    summary = run.summary
    last = run.snapshots[-1]
    return {"name": summary.get("run_name"), "path": str(run.run_path), "status": summary.get("status"),
            "fingerprint": summary.get("probe_fingerprint"), "n_probes": len(last.attributions),
            "check_index": last.check_index, "step": last.step, "epoch": last.epoch}


def _last_snapshot_run(path: str | Path, role: str) -> RunData:
    run = read_run(path)
    if not run.snapshots:
        raise RunDirError(f"{role} run {run.run_path} has no readable check in its attributions.jsonl; "
                          "compare needs at least one check on each side.")
    return run


def compare_runs(base_path: str | Path, run_path: str | Path, base_repeat: str | Path | None = None, *,
                 min_change: float = MIN_CHANGE, min_probes: int = MIN_PROBES, alpha: float = ALPHA,
                 top_k: int = TOP_K) -> Comparison:
    """Compare the last checks of two run folders (see the module docstring). Raises
    :class:`RunDirError` (one line) when a side cannot be read or they share no probe."""
    base, run = _last_snapshot_run(base_path, "base"), _last_snapshot_run(run_path, "compared")
    same = base.summary.get("probe_fingerprint") is not None and \
        base.summary.get("probe_fingerprint") == run.summary.get("probe_fingerprint")
    pairs, how = match_probes(base.snapshots[-1].attributions, run.snapshots[-1].attributions, same)
    if not pairs:
        raise RunDirError(f"{base.run_path} and {run.run_path} share no probe (by id and text, or by text); "
                          "compare runs made with the same probes (the base run's probes.jsonl).")
    notes = [f"{side} {note}" for side, r in (("base:", base), ("run:", run)) for note in r.notes]
    shares = [(probe_word_shares(b), probe_word_shares(r)) for b, r in pairs]
    noise: dict[str, Any] = {"method": "bootstrap over probes, and the spread of all words' changes",
                             "n_resamples": N_BOOTSTRAP}
    repeat_pairs = None
    if base_repeat is not None:
        repeat = _last_snapshot_run(base_repeat, "base repeat")
        by_key = {(a.probe_id, a.target): a for a in repeat.snapshots[-1].attributions}
        kept = [(b, r) for b, r in pairs if (b.probe_id, b.target) in by_key and by_key[(b.probe_id, b.target)].text == b.text]
        if not kept:
            raise RunDirError(f"base repeat {repeat.run_path} shares no probe with the base run; repeat the base "
                              "recipe with its probes.")
        if len(kept) < len(pairs):
            notes.append(f"the base repeat holds {len(kept)} of the {len(pairs)} shared probes; only those are compared.")
        pairs = kept
        shares = [(probe_word_shares(b), probe_word_shares(r)) for b, r in pairs]
        repeat_pairs = [(probe_word_shares(b), probe_word_shares(by_key[(b.probe_id, b.target)])) for b, _ in pairs]
        noise = {"method": "bootstrap over probes, and a seed repeat of the base", "n_resamples": N_BOOTSTRAP,
                 "repeat": _describe(repeat)}
    words = word_changes(shares, repeat_pairs, min_probes=min_probes, min_change=min_change, alpha=alpha)
    probe_changes = []
    for b, r in pairs:
        rbo = compare_attributions(r, b, top_k)["rbo"] if len(b.words) == len(r.words) else None
        probe_changes.append(ProbeChange(b.probe_id, b.target, b.text, b.prediction_name, r.prediction_name, b.label,
                                         rbo if rbo is None or math.isfinite(rbo) else None))
    rbos = [p.rbo for p in probe_changes if p.rbo is not None]
    new_alerts, gone_alerts = alert_difference(base.alerts, run.alerts)
    new_candidates, gone_candidates = candidate_difference(base.summary["candidates"], run.summary["candidates"])
    n_base, n_run = len(base.snapshots[-1].attributions), len(run.snapshots[-1].attributions)
    return Comparison(
        base=_describe(base), run=_describe(run),
        probes={"shared": len(pairs), "base": n_base, "run": n_run, "matched_by": how, "same_fingerprint": same},
        noise=noise,
        thresholds={"alpha": alpha, "min_change": min_change, "min_probes": min_probes, "top_k": top_k},
        words=words, probe_changes=probe_changes, mean_rbo=float(np.mean(rbos)) if rbos else None,
        new_alerts=new_alerts, gone_alerts=gone_alerts,
        new_candidates=new_candidates, gone_candidates=gone_candidates,
        faithfulness={"base": _faithfulness(base.summary), "run": _faithfulness(run.summary)},
        notes=notes,
    )
