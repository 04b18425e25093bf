"""Faithfulness of a check's attributions: does removing the top words change the prediction?

Comprehensiveness and sufficiency (ERASER, DeYoung et al. 2020) in the AOPC form that ferret
computes (``AOPC_Comprehensiveness_Evaluation`` / ``AOPC_Sufficiency_Evaluation`` with
``based_on="perc"``): for each fraction ``f`` in ``FRACTIONS`` (1, 5, 10, 20, 50%) the rationale
is the top ``int(f * n_words)`` words by attribution, only those with a positive score kept
(ferret's default ``only_pos=True``); a fraction that gives no word, or the same rationale as the
previous fraction, is skipped (ferret skips repeated rationales so one removal is not averaged
twice). With ``p`` the model's probability of the attributed target on the probe:

* comprehensiveness = mean over fractions of ``p(x) - p(x without the rationale)`` (higher:
  the words the attribution ranks first are the ones the prediction needs);
* sufficiency = mean over fractions of ``p(x) - p(rationale only)`` (lower: those words alone
  keep the prediction).

Where ferret deletes tokens and re-tokenizes the decoded text, a removed word's tokens are
replaced here by the engine's baseline token (special tokens kept, length and attention mask
unchanged), so removal means what the integral's baseline means. Words are the probe's words,
as the attribution groups its tokens. A probe with no rationale at any fraction (too short, or
no word with a positive score) gets ``None`` where ferret returns 0 and 1: it stays out of the
check's mean instead of pulling it.

A random-attribution baseline removes the same number of words at each fraction, drawn at
random with a generator seeded from the probe (never the global random streams), so a reader
sees how far the attribution's ranking beats chance, not a bare comprehensiveness. (A random
sufficiency would cost another forward per fraction and probe; it was left out to keep the
cost of a check within 15%, see ``benchmarks/faithfulness.py``.) Every perturbed input is one
model forward: at most ``3 * len(FRACTIONS)`` per probe, batched by length, without gradients. Only classification heads have a probability; a regression head gets ``None``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from explain_callbacks.attribution.adapters import EncodedProbe, ModelAdapter
from explain_callbacks.attribution.isolation import isolated_from_training
from explain_callbacks.attribution.records import ProbeAttribution

FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
METRICS = ("comprehensiveness", "sufficiency", "random_comprehensiveness")
TOKENS_PER_FORWARD = 8192


def rationales(word_scores: Sequence[float], fractions: Sequence[float] = FRACTIONS) -> list[list[int]]:
    """The word indices removed at each fraction, best first, as ferret picks them: the top
    ``int(f * n)`` by score, the non-positive ones dropped, empty and repeated sets skipped."""
    n = len(word_scores)
    order = sorted(range(n), key=lambda i: (-float(word_scores[i]), i))
    chosen: list[list[int]] = []
    previous: set[int] | None = None
    for fraction in fractions:
        k = int(fraction * n)
        if k <= 0:
            continue
        top = [i for i in order[:k] if float(word_scores[i]) > 0]
        if not top or set(top) == previous:
            continue
        previous = set(top)
        chosen.append(top)
    return chosen


def random_rationales(n_words: int, sizes: Sequence[int], seed: int) -> list[list[int]]:
    """As many random words as each rationale holds, from a generator of its own (``seed``)."""
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(n_words, size=size, replace=False).tolist()) for size in sizes]


def probe_seed(probe_id: str, target: int) -> int:
    """A stable seed per (probe, target): the same random words at every check and every run."""
    return zlib.crc32(f"{probe_id}\x00{target}".encode())


def masked_ids(encoded: EncodedProbe, spans: Sequence[Sequence[int]], words: Sequence[int], keep: bool,
               baseline_token: Any) -> list[int]:
    """The probe's ids with the tokens of ``words`` replaced by the baseline token (``keep=False``,
    comprehensiveness) or with every other word's tokens replaced (``keep=True``, sufficiency).
    Special tokens and tokens outside any word stay."""
    chosen = set(words)
    ids = list(encoded.input_ids)
    for index, (start, end) in enumerate(spans):
        if (index in chosen) != keep:
            for t in range(start, end):
                ids[t] = baseline_token(ids[t], False)
    return ids


def target_probability(scores: torch.Tensor, target: int, problem_type: str) -> float | None:
    """The model's probability of ``target`` from its outputs: softmax for single-label heads,
    sigmoid for multi-label ones, ``None`` for regression."""
    if problem_type == "regression":
        return None
    scores = scores.double()
    if problem_type == "multi_label_classification":
        return float(torch.sigmoid(scores[target]))
    return float(torch.softmax(scores, -1)[target])


def aopc(p_full: float, p_perturbed: Sequence[float]) -> float | None:
    """Mean drop of the target's probability over the perturbed inputs (``None`` for none)."""
    if not p_perturbed:
        return None
    return float(np.mean([p_full - p for p in p_perturbed]))


