"""A check that runs out of memory: the engine frees the failed chunk, halves its token budget
and runs the chunks not done again (down to one probe a chunk); past that the check is recorded
failed (``explain-callbacks check`` sees it) and the training step after it is unaffected. The
error is injected at the n-th forward of a chunk, as torch raises it."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import bert_tokenizer, sentiment_data, tiny_model, train_briefly

from explain_callbacks import AttributionEngine
from explain_callbacks.attribution.memory import CheckOutOfMemory, is_out_of_memory
from explain_callbacks.monitor import AttributionMonitor
from explain_callbacks.run.cli import main as cli_main

TEXTS, LABELS = sentiment_data(64, seed=2)
PROBES = [{"id": f"p{i}", "text": t, "label": l} for i, (t, l) in enumerate(zip(TEXTS[:8], LABELS[:8]))]
OPTIONS = dict(n_steps=4, max_steps=32, rel_tolerance=0.01, tokens_per_chunk=96)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = bert_tokenizer(tmp_path_factory.mktemp("vocab"))
    model = train_briefly(tiny_model("bert", tokenizer), tokenizer, TEXTS, LABELS, steps=20)
    return model, tokenizer


def out_of_memory_at(engine: AttributionEngine, calls: set[int] | None, error=None):
    """Make the adapter's forward raise ``error`` at those calls, counted from now (``None``:
    at every call)."""
    forward = engine.adapter.forward
    seen = {"n": 0, "raised": 0}

    def failing(input_ids, *args):
        seen["n"] += 1
        if calls is None or seen["n"] in calls:
            seen["raised"] += 1
            raise error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(input_ids, *args)

    engine.adapter.forward = failing
    return seen


def test_recognises_the_errors_torch_raises():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."))
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize("nth", [1, 3])
def test_the_check_completes_with_smaller_chunks(trained, nth):
    model, tok = trained
    reference = AttributionEngine(model, tok, **OPTIONS).attribute(PROBES)
    engine = AttributionEngine(model, tok, **OPTIONS)
    engine.prepare(PROBES)
    seen = out_of_memory_at(engine, {nth})
    got = engine.attribute(PROBES)
    assert seen["raised"] == 1 and engine.chunk_tokens == OPTIONS["tokens_per_chunk"] // 2
    for a, b in zip(got, reference):
        assert a.probe_id == b.probe_id and a.n_steps == b.n_steps
        assert a.token_scores == pytest.approx(b.token_scores, rel=1e-4, abs=1e-6)


def test_out_of_memory_down_to_one_probe_a_chunk_fails_the_check_and_training_goes_on(trained, tmp_path):
    model, tok = copy.deepcopy(trained[0]), trained[1]
    twin = copy.deepcopy(model)
    engine = AttributionEngine(model, tok, **OPTIONS)
    monitor = AttributionMonitor(engine, PROBES, run_dir=tmp_path, run_name="oom", verbose=False)
    seen = out_of_memory_at(engine, None, RuntimeError("CUDA error: out of memory"))
    torch.manual_seed(0)
    train_briefly(model, tok, TEXTS, LABELS, steps=1, seed=5)
    assert monitor.check(step=1) is None
    assert seen["raised"] > 2 and engine.chunk_tokens < OPTIONS["tokens_per_chunk"] // 2
    failed = monitor.summary()["failed_checks"]
    assert len(failed) == 1 and failed[0].startswith(f"step 1: {CheckOutOfMemory.__name__}: ")
    # the step after the failed check is the step without it
    after = train_briefly(model, tok, TEXTS, LABELS, steps=1, seed=6).state_dict()
    torch.manual_seed(0)
    train_briefly(twin, tok, TEXTS, LABELS, steps=1, seed=5)
    expected = train_briefly(twin, tok, TEXTS, LABELS, steps=1, seed=6).state_dict()
    assert all(torch.equal(after[k], v) for k, v in expected.items())
    monitor.finish()
    assert cli_main(["check", str(tmp_path / "oom")]) == 1  # a failed check is not a clean run
