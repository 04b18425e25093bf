"""Tiny text classifiers and tokenizers built from configs and a vocabulary written here, so the
package can be tried, tested and benchmarked with no network: hidden 32, 2 layers, one for every
architecture the README lists as tested (``ARCHITECTURES``, built by ``build_architecture``)."""

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"], show_progress=False)
    corpus = [" ".join(random.Random(i).sample(WORDS[:30], 6)) for i in range(200)] + ["zorblax"] * 2
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", model_max_length=64,
                                   model_input_names=["input_ids", "attention_mask"])  # as GPT-2's own tokenizer


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


# ------------------------------------------------------------------------------------------------
# Every sequence classifier the architecture test covers: a tiny config (hidden 32, 2 layers) and
# the tokenizer family it is paired with ("wordpiece": [CLS] x [SEP]; "bpe": byte-level, no
# specials). ``inputs`` are the tokenizer outputs the real checkpoints' tokenizers return.

WORDPIECE_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
NO_TYPES = ["input_ids", "attention_mask"]


def _arch_table():
    L = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    roberta_like = dict(max_position_embeddings=66, type_vocab_size=1, **L)
    decoder = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                   intermediate_size=37, max_position_embeddings=64)
    # name: (config class name, options, tokenizer family, tokenizer model_input_names, padding side)
    return {
        "bert": ("BertConfig", dict(max_position_embeddings=64, **L), "wordpiece", WORDPIECE_INPUTS),
        "roberta": ("RobertaConfig", roberta_like, "wordpiece", NO_TYPES),
        "xlm-roberta": ("XLMRobertaConfig", roberta_like, "wordpiece", NO_TYPES),
        "camembert": ("CamembertConfig", roberta_like, "wordpiece", NO_TYPES),
        "distilbert": ("DistilBertConfig", dict(dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64),
                       "wordpiece", NO_TYPES),
        "deberta-v2": ("DebertaV2Config", dict(max_position_embeddings=64, **L), "wordpiece", WORDPIECE_INPUTS),
        "electra": ("ElectraConfig", dict(embedding_size=16, max_position_embeddings=64, **L), "wordpiece", WORDPIECE_INPUTS),
        "albert": ("AlbertConfig", dict(embedding_size=16, max_position_embeddings=64, **L), "wordpiece", WORDPIECE_INPUTS),
        "mobilebert": ("MobileBertConfig", dict(embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
                                                num_feedforward_networks=1, max_position_embeddings=64, **L),
                       "wordpiece", WORDPIECE_INPUTS),
        "convbert": ("ConvBertConfig", dict(embedding_size=32, conv_kernel_size=3, max_position_embeddings=64, **L),
                     "wordpiece", WORDPIECE_INPUTS),
        "funnel": ("FunnelConfig", dict(block_sizes=[1, 1], num_decoder_layers=1, d_model=32, n_head=2, d_head=16,
                                        d_inner=37, max_position_embeddings=64), "wordpiece", WORDPIECE_INPUTS),
        "mpnet": ("MPNetConfig", dict(max_position_embeddings=66, **L), "wordpiece", NO_TYPES),
        "data2vec-text": ("Data2VecTextConfig", roberta_like, "wordpiece", NO_TYPES),
        "nystromformer": ("NystromformerConfig", dict(max_position_embeddings=68, segment_means_seq_len=64, num_landmarks=64,
                                                     conv_kernel_size=5, **L), "wordpiece", WORDPIECE_INPUTS),
        "big_bird": ("BigBirdConfig", dict(attention_type="original_full", max_position_embeddings=64, **L),
                     "wordpiece", WORDPIECE_INPUTS),
        "big_bird-block_sparse": ("BigBirdConfig", dict(attention_type="block_sparse", block_size=2, num_random_blocks=1,
                                                       max_position_embeddings=64, **L), "wordpiece", WORDPIECE_INPUTS),
        "longformer": ("LongformerConfig", dict(attention_window=4, max_position_embeddings=66, type_vocab_size=1, **L),
                       "wordpiece", NO_TYPES),
        "xlnet": ("XLNetConfig", dict(d_model=32, n_layer=2, n_head=2, d_inner=37), "xlnet", WORDPIECE_INPUTS),
        "modernbert": ("ModernBertConfig", dict(max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=8,
                                               reference_compile=False, **L), "wordpiece", NO_TYPES),
        "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=2, n_positions=64), "bpe", NO_TYPES),
        "opt": ("OPTConfig", dict(hidden_size=32, ffn_dim=37, num_hidden_layers=2, num_attention_heads=2,
                                  word_embed_proj_dim=32, max_position_embeddings=64), "bpe", NO_TYPES),
        "llama": ("LlamaConfig", decoder, "bpe", NO_TYPES),
        "mistral": ("MistralConfig", dict(sliding_window=None, **decoder), "bpe", NO_TYPES),
        "qwen2": ("Qwen2Config", decoder, "bpe", NO_TYPES),
        "qwen3": ("Qwen3Config", dict(head_dim=16, **decoder), "bpe", NO_TYPES),
        "gemma": ("GemmaConfig", dict(head_dim=16, **decoder), "bpe", NO_TYPES),
        "gemma2": ("Gemma2Config", dict(head_dim=16, query_pre_attn_scalar=16, **decoder), "bpe", NO_TYPES),
        "phi3": ("Phi3Config", dict(**decoder), "bpe", NO_TYPES),
        "bart": ("BartConfig", dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                                    decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
                                    max_position_embeddings=64), "wordpiece", NO_TYPES),
        "t5": ("T5Config", dict(d_model=32, d_kv=16, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=2,
                                relative_attention_num_buckets=8), "wordpiece", NO_TYPES),
    }