def length_groups(lengths: Sequence[int], keys: Sequence[Any], tokens_per_forward: int,
                  mix_lengths: bool = True) -> list[list[int]]:
    """Row indices in forward batches: sorted by (key, length), a batch padded at most ~10% (one
    length only when ``mix_lengths`` is off: a model that reads its padding) and within
    ``tokens_per_forward`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (str(keys[i]), lengths[i]))
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group:
            first, same_key = lengths[group[0]], keys[group[0]] == keys[i]
            fits = lengths[i] <= 1.1 * first + 1 if mix_lengths else lengths[i] == first
            if same_key and fits and (len(group) + 1) * lengths[i] <= tokens_per_forward:
                group.append(i)
                continue
        groups.append([i])
    return groups


@torch.no_grad()
def forward_rows(adapter: ModelAdapter, rows: Sequence[EncodedProbe], tokens_per_forward: int = TOKENS_PER_FORWARD,
                 mix_lengths: bool = True) -> list[torch.Tensor]:
    """The model's outputs for each encoded row, batched by length (see :func:`length_groups`;
    the adapter pads on the side the engine calibrated)."""
    key_of = getattr(adapter, "batch_key", None) or (lambda _e: 0)
    out: list[torch.Tensor | None] = [None] * len(rows)
    groups = length_groups([len(r) for r in rows], [key_of(r) for r in rows], tokens_per_forward, mix_lengths)
    for chunk in groups:
        batch = adapter.batch([rows[i] for i in chunk])
        logits = adapter.forward(batch.input_ids, *batch.forward_kwargs.values()).float().cpu()
        for i, row in zip(chunk, logits):
            out[i] = row
    return out  # type: ignore[return-value]


def evaluate_faithfulness(adapter: ModelAdapter, attributions: Sequence[ProbeAttribution],
                          fractions: Sequence[float] = FRACTIONS,
                          tokens_per_forward: int = TOKENS_PER_FORWARD, mix_lengths: bool = True) -> list[dict[str, Any]]:
    """Per attribution, comprehensiveness, sufficiency and their random-baseline twins (see the
    module docstring), with ``n_fractions`` (rationales used) and ``forwards`` (model forwards
    it cost). Re-encodes the probes with the adapter (the tokenizer's own output) and runs the
    model isolated from training: modes, gradients and random streams come back as they were.
    ``mix_lengths=False`` (the engine's calibration for a model that reads its padding) batches
    only rows of one length."""
    if not attributions:
        return []
    results: list[dict[str, Any]] = [_empty(None) for _ in attributions]
    encodings = adapter.encode([_probe_of(a) for a in attributions])
    plans: list[tuple[int, float, list[list[int]], list[list[int]]]] = []
    rows: list[EncodedProbe] = []
    for index, (a, enc) in enumerate(zip(attributions, encodings)):
        if adapter.problem_type == "regression":
            results[index] = _empty("a regression head has no class probability")
            continue
        spans = a.word_token_spans
        if [w.text for w in enc.words] != list(a.words) or len(spans) != len(a.words):
            results[index] = _empty("the probe no longer encodes to the attributed words")
            continue
        p_full = target_probability(torch.tensor(a.scores), a.target, adapter.problem_type) if a.scores else None
        chosen = rationales(a.word_scores, fractions)
        if p_full is None or not chosen or not all(math.isfinite(float(s)) for s in a.word_scores):
            results[index] = _empty("no rationale: too few words, or none with a positive score")
            continue
        drawn = random_rationales(len(a.words), [len(c) for c in chosen], probe_seed(a.probe_id, a.target))
        plans.append((index, p_full, chosen, drawn))
        # rows, per probe: attributed removed, attributed kept, random removed
        for sets, keep in ((chosen, False), (chosen, True), (drawn, False)):
            rows += [replace(enc, input_ids=masked_ids(enc, spans, words, keep, adapter.baseline_token))
                     for words in sets]
    if not rows:
        return results
    with isolated_from_training(adapter.model):
        outputs = forward_rows(adapter, rows, tokens_per_forward, mix_lengths)
    cursor = 0
    for index, p_full, chosen, _drawn in plans:
        target = attributions[index].target
        n = len(chosen)
        probs = [target_probability(o, target, adapter.problem_type) for o in outputs[cursor : cursor + 3 * n]]
        cursor += 3 * n
        values = [aopc(p_full, probs[j * n : (j + 1) * n]) for j in range(3)]
        results[index] = {
            "comprehensiveness": values[0],
            "sufficiency": values[1],
            "random_comprehensiveness": values[2],
            "probability": p_full,
            "n_fractions": n,
            "forwards": 3 * n,
            "skipped": None,
        }
    return results


def _empty(reason: str | None) -> dict[str, Any]:
    return {**{m: None for m in METRICS}, "probability": None, "n_fractions": 0, "forwards": 0, "skipped": reason}


def _probe_of(attribution: ProbeAttribution):
    from explain_callbacks.attribution.probes import Probe

    return Probe(text=attribution.text, text_pair=attribution.text_pair, id=attribution.probe_id)


def faithfulness_summary(attributions: Sequence[ProbeAttribution]) -> dict[str, Any]:
    """One check's faithfulness: each metric's mean over the probes that have it, how many do,
    the share whose comprehensiveness beats the random baseline's, and forwards per probe."""
    records = [a.faithfulness for a in attributions if a.faithfulness]
    scored = [r for r in records if r.get("comprehensiveness") is not None]
    if not records:
        return {}
    out: dict[str, Any] = {}
    for metric in METRICS:
        values = [r[metric] for r in scored if r.get(metric) is not None]
        out[metric] = float(np.mean(values)) if values else None
    gaps = [r["comprehensiveness"] - r["random_comprehensiveness"] for r in scored
            if r.get("random_comprehensiveness") is not None]
    out["comprehensiveness_gap"] = float(np.mean(gaps)) if gaps else None
    out["share_above_random"] = float(np.mean([g > 0 for g in gaps])) if gaps else None
    out["n_probes"] = len(scored)
    out["n_skipped"] = len(records) - len(scored)
    out["forwards_per_probe"] = float(np.mean([r.get("forwards", 0) for r in records]))
    out["fractions"] = list(FRACTIONS)
    return out
