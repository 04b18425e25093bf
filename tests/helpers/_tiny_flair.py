"""Tiny Flair set-ups for the Flair tests: a BERT saved from a config with its tokenizer (no
network), FastText-format corpora written here, and TextClassifiers over them."""

from __future__ import annotations

import random
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the a movie film was is plot acting very really great good fun bad awful dull un ##happy acme . !".split()
POSITIVE = ["great", "good", "fun"]
NEGATIVE = ["bad", "awful", "dull"]
FILLER = ["the", "a", "movie", "film", "plot", "acting", "was", "is", "very", "really"]
PROBES = [
    {"text": "the movie was great .", "label": "pos", "id": "great"},
    {"text": "really bad film !", "label": "neg", "id": "bad"},
    {"text": "the acting was very unhappy", "label": "neg", "id": "unhappy"},
    {"text": "fun", "label": "pos", "id": "short"},
]


def save_tiny_bert(directory: Path, seed: int = 0) -> str:
    """A 2-layer BERT and its fast tokenizer, both ``save_pretrained`` into ``directory``."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + WORDS) + "\n")
    tokenizer = BertTokenizerFast(str(vocab), model_max_length=64)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory)
    return str(directory)


def review(rng: random.Random, label: str) -> str:
    words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words) + " ."


def write_corpus(directory: Path, n_train: int = 24, seed: int = 0, multi_label: bool = False) -> Path:
    """train/dev/test FastText files; multi-label lines also carry ``__label__acting`` when
    the review mentions acting."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", 8), ("test", 8)):
        lines = []
        for i in range(n):
            label = "pos" if i % 2 == 0 else "neg"
            text = review(rng, label)
            labels = [label] + (["acting"] if multi_label and "acting" in text.split() else [])
            lines.append(" ".join(f"__label__{x}" for x in labels) + " " + text)
        (directory / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return directory


def load_corpus(directory: Path):
    from flair.datasets import ClassificationCorpus

    return ClassificationCorpus(directory, label_type="sentiment")


def text_classifier(model_dir: str, corpus, seed: int = 0, multi_label: bool = False, **embedding_options):
    """A seeded TextClassifier over TransformerDocumentEmbeddings(model_dir)."""
    import flair
    from flair.embeddings import TransformerDocumentEmbeddings
    from flair.models import TextClassifier

    flair.set_seed(seed)
    embeddings = TransformerDocumentEmbeddings(model_dir, **embedding_options)
    labels = corpus.make_label_dictionary("sentiment", add_unk=False)
    return TextClassifier(embeddings, label_type="sentiment", label_dictionary=labels, multi_label=multi_label)
