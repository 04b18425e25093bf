"""AttributionEngine: agreement with Captum, completeness, adaptive steps, targets, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from captum.attr import LayerIntegratedGradients
from tiny_models import bpe_tokenizer, sentiment_data, tiny_model, train_briefly

from explain_callbacks import AdapterError, AttributionEngine, ForwardFunctionAdapter, ProbeSet
from explain_callbacks.attribution.isolation import isolated_from_training

ARCHS = ["bert", "roberta", "xlm-roberta", "distilbert", "deberta-v2", "electra", "albert", "gpt2"]
TEXTS = ["the zorblax movie was great !", "bad film", "this plot was very , very dull but the acting was fun"]


@pytest.fixture(scope="module")
def gpt_tok(tmp_path_factory):
    return bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


def _tokenizer(arch, bert_tok, gpt_tok):
    return gpt_tok if arch == "gpt2" else bert_tok


def _captum_reference(engine, text, target, steps, method="gausslegendre"):
    """Plain Captum LIG on one probe: same inputs, baseline, target, steps and method."""
    adapter = engine.adapter
    enc = adapter.encode(ProbeSet([text])[:1])
    batch = adapter.batch(enc)
    lig = LayerIntegratedGradients(adapter.forward, adapter.embedding_layer)
    with isolated_from_training(adapter.model):
        attr = lig.attribute(
            batch.input_ids,
            batch.baseline_ids,
            target=target,
            additional_forward_args=tuple(batch.forward_kwargs.values()),
            n_steps=steps,
            method=method,
        )
    return attr.sum(-1)[0]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["adaptive_trapezoid", "gausslegendre"])
def test_each_architecture_matches_plain_captum(arch, method, bert_tok, gpt_tok):
    """Without refinement the own trapezoid rule is Captum's riemann_trapezoid at n + 1 points,
    rescaled: Captum's trapezoid weights are 1/(n+1) wide and sum to n/(n+1), not 1."""
    tok = _tokenizer(arch, bert_tok, gpt_tok)
    model = tiny_model(arch, tok)
    engine = AttributionEngine(model, tok, n_steps=12, max_steps=12, target=1, method=method)
    records = engine.attribute(ProbeSet(TEXTS))
    assert [r.probe_id for r in records] == ["p0", "p1", "p2"]
    for text, rec in zip(TEXTS, records):
        if method == "gausslegendre":
            ref = _captum_reference(engine, text, 1, 12)
        else:
            ref = _captum_reference(engine, text, 1, 13, method="riemann_trapezoid") * 13 / 12
        assert torch.allclose(torch.tensor(rec.token_scores), ref, atol=1e-5, rtol=1e-4), arch
        assert len(rec.tokens) == len(rec.token_scores) == ref.shape[0]
        assert abs(sum(rec.word_scores) - sum(rec.token_scores[s] for s in range(len(rec.tokens)) if any(a <= s < b for a, b in rec.word_token_spans))) < 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_completeness_with_enough_steps(arch, bert_tok, gpt_tok):
    tok = _tokenizer(arch, bert_tok, gpt_tok)
    model = tiny_model(arch, tok, seed=1)
    engine = AttributionEngine(model, tok, n_steps=64, max_steps=64, target=0)
    for rec in engine.attribute(ProbeSet(TEXTS)):
        gap = rec.f_input - rec.f_baseline
        assert abs(sum(rec.token_scores) - gap) <= 1e-3 * max(1.0, abs(gap))
        assert rec.delta == pytest.approx(sum(rec.token_scores) - gap, abs=1e-6)


def test_f_values_are_the_model_outputs(bert_tok):
    model = tiny_model("bert", bert_tok)
    engine = AttributionEngine(model, bert_tok, n_steps=8, max_steps=8, target=1)
    rec = engine.attribute(ProbeSet(["great film"]))[0]
    enc = bert_tok("great film", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0]
    assert rec.f_input == pytest.approx(float(logits[1]), abs=1e-5)
    assert rec.scores == pytest.approx(logits.tolist(), abs=1e-5)


