"""Provenance signals at purity 0.8: can anything tell the planted word from a genuine class word?

At purity 0.8 the planted word ``zorblax`` is about as label-pure in training as the genuine
sentiment words, so the purity gate of ``ShortcutDiscovery`` closes for both (issue 14: 0 of 8
alerted). This benchmark trains the purity-0.8 cells of ``shortcut_detection.py`` (its data
generator, models, probes and reliance measurement, imported) plus matched clean runs, with a
check every ``every_n_steps`` steps, and records at each check, for every probe word with
training statistics, the package's own evidence and score and three provenance signals
(``benchmarks/provenance.py``):

- ``prior``: how far the word's vector at set-up (before any step) already leans to its
  training label's class words; ``novelty`` = 1 - that lean in standard deviations / 2
  (input embeddings, and the last layer with the word alone, as Chew et al. take it;
  ``novelty_both`` their product);
- ``shift``: the gain in the share of the word's 10 nearest neighbours (among the probe words)
  that are class words of its label, now against at set-up (Chew et al.);
- ``early``: its attribution dominance at the checks before validation accuracy rose halfway
  to its best (Du et al.).

Each check then ranks the candidates by each signal, alone (signal x reliance x purity above
the prior) and combined with the package's score (the larger of the two); a run counts as found
when the planted word is the top candidate at its last check, and a clean run as a would-be
warning when any word reaches the package's alert threshold for it.

    python benchmarks/shortcut_signals.py                  # tiny BERT cells + MiniLM (about 25 min)
    python benchmarks/shortcut_signals.py --no-minilm      # tiny BERT only (about 6 min)
    python benchmarks/shortcut_signals.py --rescore        # recompute the tables from the saved JSON
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning.pytorch as pl  # noqa: E402
import provenance  # noqa: E402  (research signals measured here; not part of the package)
import shortcut_detection as sd  # noqa: E402  (the data, models and measurements of the detection benchmark)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the review generator
from synthetic_reviews import counterfactual_set, planted_reviews, remove_word  # noqa: E402

from explain_callbacks.attribution.records import Snapshot, json_safe  # noqa: E402
from explain_callbacks.attribution.words import is_word, text_words  # noqa: E402
from explain_callbacks.detection.shortcuts import PURITY_GATE  # noqa: E402
from explain_callbacks.integrations.lightning import AttributionDriftCallback  # noqa: E402

OUT_DIR = sd.RESULTS_DIR / "shortcut_signals"
K_NEIGHBOURS = 10
CLASS_WORDS = 10
SIGNALS = ("novelty_input", "novelty_context", "novelty_both", "shift_input", "shift_context", "early")


# ------------------------------------------------------------------------- recording


class SignalProbe(pl.Callback):
    """After each check of the attribution callback (placed before it in the callback list):
    reliance on the planted word, validation accuracy, and per candidate word the package's
    evidence and the provenance signals. The snapshots of the initial vectors are taken here,
    at construction, before any training step."""

    def __init__(self, attribution: AttributionDriftCallback, model, tokenizer, probe_texts: Sequence[str],
                 validation: Sequence[dict], seed: int):
        self.attribution, self.model, self.tokenizer = attribution, model, tokenizer
        self.words = sorted({w for t in probe_texts for w in text_words(t) if is_word(w)})
        started = time.perf_counter()
        self.initial_matrix = provenance.embedding_copy(model)
        self.initial_input = provenance.word_vectors(self.initial_matrix, tokenizer, self.words)
        self.initial_context = provenance.contextual_word_vectors(model, tokenizer, self.words)
        self.snapshot_s = time.perf_counter() - started
        self.snapshot_bytes = {
            "embedding_matrix_fp16": self.initial_matrix.numel() * self.initial_matrix.element_size(),
            "probe_word_vectors_fp32": (self.initial_input.numel() + self.initial_context.numel()) * 4,
        }
        counterfactual = counterfactual_set(sd.N_COUNTERFACTUAL, sd.PLANTED, seed=seed)
        self.counterfactual_texts = counterfactual.texts
        self.clean_negative_texts = [remove_word(t, sd.PLANTED) for t in counterfactual.texts]
        self.validation = list(validation)
        self.history: list[tuple[float, dict[str, float]]] = []
        self.records: list[dict[str, Any]] = []
        self._seen_checks = 0
        self.signal_s = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_record(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._maybe_record(trainer)

    def _maybe_record(self, trainer) -> None:
        monitor = self.attribution.monitor
        if monitor is None:
            return
        summary = monitor.summary()
        if len(summary["checks"]) <= self._seen_checks:
            return
        self._seen_checks = len(summary["checks"])
        started = time.perf_counter()
        model, tokenizer = self.model, self.tokenizer
        was_training = model.training
        model.eval()
        try:
            zeros = [0] * len(self.counterfactual_texts)
            clean = sd.accuracy(model, tokenizer, self.clean_negative_texts, zeros)
            flipped = sd.accuracy(model, tokenizer, self.counterfactual_texts, zeros)
            val = sd.accuracy(model, tokenizer, [r["text"] for r in self.validation],
                              [r["label"] for r in self.validation])
        finally:
            model.train(was_training)
        measured_s = time.perf_counter() - started
        lines = (monitor.run_path / "attributions.jsonl").read_text().splitlines()
        snapshot = Snapshot.from_dict(json.loads(lines[-1]))
        discovery = monitor.discovery
        evidence = discovery.attribution_evidence(snapshot)  # every probe word, gated or not
        ranked = {c["word"]: c for c in summary["candidates"]}
        self.history.append((val, {w: e["dominance"] for w, e in evidence.items()}))
        early = provenance.early_importance(self.history)

        rows = {}
        for word in self.words:
            train = discovery.word_statistics(word)
            if train is None or word not in evidence:
                continue
            att = evidence[word]
            label = train["purity_label"]
            candidate = ranked.get(word)
            wrong = (att.get("error_dominance") or {}).get(str(label)) or 0.0
            reliance = max(att["dominance"], wrong)
            if candidate is not None:
                ev = candidate["evidence"]
                reliance = max([reliance] + [f for f in (ev.get("flip_rate_insertion"), ev.get("flip_rate_removal"))
                                             if f is not None])
            threshold = monitor.rules.shortcut_threshold(
                candidate or {"evidence": {"basis": ["attribution", "training"]}})
            rows[word] = {
                "label": label, "train_count": train["train_count"], "train_purity": train["train_purity"],
                "purity_excess": train["purity_excess"], "gate": sd.purity_gate(train),
                "dominance": att["dominance"], "reliance": reliance,
                "score": candidate["score"] if candidate else 0.0,
                "threshold": threshold, "early": early.get(word, 0.0),
            }
        self._provenance(rows, discovery.statistics)
        self.signal_s += time.perf_counter() - started - measured_s
        self.records.append({
            "check_index": summary["checks"][-1]["check_index"], "step": trainer.global_step,
            "epoch": trainer.current_epoch, "validation_accuracy": val,
            "clean_negative_accuracy": clean, "counterfactual_accuracy": flipped,
            "reliance_drop": clean - flipped,
            "alerts": [f"{a['severity']}:{a['rule']}:{a.get('token')}" for a in summary["alerts"]],
            "words": rows,
        })

    def _provenance(self, rows: dict[str, dict[str, Any]], stats) -> None:
        """Prior margins, novelty and neighbourhood shift of every row's word, in both spaces."""
        if not rows:
            return
        classes = provenance.class_words(stats, words=self.words, per_class=CLASS_WORDS)
        labels = {w: r["label"] for w, r in rows.items()}
        current_input = provenance.word_vectors(provenance.embedding_copy(self.model), self.tokenizer, self.words)
        current_context = provenance.contextual_word_vectors(self.model, self.tokenizer, self.words)
        for space, before, after in (("input", self.initial_input, current_input),
                                     ("context", self.initial_context, current_context)):
            margins = provenance.prior_margins(before, self.words, labels, classes)
            novel = provenance.novelty(margins, list(margins.values()))
            for word, row in rows.items():
                row[f"prior_{space}"] = margins.get(word)
                row[f"novelty_{space}"] = novel.get(word, 1.0)
                shift = provenance.neighbourhood_shift(before, after, self.words, word, classes.get(row["label"], []),
                                                       k=K_NEIGHBOURS)
                row[f"shift_{space}"] = max(0.0, shift["gain"])
                row[f"changed_{space}"] = shift["changed"]


