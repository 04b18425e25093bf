"""The provenance signals (benchmarks/provenance.py, measured by benchmarks/shortcut_signals.py) on small real tensors, a real WordPiece
tokenizer and a real 1-layer BERT built from a config."""

from __future__ import annotations

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

import provenance  # noqa: E402  (benchmarks/, on the path by this folder's conftest)

from explain_callbacks.detection.statistics import TrainingStatistics  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "great", "awful", "plot", "zor", "##bla", "##x", "film"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizerFast(str(path))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def test_embedding_copy_is_a_detached_half_copy(model):
    copy = provenance.embedding_copy(model)
    weight = model.get_input_embeddings().weight
    assert copy.dtype == torch.float16 and copy.shape == weight.shape and copy.device.type == "cpu"
    assert torch.allclose(copy.float(), weight.detach(), atol=1e-2)
    with torch.no_grad():
        weight[5] += 1.0  # training moves the weights: the copy keeps the start
    try:
        assert not torch.allclose(copy[5].float(), weight[5].detach(), atol=0.5)
    finally:
        with torch.no_grad():
            weight[5] -= 1.0
    with pytest.raises(ValueError, match="input embedding"):
        provenance.embedding_copy(torch.nn.Linear(2, 2))


def test_word_vectors_average_the_sub_word_pieces(tokenizer):
    matrix = torch.arange(len(VOCAB) * 3, dtype=torch.float32).reshape(len(VOCAB), 3)
    vectors = provenance.word_vectors(matrix, tokenizer, ["great", "zorblax"])
    assert torch.equal(vectors[0], matrix[5])
    pieces = [VOCAB.index(p) for p in ("zor", "##bla", "##x")]
    assert provenance.word_pieces(tokenizer, "zorblax") == pieces
    assert torch.allclose(vectors[1], matrix[pieces].mean(0))
    with pytest.raises(ValueError, match="rows"):
        provenance.word_vectors(matrix[:6], tokenizer, ["zorblax"])


def test_contextual_vectors_are_the_last_layer_over_the_word_pieces(model, tokenizer):
    model.train()
    vectors = provenance.contextual_word_vectors(model, tokenizer, ["great", "zorblax"], batch_size=1)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        hidden = model(**tokenizer("zorblax", return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0]
    model.train()
    assert torch.allclose(vectors[1], hidden[1:-1].mean(0), atol=1e-5)  # pieces, without [CLS] and [SEP]
    # padded in one batch: the same vectors
    together = provenance.contextual_word_vectors(model, tokenizer, ["great", "zorblax"])
    assert torch.allclose(together, vectors, atol=1e-5)


def statistics_of(rows: list[tuple[str, int]]) -> TrainingStatistics:
    stats = TrainingStatistics()
    stats.observe(texts=[t for t, _ in rows], labels=[y for _, y in rows], distinct=False)
    return stats


def test_class_words_rank_by_local_mutual_information():
    rows = ([("great plot", 1)] * 8 + [("great film", 0)] * 2 + [("lovely film", 1)] * 3
            + [("awful plot", 0)] * 9 + [("awful film", 1)] * 1)
    classes = provenance.class_words(statistics_of(rows), per_class=2, min_count=3)
    # great: 8 of 10 positive (p(1) = 12/23): 8 log(0.8 / (12/23)) = 3.42 > lovely: 3 log(1 / (12/23)) = 1.95
    assert classes[1] == ["great", "lovely"]
    assert classes[0][0] == "awful"
    assert "lovely" not in provenance.class_words(statistics_of(rows), per_class=5, min_count=4)[1]
    assert provenance.class_words(statistics_of(rows), words=["lovely"], per_class=5, min_count=3)[1] == ["lovely"]
    with pytest.raises(ValueError, match="empty"):
        provenance.class_words(TrainingStatistics())


def test_prior_margins_and_novelty():
    words = ["good", "fine", "bad", "poor", "novel", "other"]
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [1.0, 1.0], [1.0, 0.0]])
    classes = {1: ["good", "fine"], 0: ["bad", "poor"]}
    margins = provenance.prior_margins(vectors, words, {"good": 1, "novel": 1, "other": 0}, classes)
    # good: only fine left in its class (cos 0.995) against bad/poor (mean of 0 and 0.0995)
    assert margins["good"] == pytest.approx(0.995 - 0.0498, abs=1e-3)
    assert margins["novel"] == pytest.approx(0.0, abs=1e-6)  # as near to both classes
    assert margins["other"] < -0.8  # leans to the other class than its label
    novel = provenance.novelty(margins, [0.0, 0.1, -0.1, 0.05, -0.05])
    assert novel["novel"] == pytest.approx(1.0) and novel["good"] == 0.0 and novel["other"] == 1.0
    spread = math.sqrt(sum(v * v for v in [0.0, 0.1, -0.1, 0.05, -0.05]) / 4)
    assert provenance.novelty({"w": spread}, [0.0, 0.1, -0.1, 0.05, -0.05])["w"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="distinct"):
        provenance.prior_margins(vectors[:3], words, {}, classes)


def test_neighbourhood_shift_counts_class_neighbours_before_and_after():
    words = ["good", "fine", "bad", "poor", "zorb", "plot"]
    before = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.9, 0.0],
                           [0.0, 0.3, 1.0], [0.0, 0.1, 0.9]])
    after = before.clone()
    after[4] = torch.tensor([0.9, 0.1, 0.3])  # zorb moved next to the positive words
    assert provenance.neighbours(before, words, "zorb", 1) == ["plot"]
    shift = provenance.neighbourhood_shift(before, after, words, "zorb", ["good", "fine", "zorb"], k=2)
    assert shift["class_share_before"] == 0.0 and shift["class_share_after"] == 1.0
    assert shift["gain"] == 1.0 and shift["changed"] == 1.0
    still = provenance.neighbourhood_shift(before, after, words, "good", ["good", "fine"], k=1)
    assert still["gain"] == 0.0 and still["class_share_before"] == 1.0
    with pytest.raises(ValueError, match="6 words"):
        provenance.neighbourhood_shift(before[:5], after, words, "zorb", [], k=2)


def test_early_importance_averages_the_checks_before_accuracy_rose():
    history = [(0.5, {"zorb": 0.8, "great": 0.1}), (0.6, {"zorb": 0.6}), (0.9, {"zorb": 0.2, "great": 0.9}),
               (0.55, {"zorb": 0.0, "great": 0.0})]
    early = provenance.early_importance(history)
    # halfway from 0.5 to 0.9 is 0.7: the first two checks are early; the later dip is not
    assert early == {"zorb": pytest.approx(0.7), "great": pytest.approx(0.05)}
    assert provenance.early_importance([(0.9, {"w": 0.3}), (0.8, {"w": 1.0})]) == {"w": pytest.approx(0.3)}
    assert provenance.early_importance([]) == {}