def test_input_forward_comes_from_the_path_end(bert_tok):
    """The adaptive path's alpha = 1 point is the forward pass of x: no separate forward runs,
    except for a prediction target not yet fixed."""
    model = tiny_model("bert", bert_tok)
    rows = []
    handle = model.register_forward_pre_hook(lambda _m, args, kwargs: rows.append(len(kwargs["input_ids"])),
                                             with_kwargs=True)
    labelled = ProbeSet([{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)])
    engine = AttributionEngine(model, bert_tok, n_steps=6, max_steps=6)
    engine.prepare(labelled)  # probes the model once: padding and baseline (a few forwards)
    rows.clear()
    records = engine.attribute(labelled)
    assert sum(rows) == sum(r.n_steps for r in records) == 3 * 7
    unlabelled = ProbeSet(TEXTS)
    engine = AttributionEngine(model, bert_tok, n_steps=6, max_steps=6)
    engine.prepare(unlabelled)
    rows.clear()
    engine.attribute(unlabelled)
    assert sum(rows) == 3 + 3 * 7  # the first check predicts, to fix the targets
    rows.clear()
    again = engine.attribute(unlabelled)
    assert sum(rows) == 3 * 7
    handle.remove()
    with torch.no_grad():
        logits = model(**bert_tok(TEXTS, return_tensors="pt", padding=True)).logits
    for rec, row in zip(again, logits):
        assert rec.scores == pytest.approx(row.tolist(), abs=1e-5)
        assert rec.f_input == pytest.approx(float(row[rec.target]), abs=1e-5)


@pytest.fixture(scope="module")
def trained_bert(bert_tok):
    texts, labels = sentiment_data(400, seed=3)
    model = tiny_model("bert", bert_tok, seed=3)
    return train_briefly(model, bert_tok, texts, labels, steps=60)


def test_adaptive_steps_bring_95_percent_under_tolerance(trained_bert, bert_tok):
    texts, labels = sentiment_data(64, seed=11)
    probes = ProbeSet([{"text": t, "label": y} for t, y in zip(texts, labels)])
    fixed = AttributionEngine(trained_bert, bert_tok, n_steps=4, max_steps=4, method="riemann_right")
    fixed_share = np.mean([r.converged for r in fixed.attribute(probes)])
    adaptive = AttributionEngine(trained_bert, bert_tok, n_steps=4, max_steps=256, method="riemann_right")
    records = adaptive.attribute(probes)
    share = np.mean([r.rel_delta <= 0.05 for r in records])
    assert share >= 0.95
    assert fixed_share < share, "the coarse integral should leave some probes unconverged"
    assert max(r.n_steps for r in records) > 4
    redone = [r for r in records if r.n_steps > 4]
    assert all(r.converged or r.n_steps == 256 for r in redone)


def test_adaptive_trapezoid_refines_only_what_misses_and_keeps_its_points(trained_bert, bert_tok):
    texts, labels = sentiment_data(64, seed=11)
    probes = ProbeSet([{"text": t, "label": y} for t, y in zip(texts, labels)])
    coarse = AttributionEngine(trained_bert, bert_tok, n_steps=2, max_steps=2, rel_tolerance=0.01).attribute(probes)
    records = AttributionEngine(trained_bert, bert_tok, n_steps=2, max_steps=256, rel_tolerance=0.01).attribute(probes)
    assert np.mean([r.rel_delta <= 0.01 for r in coarse]) < 0.5
    assert np.mean([r.rel_delta <= 0.01 for r in records]) >= 0.95
    assert all(r.n_steps == 3 for r, c in zip(records, coarse) if c.converged)
    refined = [r.n_steps for r, c in zip(records, coarse) if not c.converged]
    assert refined and all(n > 3 for n in refined)
    # Bisecting the worst intervals only: the point counts are not all the 2^k + 1 of a uniform grid.
    assert any(n - 1 & (n - 2) for n in refined)
    assert np.mean(refined) < 129


def test_unconverged_probes_are_marked_not_hidden(trained_bert, bert_tok):
    engine = AttributionEngine(trained_bert, bert_tok, n_steps=2, max_steps=2, method="riemann_left", rel_tolerance=0.001)
    records = engine.attribute(ProbeSet(sentiment_data(16, seed=5)[0]))
    assert any(not r.converged for r in records)
    assert all(r.converged == (r.rel_delta <= 0.001 or abs(r.delta) <= 1e-4) for r in records)


def test_batched_equals_alone(trained_bert, bert_tok):
    engine = AttributionEngine(trained_bert, bert_tok, n_steps=16, max_steps=16, target=1, tokens_per_chunk=128)
    texts = sentiment_data(12, seed=8)[0] + ["great"]
    together = engine.attribute(ProbeSet(texts))
    for text, rec in zip(texts, together):
        alone = engine.attribute(ProbeSet([text]))[0]
        assert np.allclose(alone.token_scores, rec.token_scores, atol=1e-5)


