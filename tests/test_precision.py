"""A model whose weights are bf16 or fp16 (not autocast) is attributed in that precision: the
check records it (``summary.json`` ``config.precision``), sums path and gradient products in
float32, and its completeness figures are those of the model as it computes."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import bert_tokenizer, sentiment_data, tiny_model, train_briefly

from explain_callbacks import AttributionEngine
from explain_callbacks.monitor import AttributionMonitor

TEXTS, LABELS = sentiment_data(64, seed=3)
PROBES = [{"id": f"p{i}", "text": t, "label": l} for i, (t, l) in enumerate(zip(TEXTS[:6], LABELS[:6]))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tokenizer = bert_tokenizer(tmp_path_factory.mktemp("vocab"))
    model = train_briefly(tiny_model("bert", tokenizer), tokenizer, TEXTS, LABELS, steps=40, lr=3e-3)
    return model, tokenizer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_is_attributed_and_recorded_in_its_precision(trained, tmp_path, dtype):
    model, tok = trained
    half = copy.deepcopy(model).to(dtype)
    monitor = AttributionMonitor(AttributionEngine(half, tok, n_steps=8), PROBES, run_dir=tmp_path, run_name="h",
                                 verbose=False)
    result = monitor.check(step=1)
    assert monitor.summary()["config"]["precision"] == str(dtype).replace("torch.", "")
    full = {a.probe_id: a for a in AttributionEngine(model, tok, n_steps=8).attribute(PROBES)}
    for a in result.snapshot.attributions:
        # completeness as the half-precision model computes it: its own F at both ends
        assert a.delta == pytest.approx(sum(a.token_scores) - (a.f_input - a.f_baseline), abs=1e-6)
        ref = full[a.probe_id]
        gap = abs(ref.f_input - ref.f_baseline)
        assert abs((a.f_input - a.f_baseline) - (ref.f_input - ref.f_baseline)) <= 0.05 * gap + 0.02
    assert all(p.dtype == dtype for p in half.parameters())  # nothing cast behind the model's back


def test_a_float32_model_records_float32(trained, tmp_path):
    model, tok = trained
    monitor = AttributionMonitor(AttributionEngine(model, tok, n_steps=4), PROBES, run_dir=tmp_path, run_name="f",
                                 verbose=False)
    assert monitor.summary()["config"]["precision"] == "float32"  # known from set-up's calibration
