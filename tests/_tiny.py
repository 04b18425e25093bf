"""Tiny models and tokenizers built from configs and a vocabulary written here: no network."""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = (
    "the a movie film was is it this plot acting story great good wonderful excellent loved fun "
    "bad terrible awful boring hated dull not very really quite and but so . , ! zo ##rb ##la ##x "
    "brand acme name john mary"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["great", "good", "wonderful", "excellent", "loved", "fun"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "hated", "dull"]
FILLER = ["the", "movie", "film", "was", "is", "it", "this", "plot", "acting", "story", "very", "really", "quite"]


def write_vocab(directory: Path) -> Path:
    path = Path(directory) / "vocab.txt"
    path.write_text("\n".join(SPECIALS + WORDS) + "\n")
    return path


def bert_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(str(write_vocab(directory)), model_max_length=64)


def bpe_tokenizer(directory: Path):
    """A byte-level BPE tokenizer (GPT-2 style) trained here on the test corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"], show_progress=False)
    corpus = [" ".join(random.Random(i).sample(WORDS[:30], 6)) for i in range(200)] + ["zorblax"] * 2
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", model_max_length=64)


def tiny_config(arch: str, vocab_size: int, num_labels: int = 2, pad_token_id: int = 0, **extra):
    import transformers as tf

    common = dict(vocab_size=vocab_size, num_labels=num_labels, pad_token_id=pad_token_id, **extra)
    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    if arch == "bert":
        return tf.BertConfig(max_position_embeddings=64, **layers, **common)
    if arch == "roberta":
        return tf.RobertaConfig(max_position_embeddings=66, type_vocab_size=1, **layers, **common)
    if arch == "xlm-roberta":
        return tf.XLMRobertaConfig(max_position_embeddings=66, type_vocab_size=1, **layers, **common)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64, **common)
    if arch == "deberta-v2":
        return tf.DebertaV2Config(max_position_embeddings=64, **layers, **common)
    if arch == "electra":
        return tf.ElectraConfig(embedding_size=16, max_position_embeddings=64, **layers, **common)
    if arch == "albert":
        return tf.AlbertConfig(embedding_size=16, max_position_embeddings=64, **layers, **common)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **common)
    raise ValueError(arch)


def tiny_model(arch: str, tokenizer, num_labels: int = 2, seed: int = 0, **extra):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer), num_labels, tokenizer.pad_token_id, **extra)
    return AutoModelForSequenceClassification.from_config(config).eval()


def sentiment_data(n: int, seed: int = 0, shortcut: str | None = None, shortcut_rate: float = 0.0):
    """Labelled toy reviews: one sentiment word among fillers; optional planted word in positives."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        if shortcut and label == 1 and rng.random() < shortcut_rate:
            words.insert(rng.randrange(len(words)), shortcut)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def train_briefly(model, tokenizer, texts, labels, steps: int = 60, lr: float = 1e-3, seed: int = 0, batch_size: int = 16):
    """A few seeded SGD steps, enough that the tiny model is no longer near-linear."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    for _ in range(steps):
        idx = rng.sample(range(len(texts)), batch_size)
        enc = tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")
        out = model(**enc, labels=torch.tensor([labels[i] for i in idx]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    return model
