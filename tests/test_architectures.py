"""Every supported sequence classifier, checked against the model's own forward.

For each architecture a tiny model (hidden 32, 2 layers) is built from its config, trained a few
steps so the scores are not trivial, and paired with a tokenizer built here that returns what the
real checkpoint's tokenizer returns. The references never go through the engine's adapter:

* F(x) and the scores are ``model(**tokenizer(text, pair, return_tensors="pt"))``;
* token scores are plain Captum ``LayerIntegratedGradients`` on that same forward
  (``lambda ids, ...: model(input_ids=ids, **the tokenizer's other outputs).logits``), on the
  model's embedding module (an encoder-decoder's encoder embedding), with the same baseline, the
  ``riemann_trapezoid`` rule at ``n + 1`` points times ``(n + 1) / n`` and refinement off
  (``max_steps == n_steps``); each probe alone, while the engine attributes them batched, so
  this also proves batched equals alone;
* F(baseline) is the one Captum's convergence delta implies, and with refinement on every
  integral converges (completeness).

``ARCHITECTURES`` (``examples/tiny_models.py``) is the list the README names as tested.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from tiny_models import ARCHITECTURES, ArchitectureUnavailable, base_architecture, build_architecture

from explain_callbacks import AttributionEngine, ProbeSet

N = 12
SHORT = "bad film"
LONG = "the movie was great and the acting was fun but the plot was very dull and the story was boring"
PROBES = [
    {"text": "the zorblax movie was great !"},
    {"text": SHORT},
    {"text": LONG},  # long enough for BigBird's block-sparse attention (> 14 tokens)
    {"text": "this plot was very , very dull but the acting was fun"},
    {"text": "great movie", "text_pair": "the acting was bad"},  # token types of a pair
]


def _build(case: str, directory):
    try:
        return build_architecture(case, directory)
    except ArchitectureUnavailable as why:
        pytest.skip(str(why))


def _probes(case: str) -> list[dict]:
    # BART and T5 pool the <eos> tokens and need as many in every row of a batch; the pair holds
    # two, and this single text (8 tokens) is close enough to the pair's 9 to share its length bucket.
    extra = [{"text": "great movie , bad acting !"}] if base_architecture(case) in ("bart", "t5") else []
    return PROBES + extra


def _embedding_module(model):
    """The module whose output is the word embeddings, found as a user would: an
    encoder-decoder's encoder ``embed_tokens``, otherwise ``get_input_embeddings()``."""
    inner = getattr(model, "_orig_mod", model)
    if getattr(inner.config, "is_encoder_decoder", False):
        return inner.base_model.get_encoder().embed_tokens
    return inner.get_input_embeddings()


def _own_inputs(tok, probe):
    return tok(probe["text"], probe.get("text_pair"), return_tensors="pt")


def _captum(model, tok, probe, baseline_id, target):
    """Plain Captum LIG on the model's forward, one probe alone, refinement off."""
    inner = getattr(model, "_orig_mod", model)  # hooks inside a compiled graph would recompile
    # (XLNet embeds sequence-first, so Captum, which stacks steps on dimension 0, goes one step a time)
    enc = _own_inputs(tok, probe)
    specials = tok(probe["text"], probe.get("text_pair"), return_special_tokens_mask=True)["special_tokens_mask"]
    ids = enc["input_ids"]
    baseline = torch.where(torch.tensor([specials]).bool(), ids, torch.full_like(ids, baseline_id))
    names = [k for k in enc if k != "input_ids"]
    layer = _embedding_module(model)
    decoder = None
    if getattr(inner.config, "is_encoder_decoder", False):
        decoder = getattr(inner.base_model.get_decoder(), "embed_tokens", None)

    def forward(input_ids, *rest):
        kwargs = dict(zip(names, rest))
        if decoder is layer:  # T5 on 4.57 shares the table: feed the decoder its own embeddings
            kwargs["decoder_inputs_embeds"] = torch.nn.functional.embedding(inner._shift_right(input_ids), layer.weight)
        return inner(input_ids=input_ids, **kwargs).logits

    rest = tuple(enc[k] for k in names)
    lig = LayerIntegratedGradients(forward, layer)
    attr = lig.attribute(ids, baseline, target=target, additional_forward_args=rest, n_steps=N + 1,
                         method="riemann_trapezoid", internal_batch_size=1 if inner.config.model_type == "xlnet" else None)
    # F(baseline) is the path's start: x's forward with the layer's output that of the baseline ids.
    # (Captum's own convergence delta runs forward(baseline ids), which moves RoBERTa's positions
    # and a decoder's last token, so it is not the path's end.)
    with torch.no_grad():
        start = layer(baseline)

        def at_start(_module, _inputs, out):
            if out.shape[0] != start.shape[0]:  # XLNet embeds sequence-first
                return start.transpose(0, 1)
            if out.shape[1] > start.shape[1]:  # Longformer padded the ids to its window
                return torch.cat([start, out[:, start.shape[1]:]], 1)
            return start

        handle = layer.register_forward_hook(at_start)
        try:
            f_base = float(forward(ids, *rest)[0, target])
        finally:
            handle.remove()
    scores = attr.sum(-1).detach()
    scores = scores[0] if scores.shape[0] == 1 else scores[:, 0]  # XLNet: (length, batch)
    return scores * (N + 1) / N, f_base


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("arch_vocab")


@pytest.mark.parametrize("case", list(ARCHITECTURES))
def test_matches_the_models_own_forward(case, vocab_dir):
    tok, model = _build(case, vocab_dir)
    probes = _probes(case)
    engine = AttributionEngine(model, tok, n_steps=N, max_steps=N, target=1)
    records = engine.attribute(ProbeSet(probes))  # batched: length buckets share forward passes
    for probe, rec in zip(probes, records):
        with torch.no_grad():
            own = model(**_own_inputs(tok, probe)).logits[0].float()
        assert rec.scores == pytest.approx(own.tolist(), abs=1e-4, rel=1e-4), f"{case}: F(x) is not the model's"
        assert rec.f_input == pytest.approx(float(own[1]), abs=1e-4, rel=1e-4)
        ref, f_base = _captum(model, tok, probe, getattr(rec, "baseline_id", tok.pad_token_id), 1)
        n = len(rec.tokens)
        assert torch.all(ref[n:] == 0)  # positions the model padded itself (Longformer) get nothing
        ref = ref[:n]
        scale = 1e-4 * (1 + float(ref.abs().max()))
        assert len(rec.token_scores) == n == len(_own_inputs(tok, probe)["input_ids"][0])
        assert torch.allclose(torch.tensor(rec.token_scores), ref, atol=scale, rtol=1e-3), (
            f"{case}: token scores differ from Captum on the model's forward for {probe['text']!r}"
        )
        assert rec.f_baseline == pytest.approx(f_base, abs=1e-4, rel=1e-4)
    refined = AttributionEngine(model, tok, target=1).attribute(ProbeSet(probes))
    for rec in refined:
        assert rec.converged, f"{case}: {rec.probe_id} rel_delta {rec.rel_delta:.3g} after {rec.n_steps} points"
        assert abs(sum(rec.token_scores) - (rec.f_input - rec.f_baseline)) <= max(0.05 * abs(rec.f_input - rec.f_baseline), 1e-4)
