"""Tiny Lightning fixtures for the callback tests: a BERT classifier built from a config, a
tokenizer from a vocabulary written here, toy reviews. Works with either Lightning namespace."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["great", "good", "wonderful", "excellent", "fun"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "dull"]
FILLER = ["the", "movie", "film", "was", "plot", "acting", "story", "really", "quite", "this"]


def tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    vocab = Path(directory) / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + POSITIVE + NEGATIVE + FILLER) + "\n")
    return BertTokenizerFast(str(vocab), model_max_length=32)


def reviews(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Labelled toy reviews: one sentiment word among three fillers; labels alternate."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


class Collate:
    """Tokenise a list of review dicts into the model's batch."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.tok([r["text"] for r in rows], padding=True, return_tensors="pt")
        batch["labels"] = torch.tensor([r["label"] for r in rows])
        return dict(batch)


def loader(rows: list[dict[str, Any]], tok, batch_size: int = 8):
    from torch.utils.data import DataLoader

    return DataLoader(rows, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=Collate(tok))


def bert(vocab_size: int, dropout: float = 0.1, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, num_labels=2,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def module_classes(pl):
    """LightningModules for namespace ``pl``: one holding a BERT, one without validation, and a
    custom (non Hugging Face) classifier."""

    class TextClassifier(pl.LightningModule):
        def __init__(self, vocab_size: int, dropout: float = 0.1, lr: float = 1e-2, seed: int = 0, sgd: bool = False):
            super().__init__()
            self.classifier = bert(vocab_size, dropout, seed)
            self.lr = lr
            self.sgd = sgd  # Adam's first steps turn rounding noise into whole steps; SGD does not

        def training_step(self, batch, batch_idx):
            loss = self.classifier(**batch).loss
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.classifier(**batch).loss)

        def configure_optimizers(self):
            if self.sgd:
                return torch.optim.SGD(self.parameters(), lr=self.lr)
            return torch.optim.AdamW(self.parameters(), lr=self.lr)

    class NoValidation(TextClassifier):
        validation_step = None  # type: ignore[assignment]

    class BagOfEmbeddings(pl.LightningModule):
        def __init__(self, vocab_size: int):
            super().__init__()
            torch.manual_seed(0)
            self.embed = torch.nn.Embedding(vocab_size, 8)
            self.head = torch.nn.Linear(8, 2)

        def logits(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1))

        def training_step(self, batch, batch_idx):
            out = self.logits(batch["input_ids"], batch["attention_mask"])
            return torch.nn.functional.cross_entropy(out, batch["labels"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return TextClassifier, NoValidation, BagOfEmbeddings


def trainer(pl, root: Path, **overrides):
    options = dict(
        accelerator="cpu", devices=1, max_epochs=2, default_root_dir=str(root), logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        deterministic=True,
    )
    options.update(overrides)
    return pl.Trainer(**options)
