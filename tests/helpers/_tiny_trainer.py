"""Real Hugging Face ``Trainer`` runs on the tiny BERT and toy reviews of ``tiny_models``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tiny_models import bert_tokenizer, sentiment_data, tiny_model


def review_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    texts, labels = sentiment_data(n, seed=seed)
    return [{"text": text, "label": label} for text, label in zip(texts, labels)]


class ReviewDataset(torch.utils.data.Dataset):
    """Tokenized rows that keep their raw ``text``; the Trainer drops it before the model."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer: Any, keep_text: bool = True):
        encoded = tokenizer([r["text"] for r in rows], padding="max_length", max_length=12, truncation=True)
        self.items = []
        for i, row in enumerate(rows):
            item = {key: encoded[key][i] for key in encoded}
            item["label"] = row["label"]
            if keep_text:
                item["text"] = row["text"]
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def training_args(output_dir: Path, **overrides: Any):
    """Seeded CPU arguments: two epochs of 4 steps, evaluation each epoch, no reporting."""
    from transformers import TrainingArguments

    settings: dict[str, Any] = dict(
        output_dir=str(output_dir), use_cpu=True, dataloader_num_workers=0, report_to="none", seed=0,
        num_train_epochs=2, per_device_train_batch_size=8, per_device_eval_batch_size=16, learning_rate=5e-3,
        eval_strategy="epoch", save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def make_trainer(tmp_path: Path, callbacks: list[Any] | None = None, n_train: int = 32, keep_text: bool = True,
                 **overrides: Any):
    """A ``Trainer`` on a fresh tiny BERT; ``overrides`` go to ``TrainingArguments``."""
    from transformers import Trainer

    tokenizer = bert_tokenizer(tmp_path)
    overrides.setdefault("output_dir", tmp_path / "out")
    return Trainer(
        model=tiny_model("bert", tokenizer, seed=0),
        args=training_args(**overrides),
        train_dataset=ReviewDataset(review_rows(n_train, seed=1), tokenizer, keep_text),
        eval_dataset=ReviewDataset(review_rows(16, seed=2), tokenizer, keep_text),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