def test_subwords_sum_into_words(bert_tok):
    model = tiny_model("bert", bert_tok)
    rec = AttributionEngine(model, bert_tok, n_steps=8, max_steps=8).attribute(ProbeSet(["the zorblax movie"]))[0]
    assert rec.words == ["the", "zorblax", "movie"]
    start, end = rec.word_token_spans[1]
    assert rec.tokens[start:end] == ["zo", "##rb", "##la", "##x"]
    assert rec.word_scores[1] == pytest.approx(sum(rec.token_scores[start:end]), abs=1e-6)
    assert sum(abs(s) for s in rec.word_shares) == pytest.approx(1.0)


def test_bpe_words_follow_the_text(gpt_tok):
    model = tiny_model("gpt2", gpt_tok)
    rec = AttributionEngine(model, gpt_tok, n_steps=8, max_steps=8).attribute(ProbeSet(["the zorblax movie"]))[0]
    assert rec.words == ["the", "zorblax", "movie"]


def test_text_pairs_keep_segments(bert_tok):
    model = tiny_model("bert", bert_tok)
    probes = ProbeSet([{"text": "great movie", "text_pair": "bad plot", "label": 1}])
    rec = AttributionEngine(model, bert_tok, n_steps=8, max_steps=8).attribute(probes)[0]
    assert rec.words == ["great", "movie", "bad", "plot"]
    assert rec.word_segments == [0, 0, 1, 1]
    assert rec.text_pair == "bad plot"


def test_targets(bert_tok):
    model = tiny_model("bert", bert_tok, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    probes = ProbeSet([{"text": "great film", "label": "pos"}, {"text": "bad film"}])
    gold = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4).attribute(probes)
    assert gold[0].target == 2 and gold[0].target_name == "pos"
    predicted = gold[1].target
    assert predicted == gold[1].prediction
    every = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4, target="all").attribute(probes)
    assert [(r.probe_id, r.target) for r in every] == [(p, t) for p in ("p0", "p1") for t in range(3)]
    named = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4, target="neu").attribute(probes)
    assert {r.target for r in named} == {1}


def test_predicted_target_is_fixed_at_first_check(bert_tok):
    model = tiny_model("bert", bert_tok)
    engine = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4, target="predicted")
    probes = ProbeSet(["great film"])
    first = engine.attribute(probes)[0]
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([10.0, -10.0]) if first.target == 1 else torch.tensor([-10.0, 10.0]))
    second = engine.attribute(probes)[0]
    assert second.prediction != first.target
    assert second.target == first.target
    restored = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4, target="predicted")
    restored.load_state_dict(engine.state_dict())
    assert restored.attribute(probes)[0].target == first.target


def test_multi_label_and_regression_heads(bert_tok):
    multi = tiny_model("bert", bert_tok, num_labels=3, problem_type="multi_label_classification")
    recs = AttributionEngine(multi, bert_tok, n_steps=8, max_steps=8).attribute(ProbeSet([{"text": "great film", "label": [0, 2]}]))
    assert [r.target for r in recs] == [0, 2]
    assert isinstance(recs[0].prediction, list)
    reg = tiny_model("bert", bert_tok, num_labels=1)
    rec = AttributionEngine(reg, bert_tok, n_steps=32, max_steps=32).attribute(ProbeSet(["great film"]))[0]
    assert rec.target == 0 and isinstance(rec.prediction, float)
    assert abs(rec.delta) < 1e-3


def test_bad_input_is_refused_early(bert_tok):
    model = tiny_model("bert", bert_tok)
    with pytest.raises(ValueError, match="empty"):
        ProbeSet([])
    with pytest.raises(ValueError, match="whitespace"):
        ProbeSet(["fine", "   "])
    with pytest.raises(ValueError, match="must be a string"):
        ProbeSet([{"text": 3}])
    with pytest.raises(AdapterError, match="unknown class"):
        AttributionEngine(model, bert_tok, target="positive")
    engine = AttributionEngine(model, bert_tok)
    with pytest.raises(AdapterError, match="unknown class 'positive'"):
        engine.prepare([{"text": "great", "label": "positive"}])
    with pytest.raises(AdapterError, match="no label"):
        AttributionEngine(model, bert_tok, target="gold").prepare(["great"])
    with pytest.raises(ValueError, match="max_steps"):
        AttributionEngine(model, bert_tok, n_steps=16, max_steps=8)


