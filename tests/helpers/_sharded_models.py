"""The models the FSDP jobs shard (``tests/jobs/_fsdp_job.py``) and the tests rebuild unsharded."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import arch_model, arch_tokenizer, sentiment_data

CASES = ("bert", "qwen2-lora")
LAYER_CLASSES = ("BertLayer", "Qwen2DecoderLayer")
PROBES = [
    {"id": "p0", "text": "the movie was great", "label": 1},
    {"id": "p1", "text": "this plot is really boring and dull", "label": 0},
    {"id": "p2", "text": "it was not good but the acting was wonderful", "label": 1},
    {"id": "p3", "text": "awful", "label": 0},
    {"id": "p4", "text": "john loved the story , it is excellent fun", "label": 1},
    {"id": "p5", "text": "a terrible film", "label": 0},
]
ENGINE_OPTIONS = dict(n_steps=2, max_steps=64, rel_tolerance=0.01, abs_tolerance=1e-9)


def build(case: str, directory: Path):
    """``(tokenizer, model)``, the same weights in every process (seeded)."""
    arch = "qwen2" if case.startswith("qwen2") else "bert"
    Path(directory).mkdir(parents=True, exist_ok=True)
    tok = arch_tokenizer(arch, directory)
    model = arch_model(arch, tok, seed=3)
    if case.endswith("-lora"):
        import peft

        torch.manual_seed(4)
        lora = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                               init_lora_weights=False)
        model = peft.get_peft_model(model, lora)
    return tok, model


def training_batches(tok, rank: int, steps: int, size: int = 4):
    """Each rank its own batches, as a data-parallel sampler would give them."""
    texts, labels = sentiment_data(steps * size * 2, seed=11)
    out = []
    for step in range(steps):
        start = (2 * step + rank) * size
        enc = tok(texts[start : start + size], padding=True, return_tensors="pt")
        out.append((dict(enc), torch.tensor(labels[start : start + size])))
    return out