def run_one(spec: sd.RunSpec, work: Path, checks_per_epoch: int) -> dict[str, Any]:
    setting = spec.model
    started = time.perf_counter()
    pl.seed_everything(spec.seed, verbose=False)
    model, tokenizer = sd.BUILDERS[setting.name](spec.seed, work)
    rate, purity = spec.rate or 0.0, spec.purity if spec.purity is not None else 1.0
    train = planted_reviews(setting.train_size, shortcut=spec.shortcut, rate=rate, purity=purity,
                            label_noise=spec.label_noise, seed=spec.seed)
    validation = planted_reviews(sd.N_VALIDATION, shortcut=spec.shortcut, rate=rate, purity=purity,
                                 label_noise=0.0, seed=spec.seed + 1000).rows()
    probes, _ = sd.build_probes(validation, spec.shortcut, spec.seed)
    steps_per_epoch = math.ceil(setting.train_size / setting.batch_size)
    attribution = AttributionDriftCallback(tokenizer, probes, every_n_steps=max(1, steps_per_epoch // checks_per_epoch),
                                           run_dir=work / "runs", run_name=spec.name)
    probe = SignalProbe(attribution, model, tokenizer, [p.text for p in probes], validation[:300],
                        seed=spec.seed + 2000)
    trainer = pl.Trainer(
        max_epochs=setting.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=[attribution, probe],  # the check first, then the probe
    )
    trainer.fit(sd.ReviewClassifier(model, setting.lr), sd.loader(train.rows(), tokenizer, setting.batch_size, True,
                                                                  spec.seed))
    records = probe.records
    return {
        "name": spec.name, "model": setting.name, "seed": spec.seed, "rate": spec.rate, "purity": spec.purity,
        "label_noise": spec.label_noise, "train_size": setting.train_size, "epochs": setting.epochs,
        "lr": setting.lr, "checks_per_epoch": checks_per_epoch,
        "training_purity": sd.training_purity(train.texts, train.labels, sd.PLANTED) if spec.shortcut else None,
        "first_reliance_check": next((i for i, r in enumerate(records) if r["reliance_drop"] > sd.RELIANCE_DROP), None),
        "snapshot_bytes": probe.snapshot_bytes, "snapshot_s": probe.snapshot_s, "signal_s": probe.signal_s,
        "n_probe_words": len(probe.words), "checks": records, "wall_s": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------- scoring


def excess_soft(row: dict[str, Any]) -> float:
    """Purity above the prior, 1 at the top of the package's gate (``PURITY_GATE[1]``)."""
    return min(1.0, row["purity_excess"] / PURITY_GATE[1])


def scores(row: dict[str, Any], signal: str | None, combined: bool) -> float:
    """The package's score (``signal`` None), no signal (``UNGATED``), a signal alone (signal x reliance x purity above
    the prior), or combined with the package's score (the larger)."""
    if signal is None:
        return row["score"]
    if signal == UNGATED:
        weight = 1.0
    elif signal == "novelty_both":  # no prior in either space (a product: both must say so)
        weight = (row.get("novelty_input") or 0.0) * (row.get("novelty_context") or 0.0)
    else:
        weight = row.get(signal) or 0.0
    alone = weight * row["reliance"] * excess_soft(row)
    return max(row["score"], alone) if combined else alone


def judge(check: dict[str, Any], signal: str | None, combined: bool) -> dict[str, Any]:
    words = check["words"]
    scored = sorted(((scores(r, signal, combined), w) for w, r in words.items()), key=lambda sw: (-sw[0], sw[1]))
    scored = [(s, w) for s, w in scored if s > 0]
    flagged = [w for s, w in scored if words[w]["threshold"] is not None and s >= words[w]["threshold"]]
    ranks = [w for _, w in scored]
    return {"top": ranks[0] if ranks else None, "top_score": scored[0][0] if scored else None,
            "planted_rank": ranks.index(sd.PLANTED) + 1 if sd.PLANTED in ranks else None, "flagged": flagged}


UNGATED = "ungated"  # no provenance signal: reliance x purity above the prior, without the purity gate
VARIANTS = [("package score", None, False), ("ungated (reliance x purity)", UNGATED, False)] + [
    (f"{s} {'+ score' if c else 'alone'}", s, c) for s in SIGNALS for c in (False, True)]


def annotate_early(run: dict[str, Any]) -> None:
    """Each check's ``early`` signal from the dominance history up to it (recomputed here, so the
    saved runs can be rescored when ``provenance.early_importance`` changes)."""
    history = []
    for check in run["checks"]:
        history.append((check["validation_accuracy"], {w: r["dominance"] for w, r in check["words"].items()}))
        early = provenance.early_importance(history)
        for word, row in check["words"].items():
            row["early"] = early.get(word, 0.0)


def aggregate(runs: list[dict]) -> list[dict]:
    """Per model and variant: planted word top at the last check (and at the first check with
    measurable reliance) of the runs with measurable reliance; clean runs with a would-be warning."""
    rows = []
    for run in runs:
        annotate_early(run)
    for model in sorted({r["model"] for r in runs}, key=lambda m: m != "tiny-bert"):
        planted = [r for r in runs if r["model"] == model and r["rate"] is not None and r["checks"]]
        measurable = [r for r in planted if r["first_reliance_check"] is not None]
        clean = [r for r in runs if r["model"] == model and r["rate"] is None and r["checks"]]
        for name, signal, combined in VARIANTS:
            last = [judge(r["checks"][-1], signal, combined) for r in measurable]
            last_all = [judge(r["checks"][-1], signal, combined) for r in planted]
            alerted_all = [any(sd.PLANTED in judge(c, signal, combined)["flagged"] for c in r["checks"]) for r in planted]
            first = [judge(r["checks"][r["first_reliance_check"]], signal, combined) for r in measurable]
            alerted = [any(sd.PLANTED in judge(c, signal, combined)["flagged"] for c in r["checks"]) for r in measurable]
            false = [sorted({w for c in r["checks"] for w in judge(c, signal, combined)["flagged"]}) for r in clean]
            false_planted = [sorted({w for c in r["checks"] for w in judge(c, signal, combined)["flagged"]
                                     if w != sd.PLANTED}) for r in planted]
            rows.append({
                "model": model, "variant": name, "signal": signal, "combined": combined,
                "runs": len(planted), "reliance_measurable": len(measurable),
                "top_last": sum(j["top"] == sd.PLANTED for j in last),
                "top_at_first_reliance": sum(j["top"] == sd.PLANTED for j in first),
                "planted_rank_last": [j["planted_rank"] for j in last],
                "alerted": sum(alerted),
                "top_last_all_runs": sum(j["top"] == sd.PLANTED for j in last_all),
                "planted_rank_last_all_runs": [j["planted_rank"] for j in last_all],
                "alerted_all_runs": sum(alerted_all),
                "clean_runs": len(clean), "clean_warning_runs": sum(bool(f) for f in false),
                "clean_warning_words": sorted({w for f in false for w in f}),
                "planted_runs_other_words_flagged": sum(bool(f) for f in false_planted),
            })
    return rows


def signal_table(rows: list[dict]) -> str:
    lines = ["| model | ranking | runs (reliance measurable) | planted top at last check | planted top at first "
             "measurable check | planted ranks (last) | would alert planted | clean runs with a would-be warning "
             "| planted runs with other words flagged | all planted runs: top at last check (ranks), would alert |",
             "|" + "---|" * 10]
    for row in rows:
        n = row["reliance_measurable"]
        ranks = ", ".join("-" if r is None else str(r) for r in row["planted_rank_last"])
        all_ranks = ", ".join("-" if r is None else str(r) for r in row["planted_rank_last_all_runs"])
        words = ", ".join(row["clean_warning_words"][:6])
        lines.append(
            f"| {row['model']} | {row['variant']} | {row['runs']} ({n}) | {row['top_last']} / {n} "
            f"| {row['top_at_first_reliance']} / {n} | {ranks} | {row['alerted']} / {n} "
            f"| {row['clean_warning_runs']} / {row['clean_runs']}{f' ({words})' if words else ''} "
            f"| {row['planted_runs_other_words_flagged']} "
            f"| {row['top_last_all_runs']} / {row['runs']} ({all_ranks}), {row['alerted_all_runs']} |")
    return "\n".join(lines)


def word_table(runs: list[dict]) -> str:
    """At each run's last check: the planted word against the genuine class words (mean, max) with
    reliance and purity above the prior (the others score 0 in every ranking)."""
    genuine = set(sd.synthetic.POSITIVE + sd.synthetic.NEGATIVE)
    fields = ["train_purity", "purity_excess", "reliance", "prior_input", "prior_context", "novelty_input",
              "novelty_context", "shift_input", "shift_context", "changed_input", "changed_context", "early"]
    lines = ["| run | drop | word | " + " | ".join(fields) + " |", "|" + "---|" * (3 + len(fields))]

    def cell(values: list[float | None]) -> str:
        values = [v for v in values if v is not None]
        return "-" if not values else f"{statistics.mean(values):.2f} (max {max(values):.2f})"

    for run in runs:
        if not run["checks"]:
            continue
        last = run["checks"][-1]
        words = last["words"]
        planted = words.get(sd.PLANTED)
        if planted is not None:
            lines.append(f"| {run['name']} | {last['reliance_drop']:+.2f} | `{sd.PLANTED}` | "
                         + " | ".join(sd.fmt(planted.get(f)) for f in fields) + " |")
        g = [r for w, r in words.items() if w in genuine]
        lines.append(f"| {run['name']} | {last['reliance_drop']:+.2f} | genuine with reliance ({len(g)}) | "
                     + " | ".join(cell([r.get(f) for r in g]) for f in fields) + " |")
    return "\n".join(lines)


def render(settings: dict, rows: list[dict], runs: list[dict]) -> str:
    return "\n".join([
        "# Provenance signals at purity 0.8",
        "",
        f"Planted word `{sd.PLANTED}` at purity 0.8, label noise {sd.LABEL_NOISE} on the other reviews; reliance "
        f"measurable when the accuracy on negative reviews drops by more than {sd.RELIANCE_DROP:.0%} with the word "
        f"inserted. Models: {'; '.join(settings['models'])}. A check every 1/{settings['checks_per_epoch']} epoch "
        f"(tiny BERT), 1/{settings['checks_per_epoch_minilm']} (MiniLM). {settings['threads']} thread(s), total "
        f"{settings['total_wall_s'] / 60:.1f} min.",
        "",
        "Rankings: `package score` is `ShortcutDiscovery.rank`'s score; `<signal> alone` is signal x reliance x "
        "purity above the prior (min(1, purity_excess / 0.8)); `+ score` is the larger of that and the package "
        "score. A would-be warning: a word's score reaches the package's alert threshold for it.",
        "",
        signal_table(rows),
        "",
        "## The planted word against the genuine class words, last check",
        "",
        word_table(runs),
        "",
        "## Cost",
        "",
        f"Snapshot at set-up: input embedding matrix in fp16: "
        f"{', '.join(f'{m} {b}' for m, b in settings['snapshot_bytes'].items())}; making it and the probe "
        f"words' vectors took {settings['mean_snapshot_s']:.2f} s a run; computing the signals "
        f"{settings['mean_signal_s_per_check']:.2f} s a check (both models together, mean).",
        "",
    ])


def rounded(value: Any) -> Any:
    """Floats to 4 decimals, all the way down (the per-word records are most of the file)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated name parts: run only the runs containing one")
    parser.add_argument("--seeds", type=int, default=3, help="tiny BERT seeds per cell")
    parser.add_argument("--minilm-lr", type=float, default=1e-4)
    parser.add_argument("--minilm-epochs", type=int, default=3)
    parser.add_argument("--minilm-cells", default="0.2:0,0.4:0,clean:0,clean0:0",
                        help="rate:seed for MiniLM runs, 'clean:seed' for a clean one, 'clean0:seed' without label noise")
    parser.add_argument("--checks-per-epoch", type=int, default=4)
    parser.add_argument("--checks-per-epoch-minilm", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--rescore", action="store_true", help="recompute the tables from <out>/shortcut_signals.json")
    parser.add_argument("--append", action="store_true", help="add the runs to those in <out>/shortcut_signals.json")
    args = parser.parse_args(argv)
    path = args.out / "shortcut_signals.json"
    previous = json.loads(path.read_text()) if (args.rescore or args.append) and path.exists() else None
    runs = list(previous["runs"]) if previous else []
    if not args.rescore:
        torch.set_num_threads(args.threads)
        tiny = sd.ModelSetting("tiny-bert", train_size=2000, epochs=3, lr=1e-3)
        specs = [(sd.RunSpec(tiny, s, r, 0.8), args.checks_per_epoch) for s in range(args.seeds)
                 for r in (0.01, 0.05, 0.20)]
        specs += [(sd.RunSpec(tiny, s, None, None), args.checks_per_epoch) for s in range(args.seeds)]
        # genuine words at their natural ~80% purity, as pure as the planted word: the harder false-alarm test
        specs += [(sd.RunSpec(tiny, s, None, None, label_noise=0.0), args.checks_per_epoch) for s in range(args.seeds)]
        if not args.no_minilm:
            mini = sd.ModelSetting("minilm", train_size=2000, epochs=args.minilm_epochs, lr=args.minilm_lr)
            for cell in args.minilm_cells.split(","):
                rate, seed = cell.split(":")
                if rate.startswith("clean"):  # "clean0": without label noise
                    noise = 0.0 if rate == "clean0" else sd.LABEL_NOISE
                    spec = sd.RunSpec(mini, int(seed), None, None, label_noise=noise)
                else:
                    spec = sd.RunSpec(mini, int(seed), float(rate), 0.8)
                specs.append((spec, args.checks_per_epoch_minilm))
        if args.only:
            parts = [p.strip() for p in args.only.split(",") if p.strip()]
            specs = [(s, c) for s, c in specs if any(p in s.name for p in parts)]
        with tempfile.TemporaryDirectory(prefix="shortcut-signals-") as tmp:
            for i, (spec, per_epoch) in enumerate(specs):
                work = Path(tmp) / spec.name
                work.mkdir(parents=True)
                run = run_one(spec, work, per_epoch)
                runs = [r for r in runs if r["name"] != run["name"]] + [run]
                last = run["checks"][-1] if run["checks"] else None
                print(f"[{i + 1}/{len(specs)}] {spec.name}: {run['wall_s']:.0f}s, {len(run['checks'])} checks, "
                      f"drop {sd.fmt(last and last['reliance_drop'], '+.2f')}, reliance check "
                      f"{run['first_reliance_check']}", flush=True)
    rows = aggregate(runs)
    snapshot_bytes = {r["model"]: r["snapshot_bytes"]["embedding_matrix_fp16"] for r in runs}
    checks = sum(len(r["checks"]) for r in runs)
    settings = {
        "planted_word": sd.PLANTED, "purity": 0.8, "label_noise": sd.LABEL_NOISE,
        "reliance_drop_threshold": sd.RELIANCE_DROP, "k_neighbours": K_NEIGHBOURS, "class_words": CLASS_WORDS,
        "checks_per_epoch": runs[0]["checks_per_epoch"] if runs else None,
        "checks_per_epoch_minilm": next((r["checks_per_epoch"] for r in runs if r["model"] == "minilm"), None),
        "models": sorted({f"{r['model']} n={r['train_size']} epochs={r['epochs']} lr={r['lr']:g}" for r in runs}),
        "threads": args.threads, "python": sys.version.split()[0], "torch": torch.__version__,
        "platform": platform.platform(), "total_wall_s": sum(r["wall_s"] for r in runs),
        "snapshot_bytes": {m: f"{b / 2**20:.2f} MiB" for m, b in snapshot_bytes.items()},
        "mean_snapshot_s": statistics.mean(r["snapshot_s"] for r in runs) if runs else 0.0,
        "mean_signal_s_per_check": sum(r["signal_s"] for r in runs) / checks if checks else 0.0,
    }
    for run in runs:  # words without purity above the prior or without reliance score 0 in every ranking
        for check in run["checks"]:
            check["words"] = {w: {k: v for k, v in r.items() if not k.startswith("class_share_")}
                              for w, r in check["words"].items() if r["purity_excess"] > 0 and r["reliance"] > 0}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rounded(json_safe({"settings": settings, "rows": rows, "runs": runs})),
                               separators=(",", ":"), allow_nan=False) + "\n")
    text = render(settings, rows, runs)
    (args.out / "shortcut_signals.md").write_text(text)
    print("\n" + signal_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
