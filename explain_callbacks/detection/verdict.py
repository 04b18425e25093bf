"""What a run found, in sentences: the verdict that leads the report and ``show``, and each
shortcut candidate's evidence said in words.

Everything here reads a loaded ``summary.json`` (:func:`explain_callbacks.run.directory.load_summary`)
defensively: evidence keys may be missing or ``None`` (older runs, runs without training data
or counterfactuals, evidence that later versions add), and the sentence then leaves that part
out. The text returned is plain: user words are quoted as written, and the HTML template and
the terminal escape it where they show it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from explain_callbacks.attribution.records import at_or_above, severity_rank

REPORT_CANDIDATES = 5  # candidates told in sentences; the rest only in the raw table


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 0 else None


def quote(word: Any) -> str:
    """A user word in running text: ``'medboard'``."""
    return f"'{word}'"


def label_name(label: Any, labels: Sequence[Any] | None = None) -> str:
    """A class as the reader knows it: its name from the run's ``labels`` where the label is a
    class id, else the label itself (quoted)."""
    if isinstance(label, int) and not isinstance(label, bool) and labels and 0 <= label < len(labels):
        return quote(labels[label])
    if label is None:
        return "its class"
    return quote(label)


def _labels(summary: Mapping[str, Any]) -> list[Any]:
    labels = (summary.get("config") or {}).get("labels")
    return list(labels) if isinstance(labels, (list, tuple)) else []


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


# --------------------------------------------------------------------------- candidate evidence


def insertion_sentence(evidence: Mapping[str, Any], labels: Sequence[Any] | None = None) -> str | None:
    """``inserting it into 7 probes predicted as another class flipped 4 to 'positive'``."""
    rate, n = _number(evidence.get("flip_rate_insertion")), _count(evidence.get("n_insertion_probes"))
    if rate is None or not n:
        return None
    flipped = round(rate * n)
    how_many = "none of them" if flipped == 0 else (f"all {n}" if flipped == n and n > 1 else str(flipped))
    return (f"inserting it into {_plural(n, 'probe')} predicted as another class flipped "
            f"{how_many} to {label_name(evidence.get('purity_label'), labels)}")


def effect_sentence(evidence: Mapping[str, Any], labels: Sequence[Any] | None = None) -> str | None:
    """``inserting it raised the probability of 'positive' by 0.12 on average in 16 probes
    predicted otherwise, beyond neutral control words (p = 0.0003)``."""
    effect, n = _number(evidence.get("insertion_effect")), _count(evidence.get("n_effect_probes"))
    p_value = _number(evidence.get("insertion_effect_p"))
    if effect is None or not n:
        return None
    significance = f" (p = {p_value:.2g})" if p_value is not None else ""
    leaning = [str(w) for w in evidence.get("leaning_words") or []]
    beyond = "neutral control words" + (f" and its own {_quoted(leaning)} inserted alone" if leaning else "")
    return (f"inserting it moved the probability of {label_name(evidence.get('purity_label'), labels)} by "
            f"{effect:+.2f} on average in {_plural(n, 'probe')} predicted otherwise, beyond {beyond}"
            f"{significance}")


def _quoted(words: Sequence[str]) -> str:
    return " or ".join(repr(w) for w in words)


def removal_sentence(evidence: Mapping[str, Any]) -> str | None:
    """``removing it from 5 probes changed 3 predictions``."""
    rate, n = _number(evidence.get("flip_rate_removal")), _count(evidence.get("n_removal_probes"))
    if rate is None or not n:
        return None
    changed = round(rate * n)
    return f"removing it from {_plural(n, 'probe')} changed {_plural(changed, 'prediction') if changed else 'no prediction'}"


def training_sentence(evidence: Mapping[str, Any], labels: Sequence[Any] | None = None) -> str | None:
    """``it appears in 'positive' training examples only (89 of 89)`` or ``41 of 50 training
    examples that contain it are labelled 'positive'``."""
    count, purity = _count(evidence.get("train_count")), _number(evidence.get("train_purity"))
    if not count or purity is None:
        return None
    label = label_name(evidence.get("purity_label"), labels)
    same = round(purity * count)
    if same == count:
        text = f"it appears in {label} training examples only ({same} of {count})"
    else:
        text = f"{same} of the {count} training examples that contain it are labelled {label}"
    reference, p_value = _number(evidence.get("purity_reference")), _number(evidence.get("purity_p_value"))
    if reference is not None and p_value is not None:
        text += (f", {'purer than' if p_value <= 0.05 else 'no purer than'} the purest well-measured "
                 f"class word of the data ({reference:.0%}; p = {p_value:.2g})")
    through = [str(w) for w in evidence.get("words_leaning_through_phrase") or []]
    if through:
        text += f"; {_quoted(through)} leans to {label} only in the examples that hold the phrase"
    return text


def attribution_sentence(evidence: Mapping[str, Any]) -> str | None:
    """``in the 3 probes that contain it, it takes a mean share of 0.42 and is the top word in 2 of them``."""
    n, share = _count(evidence.get("n_probes")), _number(evidence.get("mean_share"))
    if not n or share is None:
        return None
    top1 = _number(evidence.get("top1_rate"))
    top = round(top1 * n) if top1 is not None else 0
    if n == 1:
        return f"in the one probe that contains it, it takes a share of {share:.2f}" + (
            " and is its top word" if top else "")
    text = f"in the {n} probes that contain it, it takes a mean share of {share:.2f}"
    return text + (f" and is the top word in {top} of them" if top else "")


def wrong_prediction_sentence(evidence: Mapping[str, Any]) -> str | None:
    """``it carries the prediction in 3 probes the model gets wrong``."""
    n = _count(evidence.get("n_wrong_probes"))
    if not n:
        return None
    return f"it carries the prediction in {_plural(n, 'probe')} the model gets wrong"


def candidate_sentences(candidate: Mapping[str, Any], labels: Sequence[Any] | None = None) -> list[str]:
    """The evidence behind one shortcut candidate, strongest kind first, as sentences."""
    evidence = candidate.get("evidence")
    evidence = evidence if isinstance(evidence, Mapping) else {}
    clauses = [
        insertion_sentence(evidence, labels),
        effect_sentence(evidence, labels),
        removal_sentence(evidence),
        training_sentence(evidence, labels),
        wrong_prediction_sentence(evidence),
        attribution_sentence(evidence),
    ]
    sentences = [c[0].upper() + c[1:] + "." for c in clauses if c]
    basis = evidence.get("basis")
    if isinstance(basis, (list, tuple)) and "training" not in basis:
        sentences.append("No training statistics were available, so its label purity is unknown.")
    if not sentences:
        sentences.append("No evidence was recorded for it.")
    return sentences


def candidate_summary(candidate: Mapping[str, Any], labels: Sequence[Any] | None = None) -> str:
    """A candidate's evidence in at most two sentences, for the terminal: what a counterfactual
    did (insertion, else removal), then the training statistics, else what comes next."""
    sentences = candidate_sentences(candidate, labels)
    evidence = candidate.get("evidence") if isinstance(candidate.get("evidence"), Mapping) else {}
    if insertion_sentence(evidence, labels) and removal_sentence(evidence):
        sentences = sentences[:1] + sentences[2:]  # the removal gives way to the training figures
    return " ".join(sentences[:2])


# --------------------------------------------------------------------------- the verdict


def _get(alert: Any, name: str, default: Any = None) -> Any:
    return alert.get(name, default) if isinstance(alert, Mapping) else getattr(alert, name, default)


def _shortcut_verdict(word: str, evidence: Mapping[str, Any], labels: Sequence[Any]) -> str:
    clauses = [c for c in (insertion_sentence(evidence, labels), removal_sentence(evidence)) if c][:1]
    clauses += [c for c in (training_sentence(evidence, labels),) if c]
    if not clauses:
        clauses = [c for c in (wrong_prediction_sentence(evidence), attribution_sentence(evidence)) if c][:1]
    text = f"The model may be using {quote(word)} as a shortcut"
    return text + (": " + "; ".join(clauses) if clauses else "") + "."


def _alert_verdict(alert: Any, candidates: Sequence[Mapping[str, Any]], labels: Sequence[Any]) -> str:
    rule, token, message = _get(alert, "rule"), _get(alert, "token"), str(_get(alert, "message") or "").strip()
    if rule == "shortcut" and token:
        evidence = _get(alert, "evidence")
        evidence = evidence if isinstance(evidence, Mapping) else {}
        if not evidence:
            match = next((c for c in candidates if c.get("word") == token), None)
            evidence = (match or {}).get("evidence") or {}
        return _shortcut_verdict(str(token), evidence, labels)
    if rule == "watch_token" and token:
        return f"The model leans on the watched word {quote(token)}: {message}"
    name = str(rule or "alert").replace("_", " ")
    text = f"{name[0].upper() + name[1:]}: {message}" if message else f"The {name} rule fired."
    return text if text.endswith(".") else text + "."


def verdict(summary: Mapping[str, Any], alerts: Sequence[Any] | None = None) -> list[str]:
    """One or two sentences that say what the run found, for the top of the report and ``show``.

    ``alerts``: the alerts to judge, most severe first (default: ``summary["alerts"]`` as
    stored). A run with an active warning or error leads with it (a shortcut with the
    counterfactual and training evidence behind it); a run whose alerts all cleared says so; a
    clean run says what was checked and that nothing was found.
    """
    labels = _labels(summary)
    checks = [c for c in summary.get("checks") or [] if isinstance(c, Mapping)]
    candidates = [c for c in summary.get("candidates") or [] if isinstance(c, Mapping)]
    alerts = list(summary.get("alerts") or []) if alerts is None else list(alerts)
    alerts.sort(key=lambda a: (-severity_rank(_get(a, "severity")), not _get(a, "active", True)))
    serious = [a for a in alerts if at_or_above(_get(a, "severity"), "warning")]
    active = [a for a in serious if _get(a, "active", True)]
    if not checks:
        return ["The run recorded no checks, so nothing was examined yet."]
    if active:
        lead = _alert_verdict(active[0], candidates, labels)
        rest = len(active) - 1
        if rest:
            return [lead, f"{_plural(rest, 'more alert')} {'is' if rest == 1 else 'are'} active; see the alerts below."]
        return [lead]
    if serious:
        first = serious[0]
        return [
            f"No alert is active at the last check, but {_plural(len(serious), 'alert')} fired during training "
            f"and cleared; the first: {_alert_verdict(first, candidates, labels)}"
        ]
    n_probes = _count(summary.get("n_probes"))
    steps = [s for s in (_count(c.get("step")) for c in checks) if s is not None]
    span = ""
    if steps:
        span = f" at step {steps[0]}" if len(steps) == 1 or steps[0] == steps[-1] else f" from step {steps[0]} to {steps[-1]}"
    what = f"{_plural(len(checks), 'check')}" + (f" of {_plural(n_probes, 'probe')}" if n_probes else "") + span
    lead = f"No alert: {what} found no shortcut, watched word or broken invariance to flag."
    infos = [a for a in alerts if not at_or_above(_get(a, "severity"), "warning")]
    if candidates:
        top = candidates[0]
        basis = (top.get("evidence") or {}).get("basis") if isinstance(top.get("evidence"), Mapping) else None
        score = _number(top.get("score"))
        if isinstance(basis, (list, tuple)) and "training" not in basis:
            second = ("Shortcut discovery had no training statistics, so it ranked words "
                      f"(first {quote(top.get('word'))}) but could not alert.")
        else:
            second = (f"The strongest shortcut candidate, {quote(top.get('word'))}"
                      + (f" (score {score:.2f})" if score is not None else "") + ", stayed below the alert threshold.")
        if infos:
            second = second[:-1] + f"; {_plural(len(infos), 'note')} on convergence below."
        return [lead, second]
    if infos:
        return [lead, f"{_plural(len(infos), 'info alert')} below concern{'s' if len(infos) == 1 else ''} how far the figures can be trusted."]
    return [lead]


# --------------------------------------------------------------------------- blind spots


def blind_spots(summary: Mapping[str, Any]) -> list[str]:
    """What the run could not see, one line each, from ``summary.json``'s ``coverage`` (the
    options that decide what can fire): discovery without training statistics, watched words
    that no probe contains, probes without labels (no accuracy, no collapse alert). A summary
    written before ``coverage`` existed gives no lines (unknown, not clean)."""
    coverage = summary.get("coverage")
    if not isinstance(coverage, Mapping):
        return []
    lines = []
    if coverage.get("training_statistics") is False:
        lines.append("discovery ran without training statistics: ranking only (no shortcut alert could fire)")
    absent = coverage.get("watched_absent")
    for word in absent if isinstance(absent, (list, tuple)) else []:
        lines.append(f"watched {quote(word)} appears in no probe")
    n_probes, labelled = _count(summary.get("n_probes")), _count(coverage.get("n_labelled_probes"))
    if labelled == 0 and n_probes:
        lines.append("no probe has a label: accuracy not measured (only a one-class collapse could be seen)")
    return lines


def health_line(check: Mapping[str, Any]) -> str | None:
    """``accuracy 94% on 32 labelled probes; predicted: positive 17, negative 15`` for one check."""
    health = check.get("health")
    if not isinstance(health, Mapping):
        return None
    counts = health.get("prediction_counts")
    parts = []
    accuracy, labelled = _number(health.get("accuracy")), _count(health.get("n_labelled"))
    if accuracy is not None and labelled:
        parts.append(f"accuracy {accuracy:.0%} on {_plural(labelled, 'labelled probe')}")
    if isinstance(counts, Mapping) and counts:
        parts.append("predicted: " + ", ".join(f"{name} {_count(n) or 0}" for name, n in counts.items()))
    return "; ".join(parts) or None


def top_candidates(
    candidates: Sequence[Any], limit: int = REPORT_CANDIDATES, first: Sequence[str] = ()
) -> list[tuple[int, Mapping[str, Any]]]:
    """``(rank, candidate)`` of the ``limit`` candidates to tell: those whose word is in
    ``first`` (the alerted ones) ahead, then the rest in their ranked order; ``rank`` is the
    1-based place discovery gave it. Malformed entries are skipped."""
    ranked = [(i, c) for i, c in enumerate(candidates, 1) if isinstance(c, Mapping)]
    wanted = set(first)
    lead = [(i, c) for i, c in ranked if str(c.get("word")) in wanted]
    return (lead + [(i, c) for i, c in ranked if str(c.get("word")) not in wanted])[:limit]


__all__ = [
    "REPORT_CANDIDATES",
    "attribution_sentence",
    "blind_spots",
    "health_line",
    "candidate_sentences",
    "candidate_summary",
    "insertion_sentence",
    "effect_sentence",
    "label_name",
    "quote",
    "removal_sentence",
    "top_candidates",
    "training_sentence",
    "verdict",
    "wrong_prediction_sentence",
]