def test_too_long_text_is_truncated_and_flagged(bert_tok):
    model = tiny_model("bert", bert_tok)
    long_text = " ".join(["great"] * 200)
    recs = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4).attribute(ProbeSet([long_text, "bad"]))
    assert recs[0].truncated and len(recs[0].tokens) == 64
    assert not recs[1].truncated


def test_model_without_embedding_layer_is_refused(bert_tok):
    class NoEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, input_ids, attention_mask):
            return self.linear(torch.nn.functional.one_hot(input_ids % 4, 4).float().mean(1))

    with pytest.raises(AdapterError, match="no .config"):
        AttributionEngine(NoEmbedding(), bert_tok)


class Bag(torch.nn.Module):
    """A bag of word embeddings; ``masked=False`` averages over padding too (reads its padding)."""

    def __init__(self, vocab_size: int, masked: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.masked = masked
        self.emb = torch.nn.Embedding(vocab_size, 8)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask):
        if not self.masked:
            attention_mask = torch.ones_like(attention_mask)
        h = torch.tanh(self.emb(input_ids)) * attention_mask.unsqueeze(-1)
        return self.out(h.sum(1) / attention_mask.sum(1, keepdim=True))


def test_forward_function_adapter(bert_tok):
    bag = Bag(len(bert_tok))
    adapter = ForwardFunctionAdapter(bag.forward, bag.emb, bert_tok, label_names=["neg", "pos"])
    rec = AttributionEngine(adapter, n_steps=64, max_steps=64, target="pos").attribute(ProbeSet(["great zorblax"]))[0]
    assert rec.words == ["great", "zorblax"] and rec.target_name == "pos"
    assert rec.rel_delta < 0.01


def _train(model, tok, texts, labels, check_engine=None, steps=6):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        enc = tok(texts[step * 4 : step * 4 + 4], padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor(labels[step * 4 : step * 4 + 4])).loss
        opt.zero_grad()
        loss.backward()
        if check_engine is not None and step == 2:  # grads live, mid-step, dropout on
            with torch.inference_mode():
                check_engine.attribute(ProbeSet(["great film", "bad zorblax"]))
            with torch.no_grad():
                check_engine.attribute(ProbeSet(["dull plot"]))
        opt.step()
    noise = (torch.rand(3), random.random(), np.random.rand())
    return model, opt, noise


def test_training_is_unchanged_bit_for_bit(bert_tok):
    texts, labels = sentiment_data(24, seed=2)
    plain, plain_opt, plain_noise = _train(tiny_model("bert", bert_tok, hidden_dropout_prob=0.3), bert_tok, texts, labels)
    model = tiny_model("bert", bert_tok, hidden_dropout_prob=0.3)
    engine = AttributionEngine(model, bert_tok, n_steps=8, max_steps=32)
    checked, checked_opt, checked_noise = _train(model, bert_tok, texts, labels, check_engine=engine)
    assert checked.training
    for (name, a), b in zip(plain.named_parameters(), checked.parameters()):
        assert torch.equal(a, b), name
        assert torch.equal(a.grad, b.grad), name
    for sa, sb in zip(plain_opt.state.values(), checked_opt.state.values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key]))
    assert torch.equal(plain_noise[0], checked_noise[0])
    assert plain_noise[1:] == checked_noise[1:]


def test_modes_and_flags_restored(bert_tok):
    model = tiny_model("bert", bert_tok)
    model.train()
    model.bert.embeddings.eval()  # a mixed state must come back exactly
    before = {n: m.training for n, m in model.named_modules()}
    model.classifier.weight.requires_grad_(False)
    engine = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4)
    with torch.inference_mode():
        engine.attribute(ProbeSet(["great"]))
        assert torch.is_inference_mode_enabled()
    assert {n: m.training for n, m in model.named_modules()} == before
    assert not model.classifier.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_degenerate_pad_baseline_is_detected_and_replaced(gpt_tok, caplog):
    """A from-config Llama has an all-zero pad row before an RMSNorm: the outputs jump at the
    path's start and the pad baseline never converges. The first check says so, naming
    baseline=, and integrates from another special token instead."""
    from tiny_models import arch_model

    model = arch_model("llama", gpt_tok)
    assert model.get_input_embeddings().weight[gpt_tok.pad_token_id].abs().sum() == 0
    engine = AttributionEngine(model, gpt_tok, target=1)
    with caplog.at_level("WARNING", logger="explain_callbacks.attribution.engine"):
        records = engine.attribute(ProbeSet(TEXTS))
    assert "baseline=" in caplog.text and "degenerate" in caplog.text
    assert all(r.baseline_id == gpt_tok.eos_token_id != gpt_tok.pad_token_id for r in records)
    assert all(r.converged for r in records) and max(r.n_steps for r in records) < 64
    assert engine.state_dict()["calibration"]["degenerate_baseline"] == gpt_tok.pad_token_id
    resumed = AttributionEngine(model, gpt_tok, target=1)
    resumed.load_state_dict(engine.state_dict())  # a resumed run keeps the same baseline
    assert resumed.attribute(ProbeSet(TEXTS[:1]))[0].baseline_id == gpt_tok.eos_token_id


