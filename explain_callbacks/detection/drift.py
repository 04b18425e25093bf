"""How the top-attributed words move from check to check.

The metric functions are pure and nan-safe: a comparison that is undefined (empty lists, a
constant score vector, a zero vector) returns ``nan`` rather than a made-up number.

:class:`DriftTracker` compares every check with the previous one and with the reference (the
first check it saw). Per probe, words are keyed by position (``"3:great"``): the same probe
gives the same word list at every check, and a repeated word stays two items instead of
collapsing into one. Rankings are by ``word_shares``, descending and signed, so a positive
share means the word supports the attributed target. The global word table instead merges
words lowercased across probes and ranks them by what carries the decision where they occur
(:meth:`DriftTracker.token_table`): punctuation and single characters are never ranked, and a
word in every probe does not outrank one that decides the probes it is in.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from explain_callbacks.attribution.records import ProbeAttribution, Snapshot
from explain_callbacks.attribution.validation import positive_int, versioned_state

logger = logging.getLogger(__name__)

NAN = float("nan")
METRICS = ("jaccard", "rbo", "kendall_tau", "cosine")
MIN_SUPPORT = 2  # probes a word must be in to rank among the supported words


def rankable_word(word: str) -> bool:
    """Whether a word may enter the global top words: at least two letters or digits (so no
    punctuation, no lone "i", "t" or "s" left by a tokenizer), or one letter of a script that
    writes words as single characters (CJK)."""
    alnum = sum(ch.isalnum() for ch in word)
    return alnum >= 2 or (alnum == 1 and len(word) == 1 and ord(word) >= 0x2E80)


def topk_jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard similarity ``|A∩B| / |A∪B|`` of two top-k word collections (as sets).

    Two empty collections have no overlap to measure: ``nan``.
    """
    set_a, set_b = set(a), set(b)
    union = set_a | set_b
    if not union:
        return NAN
    return len(set_a & set_b) / len(union)


def rank_biased_overlap(a: Sequence[str], b: Sequence[str], p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap (RBO_ext, Webber, Moffat & Zobel 2010, eq. 32).

    ``a`` and ``b`` are ranked lists, best first, possibly of different length (each is
    treated as the seen prefix of a longer ranking). ``p`` in (0, 1) sets how top-heavy the
    measure is: the top ``d`` ranks carry weight ``1 - p**d`` (about 86% in the top 10 at
    ``p=0.9``). Identical lists give 1.0, disjoint lists 0.0; a list that is a prefix of the
    other also gives 1.0, since RBO_ext assumes the agreement seen so far continues.
    Repeated items after their first occurrence are ignored. Two empty lists: ``nan``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"rank_biased_overlap: p must be in (0, 1), got {p!r}.")
    a, b = _unique(a), _unique(b)
    if not a and not b:
        return NAN
    if not a or not b:
        return 0.0
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    s, l = len(short), len(long_)
    short_set = set(short)
    seen_short: set[str] = set()
    seen_long: set[str] = set()
    overlap = 0  # X_d
    overlap_at_s = 0  # X_s
    sum_agreement = 0.0
    sum_extrapolated = 0.0
    for d in range(1, l + 1):
        item_long = long_[d - 1]
        if d <= s:
            item_short = short[d - 1]
            if item_short == item_long:
                overlap += 1
            else:
                overlap += (item_short in seen_long) + (item_long in seen_short)
            seen_short.add(item_short)
            seen_long.add(item_long)
            if d == s:
                overlap_at_s = overlap
        else:
            overlap += item_long in short_set
            sum_extrapolated += overlap_at_s * (d - s) / (s * d) * p**d
        sum_agreement += overlap / d * p**d
    tail = ((overlap - overlap_at_s) / l + overlap_at_s / s) * p**l
    return (1.0 - p) / p * (sum_agreement + sum_extrapolated) + tail