ARCH_TABLE = _arch_table()


def arch_tokenizer(arch: str, directory: Path):
    """The tokenizer ``arch`` is tested with, returning the inputs its real tokenizer returns."""
    family, inputs = ARCH_TABLE[arch][2], ARCH_TABLE[arch][3]
    if family == "bpe":
        tok = bpe_tokenizer(directory)
    else:
        tok = bert_tokenizer(directory)
    tok.model_input_names = list(inputs)
    if family == "xlnet":  # XLNet: left padding, segment id 3 for padding, <sep> <cls> at the end
        from tokenizers import processors

        backend = tok.backend_tokenizer
        sep, cls = tok.sep_token_id, tok.cls_token_id
        backend.post_processor = processors.TemplateProcessing(
            single="$A:0 [SEP]:0 [CLS]:2", pair="$A:0 [SEP]:0 $B:1 [SEP]:1 [CLS]:2",
            special_tokens=[("[SEP]", sep), ("[CLS]", cls)],
        )
        tok.padding_side = "left"
    return tok


def arch_config(arch: str, tokenizer, num_labels: int = 2, **extra):
    import transformers as tf

    cls_name, options = ARCH_TABLE[arch][0], dict(ARCH_TABLE[arch][1])
    pad = tokenizer.pad_token_id
    ids = dict(pad_token_id=pad)
    family = ARCH_TABLE[arch][2]
    if family == "bpe":
        eos = tokenizer.eos_token_id
        ids.update(bos_token_id=eos, eos_token_id=eos)
    else:
        ids.update(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    if arch in ("modernbert", "big_bird", "big_bird-block_sparse"):
        ids.update(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    if arch in ("bart", "t5"):
        ids.update(decoder_start_token_id=tokenizer.sep_token_id if arch == "bart" else pad)
    if arch == "funnel":
        options.pop("max_position_embeddings")
    return getattr(tf, cls_name)(vocab_size=len(tokenizer), num_labels=num_labels, **ids, **options, **extra)


def arch_model(arch: str, tokenizer, num_labels: int = 2, seed: int = 0, **extra):
    """A tiny ``*ForSequenceClassification`` of ``arch``, eager attention, eval mode."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    config = arch_config(arch, tokenizer, num_labels, **extra)
    try:
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    except (ValueError, TypeError):
        model = AutoModelForSequenceClassification.from_config(config)
    return model.eval()


# case id -> the name the README lists
ARCHITECTURES = {
    "bert": "BERT", "roberta": "RoBERTa", "xlm-roberta": "XLM-R", "camembert": "CamemBERT",
    "distilbert": "DistilBERT", "deberta-v2": "DeBERTa-v2", "electra": "ELECTRA", "albert": "ALBERT",
    "mobilebert": "MobileBERT", "convbert": "ConvBERT", "funnel": "Funnel", "mpnet": "MPNet",
    "data2vec-text": "Data2VecText", "nystromformer": "Nystromformer", "big_bird": "BigBird (full attention)",
    "big_bird-block_sparse": "BigBird (block-sparse)", "longformer": "Longformer", "xlnet": "XLNet",
    "modernbert": "ModernBERT", "gpt2": "GPT-2", "opt": "OPT", "llama": "Llama", "mistral": "Mistral",
    "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma": "Gemma", "gemma2": "Gemma2", "phi3": "Phi-3", "bart": "BART",
    "t5": "T5", "peft-lora": "PEFT LoRA (BERT)", "peft-lora-embeddings": "PEFT LoRA on the embeddings (BERT)",
    "compiled": "torch.compile'd BERT",
}


class ArchitectureUnavailable(RuntimeError):
    """The installed transformers (or peft) cannot build this architecture."""


def base_architecture(case: str) -> str:
    return "bert" if case in ("peft-lora", "peft-lora-embeddings", "compiled") else case


def build_architecture(case: str, directory: Path):
    """``(tokenizer, model)`` for one case of ``ARCHITECTURES``, trained a few steps so its scores
    are not trivial. Raises :class:`ArchitectureUnavailable` where this environment lacks it."""
    import transformers

    arch = base_architecture(case)
    cls_name = ARCH_TABLE[arch][0]
    if not hasattr(transformers, cls_name):
        raise ArchitectureUnavailable(f"{cls_name} does not exist in transformers {transformers.__version__}")
    tok = arch_tokenizer(arch, directory)
    model = arch_model(arch, tok, seed=1)
    if case.startswith("peft"):
        try:
            import peft
        except ImportError as err:
            raise ArchitectureUnavailable("peft is not installed") from err
        targets = ["word_embeddings"] if case == "peft-lora-embeddings" else ["query", "value"]
        lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
        model = peft.get_peft_model(model, lora)
    texts, labels = sentiment_data(64, seed=4)
    train_briefly(model, tok, texts, labels, steps=8, batch_size=8, lr=3e-3, seed=1)
    if case == "compiled":
        model = torch.compile(model, backend="aot_eager")
    return tok, model