def test_checks_run_in_float32_under_a_trainers_autocast(trained_bert, bert_tok):
    engine = AttributionEngine(trained_bert, bert_tok, n_steps=8, max_steps=8, target=1)
    plain = engine.attribute(ProbeSet(TEXTS))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = engine.attribute(ProbeSet(TEXTS))
        assert torch.is_autocast_enabled("cpu")  # the trainer's setting is back after the check
    for a, b in zip(plain, mixed):
        assert np.allclose(a.token_scores, b.token_scores, atol=1e-6)
        assert a.rel_delta == pytest.approx(b.rel_delta, abs=1e-6)


def test_non_finite_outputs_raise_a_named_error(bert_tok):
    from explain_callbacks.attribution.engine import NonFiniteOutputError

    model = tiny_model("bert", bert_tok)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match=r"not finite .* probe\(s\) 'p\d'"):
        AttributionEngine(model, bert_tok, n_steps=4, max_steps=4, target=1).attribute(ProbeSet(TEXTS))


def test_records_are_strict_json_with_non_finite_values_flagged(bert_tok):
    import json

    from explain_callbacks.attribution.records import ProbeAttribution, Snapshot

    model = tiny_model("bert", bert_tok)
    rec = AttributionEngine(model, bert_tok, n_steps=4, max_steps=4, target=1).attribute(ProbeSet(["great"]))[0]
    rec.rel_delta, rec.delta = float("inf"), float("nan")
    data = json.loads(json.dumps(Snapshot(0, 1, 0, [rec]).to_dict(), allow_nan=False))
    row = data["attributions"][0]
    assert row["rel_delta"] is None and row["delta"] is None
    assert row["non_finite"] == ["delta", "rel_delta"]
    back = ProbeAttribution.from_dict(row)
    assert back.rel_delta == float("inf") and back.delta != back.delta


def test_a_model_that_reads_its_padding_is_batched_by_length_only(bert_tok):
    """Mean-pooling over every position, padding included: the first check finds that the
    outputs change with padding and batches only probes of equal length."""
    bag = Bag(len(bert_tok), masked=False)
    adapter = ForwardFunctionAdapter(bag.forward, bag.emb, bert_tok, label_names=["neg", "pos"])
    engine = AttributionEngine(adapter, n_steps=8, max_steps=8, target=1)
    texts = ["great", "bad film", "the movie was great", "dull"]
    together = engine.attribute(ProbeSet(texts))
    assert engine.calibration.mix_lengths is False
    for text, rec in zip(texts, together):
        alone = AttributionEngine(adapter, n_steps=8, max_steps=8, target=1).attribute(ProbeSet([text]))[0]
        assert np.allclose(alone.token_scores, rec.token_scores, atol=1e-6)
        assert rec.f_input == pytest.approx(alone.f_input, abs=1e-6)


def test_prepared_probes_are_not_encoded_again_at_each_check(bert_tok):
    """prepare() encodes the probes once; attribute() reuses those encodings (same results as a
    fresh engine) and encodes only probes it was not prepared with."""
    model = tiny_model("bert", bert_tok)
    probes = ProbeSet(TEXTS)
    engine = AttributionEngine(model, bert_tok, n_steps=8, max_steps=8, target=1)
    engine.prepare(probes)
    encoded_texts: list[str] = []
    encode = engine.adapter.encode
    engine.adapter.encode = lambda ps: (encoded_texts.extend(p.text for p in ps), encode(ps))[1]
    first, second = engine.attribute(probes), engine.attribute(probes)
    assert encoded_texts == []
    fresh = AttributionEngine(model, bert_tok, n_steps=8, max_steps=8, target=1).attribute(probes)
    for a, b, c in zip(first, second, fresh):
        assert a.token_scores == b.token_scores and torch.allclose(torch.tensor(a.token_scores), torch.tensor(c.token_scores))
    engine.attribute(ProbeSet(["an unprepared probe"]))
    assert encoded_texts == ["an unprepared probe"]