def kendall_tau_b(scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> float:
    """Kendall's tau-b between two score maps over the union of their keys.

    A key missing from one map scores 0.0 there. ``nan`` when it is undefined: fewer than two
    keys, or either side constant.
    """
    keys = sorted(set(scores_a) | set(scores_b))
    if len(keys) < 2:
        return NAN
    x = np.array([float(scores_a.get(k, 0.0)) for k in keys])
    y = np.array([float(scores_b.get(k, 0.0)) for k in keys])
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return NAN
    if np.all(x == x[0]) or np.all(y == y[0]):
        return NAN
    return float(stats.kendalltau(x, y, variant="b").statistic)


def cosine_similarity(
    a: Mapping[str, float] | Sequence[float], b: Mapping[str, float] | Sequence[float]
) -> float:
    """Cosine of two score vectors: equal-length sequences, or maps aligned on the union of
    their keys (a missing key scores 0.0). A zero vector has no direction: ``nan``.
    """
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise TypeError("cosine_similarity: give two mappings or two sequences, not one of each.")
        keys = sorted(set(a) | set(b))
        x = np.array([float(a.get(k, 0.0)) for k in keys])
        y = np.array([float(b.get(k, 0.0)) for k in keys])
    else:
        x = np.asarray(a, dtype=float)
        y = np.asarray(b, dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"cosine_similarity: lengths differ ({x.size} vs {y.size}).")
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    if norm == 0.0 or not math.isfinite(norm):
        return NAN
    return float(np.clip(np.dot(x, y) / norm, -1.0, 1.0))


def chance_jaccard(n_items: int, k: int) -> float:
    """Expected Jaccard of two independent, uniformly random ``k``-subsets of ``n_items``.

    ``|A∩B|`` is hypergeometric (population ``n``, ``k`` marked, ``k`` drawn) and
    ``|A∪B| = 2k - |A∩B|``, so this is the exact expectation of ``X / (2k - X)``; ``k`` is
    capped at ``n_items``. It is the level a top-k Jaccard would sit at if rankings were noise.
    ``nan`` when there is nothing to choose (``n_items`` or ``k`` below 1).
    """
    n_items, k = int(n_items), int(min(k, n_items))
    if n_items < 1 or k < 1:
        return NAN
    overlap = np.arange(max(0, 2 * k - n_items), k + 1)
    pmf = stats.hypergeom.pmf(overlap, n_items, k, k)
    return float(np.sum(pmf * overlap / (2 * k - overlap)))


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return float(sum(finite) / len(finite)) if finite else NAN


def lowercase_word_shares(attribution: ProbeAttribution) -> dict[str, float]:
    """Each distinct lowercased word of one attribution, with its occurrences' shares summed."""
    totals: dict[str, float] = defaultdict(float)
    for word, share in zip(attribution.words, attribution.word_shares):
        totals[word.lower()] += float(share)
    return dict(totals)


def _keyed_shares(attribution: ProbeAttribution) -> dict[str, float]:
    return {f"{i}:{w}": float(s) for i, (w, s) in enumerate(zip(attribution.words, attribution.word_shares))}


def _ranked_keys(shares: Mapping[str, float]) -> list[str]:
    """Keys by share descending, ties by position (dicts keep word order)."""
    return [k for _, k in sorted(((-s, i), k) for i, (k, s) in enumerate(shares.items()))]


def compare_attributions(
    current: ProbeAttribution, other: ProbeAttribution, top_k: int, rbo_p: float = 0.9
) -> dict[str, float]:
    """The four drift metrics between two attributions of the same probe and target."""
    cur, old = _keyed_shares(current), _keyed_shares(other)
    top_cur, top_old = _ranked_keys(cur)[:top_k], _ranked_keys(old)[:top_k]
    return {
        "jaccard": topk_jaccard(top_cur, top_old),
        "rbo": rank_biased_overlap(top_cur, top_old, p=rbo_p),
        "kendall_tau": kendall_tau_b(cur, old),
        "cosine": cosine_similarity(cur, old),
    }


def _average(per_probe: list[dict[str, Any]], which: str) -> dict[str, float]:
    return {m: _nanmean([row[which][m] for row in per_probe]) for m in METRICS}


def _nan_metrics() -> dict[str, float]:
    return {m: NAN for m in METRICS}


class DriftTracker:
    """Drift of the attributed words across checks, with bounded memory.

    ``update(snapshot)`` compares each (probe, target) attribution with the previous check
    and with the reference check (the first one seen), on the top ``top_k`` words (Jaccard,
    RBO) and on all word shares (Kendall tau-b, cosine), and averages over the probes. At the
    first check there is nothing to compare with: every ``vs_previous`` and ``vs_reference``
    figure is ``nan``.

    Only the reference and previous snapshots are kept, plus small per-check aggregates
    (``history``, and the mean shares of the top ``track_depth`` words for ``trajectories``).
    ``history`` is the run's one record of its checks: the monitor adds its own per-check
    figures to each row with :meth:`annotate`, and ``summary.json`` lists these rows.

    ``stability_metric`` (``"rbo"``, ``"jaccard"``, ``"kendall_tau"`` or ``"cosine"``) and
    ``stability_threshold`` define "stable": ``1 - metric(vs previous) < threshold``.
    ``min_support``: the probes a word must be in to rank ahead of words seen in fewer (one
    probe's outlier does not lead the global table).
    """

    def __init__(
        self,
        top_k: int = 10,
        stability_threshold: float = 0.1,
        stability_metric: str = "rbo",
        rbo_p: float = 0.9,
        track_depth: int = 50,
        min_support: int = MIN_SUPPORT,
    ):
        positive_int(top_k, "top_k", "DriftTracker")
        if not isinstance(stability_threshold, (int, float)) or not 0.0 < stability_threshold <= 2.0:
            raise ValueError(
                "DriftTracker: stability_threshold must be a number in (0, 2] (a drift, "
                f"1 - similarity), got {stability_threshold!r}."
            )
        if stability_metric not in METRICS:
            raise ValueError(
                f"DriftTracker: stability_metric must be one of {METRICS}, got {stability_metric!r}."
            )
        if not 0.0 < rbo_p < 1.0:
            raise ValueError(f"DriftTracker: rbo_p must be in (0, 1), got {rbo_p!r}.")
        positive_int(track_depth, "track_depth (at least top_k)", "DriftTracker", minimum=top_k)
        positive_int(min_support, "min_support", "DriftTracker")
        self.top_k = top_k
        self.min_support = min_support
        self.stability_threshold = float(stability_threshold)
        self.stability_metric = stability_metric
        self.rbo_p = float(rbo_p)
        self.track_depth = track_depth
        self._reset()

    def _reset(self) -> None:
        self._reference: Snapshot | None = None
        self._previous: Snapshot | None = None
        self.history: list[dict[str, Any]] = []
        self._tracked_shares: list[dict[str, float]] = []  # per check: word -> mean_share
        self._ever_top: list[str] = []
        self._last_table: tuple[int, list[dict[str, Any]]] | None = None

    # ----------------------------------------------------------------------- per check

    def update(self, snapshot: Snapshot) -> dict[str, Any]:
        """Record one check; return its drift figures (averages plus ``per_probe`` rows)."""
        previous, reference = self._previous, self._reference
        prev_by_key = {a.key: a for a in previous.attributions} if previous else {}
        ref_by_key = {a.key: a for a in reference.attributions} if reference else {}
        per_probe = []
        for attribution in snapshot.attributions:
            row: dict[str, Any] = {"probe_id": attribution.probe_id, "target": attribution.target}
            for which, by_key in (("vs_previous", prev_by_key), ("vs_reference", ref_by_key)):
                other = by_key.get(attribution.key)
                row[which] = (
                    compare_attributions(attribution, other, self.top_k, self.rbo_p)
                    if other is not None
                    else _nan_metrics()
                )
            per_probe.append(row)
        drift = {
            "vs_previous": _average(per_probe, "vs_previous") if per_probe else _nan_metrics(),
            "vs_reference": _average(per_probe, "vs_reference") if per_probe else _nan_metrics(),
            "chance_jaccard": _nanmean(
                [chance_jaccard(len(a.words), self.top_k) for a in snapshot.attributions]
            ),
        }
        table = self.token_table(snapshot)
        top = [row for row in table if row["rank"] <= self.top_k]
        self.history.append(
            {
                "check_index": snapshot.check_index,
                "step": snapshot.step,
                "epoch": snapshot.epoch,
                "drift": {k: (dict(v) if isinstance(v, dict) else v) for k, v in drift.items()},
                "top_tokens": [
                    {k: row[k] for k in ("word", "mean_share", "mean_abs_share", "sum_share", "n_probes", "rank")}
                    for row in top
                ],
                "entered": [row["word"] for row in table if row["entered"]],
                "left": [row["word"] for row in table if row["left"]],
            }
        )
        self._tracked_shares.append(
            {row["word"]: row["mean_share"] for row in table if row["rank"] <= self.track_depth}
        )
        for row in top:
            if row["word"] not in self._ever_top:
                self._ever_top.append(row["word"])
        self._last_table = (snapshot.check_index, table)
        if self._reference is None:
            self._reference = snapshot
        self._previous = snapshot
        return {**drift, "per_probe": per_probe}

    def annotate(self, check_index: int, **fields: Any) -> None:
        """Add a caller's figures of check ``check_index`` to its history row (the monitor's
        convergence, health and timings), so one history holds each check, and
        :meth:`state_dict` stores it once. A check the history does not hold is ignored."""
        for row in reversed(self.history):
            if row["check_index"] == check_index:
                row.update(fields)
                return

    def token_table(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """The global word table of one check, best first.

        Words are lowercased and merged across probes; punctuation and single characters
        (:func:`rankable_word`) are left out. Per word: ``mean_abs_share``, the size of its
        share where it occurs (per attribution the mean absolute share of its occurrences,
        averaged over the ``n_probes`` attributions that contain it), which ranks the table;
        ``mean_share`` (its summed, signed share per containing attribution, averaged: positive
        supports the attributed target), ``sum_share`` (all its shares summed),
        ``positive_share`` (only the positive ones) and ``rank``. Words in at least
        ``min_support`` attributions rank first, by ``mean_abs_share``, then by ``n_probes``,
        then the word; the rest follow in the same order. So a word that is in every probe but
        moves none ("the", "not" in a clean run) does not lead, and one probe's outlier does not
        either. ``entered`` / ``left`` flag words that came into / dropped out of the top
        ``top_k`` since the previous check (both False at the first check).

        After ``update(snapshot)`` this returns the table computed there (the previous top-k
        it compares with is the one before that check).
        """
        if self._last_table is not None and self._last_table[0] == snapshot.check_index:
            return self._last_table[1]
        sums: dict[str, float] = defaultdict(float)
        positives: dict[str, float] = defaultdict(float)
        magnitudes: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for attribution in snapshot.attributions:
            occurrences: dict[str, list[float]] = defaultdict(list)
            for word, share in zip(attribution.words, attribution.word_shares):
                occurrences[word.lower()].append(float(share))
            for word, shares in occurrences.items():
                if not rankable_word(word):
                    continue
                sums[word] += sum(shares)
                positives[word] += sum(max(v, 0.0) for v in shares)
                magnitudes[word] += sum(abs(v) for v in shares) / len(shares)
                counts[word] += 1
        order = sorted(
            sums,
            key=lambda w: (counts[w] < self.min_support, -magnitudes[w] / counts[w], -counts[w], w),
        )
        previous_top = {row["word"] for row in self.history[-1]["top_tokens"]} if self.history else None
        current_top = set(order[: self.top_k])
        table = []
        for rank, word in enumerate(order, 1):
            table.append(
                {
                    "word": word,
                    "mean_share": sums[word] / counts[word],
                    "mean_abs_share": magnitudes[word] / counts[word],
                    "sum_share": sums[word],
                    "positive_share": positives[word],
                    "n_probes": counts[word],
                    "rank": rank,
                    "entered": previous_top is not None and word in current_top and word not in previous_top,
                    "left": previous_top is not None and word in previous_top and word not in current_top,
                }
            )
        if previous_top is not None:
            # A word of the previous top-k that no probe contains any more still left it.
            for word in sorted(previous_top - set(sums)):
                table.append(
                    {"word": word, "mean_share": NAN, "mean_abs_share": NAN, "sum_share": 0.0,
                     "positive_share": 0.0, "n_probes": 0, "rank": len(table) + 1, "entered": False,
                     "left": True}
                )
        return table

    # ----------------------------------------------------------------------- over the run

    def stabilisation(self) -> dict[str, Any] | None:
        """The first check from which drift vs previous stays below the threshold.

        Drift is ``1 - <stability_metric>`` against the previous check; that check and every
        later one must be below ``stability_threshold`` (a ``nan`` figure counts as not
        stable). The first check has no previous one and never qualifies. ``None`` while
        the latest check is not stable.
        """
        found = None
        for row in self.history[1:]:
            value = row["drift"]["vs_previous"][self.stability_metric]
            if value == value and 1.0 - value < self.stability_threshold:
                if found is None:
                    found = row
            else:
                found = None
        if found is None:
            return None
        return {"check_index": found["check_index"], "step": found["step"], "epoch": found["epoch"]}

    def trajectories(self) -> dict[str, list[float | None]]:
        """Mean share per check of every word that was ever in the global top ``top_k``.

        ``None`` where the word was not among the top ``track_depth`` words at that check
        (only those are kept per check, to bound memory) or in no probe.
        """
        out: dict[str, list[float | None]] = {}
        for word in self._ever_top:
            series = []
            for shares in self._tracked_shares:
                value = shares.get(word)
                series.append(None if value is None or value != value else float(value))
            out[word] = series
        return out

    # ----------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings; undefined figures stay ``nan``, and
        :meth:`load_state_dict` reads them back from ``null`` too)."""
        return {
            "version": 1,
            "config": {
                "top_k": self.top_k,
                "stability_threshold": self.stability_threshold,
                "stability_metric": self.stability_metric,
                "rbo_p": self.rbo_p,
                "track_depth": self.track_depth,
                "min_support": self.min_support,
            },
            "reference": self._reference.to_dict() if self._reference else None,
            "previous": self._previous.to_dict() if self._previous else None,
            "history": [dict(row) for row in self.history],
            "tracked_shares": [dict(row) for row in self._tracked_shares],
            "ever_top": list(self._ever_top),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`. The tracker keeps its own settings; a saved
        ``top_k`` that differs is logged, since earlier history used the other value. An
        empty mapping means no checks yet."""
        state = versioned_state(state, 1, "DriftTracker")
        saved_k = state.get("config", {}).get("top_k")
        if saved_k is not None and saved_k != self.top_k:
            logger.warning(
                "DriftTracker: resuming with top_k=%s, but the saved history used top_k=%s.",
                self.top_k,
                saved_k,
            )
        self._reset()
        if state.get("reference"):
            self._reference = Snapshot.from_dict(state["reference"])
        if state.get("previous"):
            self._previous = Snapshot.from_dict(state["previous"])
        # a state that went through strict JSON holds ``null`` where a figure was ``nan``
        self.history = [{**row, "drift": _none_as_nan(row.get("drift", {}))} for row in state.get("history", [])]
        self._tracked_shares = [dict(row) for row in state.get("tracked_shares", [])]
        self._ever_top = list(state.get("ever_top", []))


def _none_as_nan(value: Any) -> Any:
    """Drift figures with ``None`` (strict JSON's ``null``) read back as ``nan``."""
    if value is None:
        return math.nan
    if isinstance(value, Mapping):
        return {k: _none_as_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_none_as_nan(v) for v in value]
    return value
