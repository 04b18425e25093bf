"""Training statistics gathered without the user passing them, evidence from wrong predictions,
phrases, and watch-token alerts on short probes."""

from __future__ import annotations

import json
import random

import pytest
import torch
from helpers.attribution_records import attribution, snapshot
from tiny_models import bert_tokenizer, sentiment_data

from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.shortcuts import ShortcutDiscovery
from explain_callbacks.detection.statistics import TrainingStatistics, batch_examples, dataset_examples


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import BertTokenizerFast

    tokenizer = bert_tokenizer(tmp_path_factory.mktemp("vocab"))
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"  # and the apostrophe and "s" of "it's"
    words = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get) + ["'", "s"]
    vocab.write_text("\n".join(words) + "\n")
    return BertTokenizerFast(str(vocab), model_max_length=64)


def test_statistics_from_input_ids_match_those_from_texts(tok):
    texts, labels = sentiment_data(60, seed=3, shortcut="zorblax", shortcut_rate=0.5)
    texts = [t + (" it's dull." if i % 3 == 0 else "") for i, t in enumerate(texts)]
    from_texts, from_ids = TrainingStatistics(phrases=None), TrainingStatistics(phrases=None)
    from_texts.observe(texts=texts, labels=labels)
    from_ids.bind_tokenizer(tok)
    for start in range(0, 60, 16):  # padded batches, as a collate function makes them
        enc = tok(texts[start : start + 16], padding=True, return_tensors="pt")
        from_ids.observe(input_ids=enc["input_ids"], labels=torch.tensor(labels[start : start + 16]), epoch=0)
    # "zorblax" is four WordPiece pieces (zo ##rb ##la ##x) and "it's" three: both one word
    assert from_ids.counts("zorblax") == from_texts.counts("zorblax") and from_texts.counts("zorblax")
    assert from_ids.counts("it's") == from_texts.counts("it's") and from_texts.counts("it's")
    assert dict(from_ids.word_labels) == dict(from_texts.word_labels)


def test_an_example_seen_again_is_not_counted_twice_and_later_epochs_are_not_read(tok):
    texts, labels = sentiment_data(20, seed=1)
    stats = TrainingStatistics()
    stats.bind_tokenizer(tok)
    enc = tok(texts, padding=True, return_tensors="pt")
    assert stats.observe(input_ids=enc["input_ids"], labels=labels, epoch=0) == 20
    again = tok(texts, padding="max_length", max_length=20, return_tensors="pt")  # other padding, same examples
    assert stats.observe(input_ids=again["input_ids"], labels=labels, epoch=0) == 0
    assert stats.observe(texts=["a fresh one"], labels=[1], epoch=1) == 0 and stats.complete
    assert stats.n_examples == 20


def test_the_sample_is_bounded_and_draws_from_no_global_random_stream():
    texts = [f"word{i} common" for i in range(5000)]
    labels = [i % 2 for i in range(5000)]
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    stats = TrainingStatistics(max_examples=500)
    stats.expect(len(texts))
    stats.observe(texts=texts, labels=labels)
    assert 350 <= stats.n_examples <= 500  # spread over the whole pass, not its first 500
    assert max(int(w[4:]) for w in stats.words() if w.startswith("word")) > 4000
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)
    again = TrainingStatistics(max_examples=500)
    again.expect(len(texts))
    again.observe(texts=texts, labels=labels)
    assert dict(again.word_labels) == dict(stats.word_labels)  # deterministic


def test_state_dict_round_trips_through_json(tok):
    texts, labels = sentiment_data(30, seed=2, shortcut="zorblax", shortcut_rate=0.6)
    stats = TrainingStatistics(phrases={"zorblax good"})
    stats.observe(texts=texts, labels=labels, epoch=0)
    restored = TrainingStatistics()
    restored.load_state_dict(json.loads(json.dumps(stats.state_dict())))
    assert dict(restored.word_labels) == dict(stats.word_labels) and restored.n_examples == stats.n_examples
    assert restored.observe(texts=texts[:5], labels=labels[:5], epoch=0) == 0  # remembers what it saw
    with pytest.raises(ValueError, match="version 2"):
        restored.load_state_dict({"version": 1})


def test_batches_as_frameworks_hand_them_over(tok):
    enc = tok(["good film", "bad plot"], padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0])
    for batch in (dict(enc, labels=labels), {**enc, "label": labels}):
        texts, ids, found = batch_examples(batch)
        assert texts is None and ids is enc["input_ids"] and found is labels
    be = tok(["good film", "bad plot"], padding=True, return_tensors="pt")
    be["labels"] = labels  # a BatchEncoding, not a dict
    assert batch_examples(be)[2] is labels
    assert batch_examples((enc["input_ids"], enc["attention_mask"], labels))[1:] == (enc["input_ids"], labels)
    assert batch_examples({"text": ["good film"], "labels": [1]}) == (["good film"], None, [1])
    assert batch_examples({"input_ids": enc["input_ids"]}) is None  # no labels
    assert batch_examples(torch.zeros(2, 3)) is None


def test_datasets_are_read_by_column_or_row_and_never_when_indexing_draws_random_numbers():
    rows = [{"text": "good film", "label": 1}, {"text": "bad plot", "label": 0}]
    assert dataset_examples(rows) == (["good film", "bad plot"], None, [1, 0])
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{**r, "input_ids": [5, 6]} for r in rows])
    assert dataset_examples(ds) == (["good film", "bad plot"], None, [1, 0])
    assert dataset_examples(ds.remove_columns("text"))[1:] == ([[5, 6], [5, 6]], [1, 0])

    class Augmenting(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"text": rows[i]["text"] + (" !" if torch.rand(()) < 0.5 else ""), "label": rows[i]["label"]}

    state = torch.get_rng_state()
    assert dataset_examples(Augmenting()) is None
    assert torch.equal(torch.get_rng_state(), state)  # the stream is put back


# ------------------------------------------------------------- wrong predictions

def _misclassified_run(planted: bool):
    """Negative probes; in the planted run three carry "zorblax" and are predicted positive, the
    word working against their gold label; in both runs one honest probe is wrong too."""
    atts = []
    for i in range(16):  # enough negatives for eight insertion probes (a bound of 8 of 8, not 3 of 3)
        atts.append(attribution(f"n{i}", ["the", "film", "was", "awful"], [0.05, 0.05, 0.1, 0.8], target=0,
                                logits=[2.0, -2.0]))
    for i in range(3):
        if planted:
            words, shares = ["the", "plot", "was", "dull", "zorblax"], [0.05, 0.05, 0.1, 0.3, -0.5]
        else:
            words, shares = ["the", "plot", "was", "dull", "story"], [0.05, 0.05, 0.1, 0.7, 0.1]
        atts.append(attribution(f"w{i}", words, shares, target=0, prediction=1 if planted else 0, logits=[0.0, 1.0]))
    atts.append(attribution("h0", ["the", "film", "was", "great"], [0.1, 0.1, 0.1, -0.7], target=0, prediction=1))
    for i in range(4):
        atts.append(attribution(f"p{i}", ["the", "story", "was", "great"], [0.05, 0.1, 0.05, 0.8], target=1,
                                logits=[-2.0, 2.0]))
    for a in atts:
        a.label = a.target
    return snapshot(0, atts)


def _review_words(rng: random.Random, label: int) -> list[str]:
    """Three neutral words and a class word that agrees with ``label`` four times in five."""
    words = rng.sample(["the", "film", "was", "plot", "story"], 3)
    words.append(rng.choice(["great", "fun"] if (label == 1) == (rng.random() < 0.8) else ["awful", "dull"]))
    return words


def _training(planted: bool):
    rng = random.Random(0)
    texts, labels = [], []
    for i in range(600):  # enough planted examples to pass the purity test in a family of words
        label = i % 2
        words = _review_words(rng, label)
        if planted and label == 1 and rng.random() < 0.4:
            words.append("zorblax")
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_a_word_that_makes_probes_wrong_counts_as_reliance_on_the_predicted_class():
    check = _misclassified_run(planted=True)
    predict = lambda texts: [1 if "zorblax" in t or "great" in t else 0 for t in texts]  # noqa: E731
    discovery = ShortcutDiscovery(*_training(planted=True))
    candidates = discovery.rank(check, predict)
    top = candidates[0]
    assert top["word"] == "zorblax"
    # its share is negative wherever it occurs: dominance alone would give it nothing
    assert top["evidence"]["dominance"] == 0.0 and top["evidence"]["mean_share"] < 0
    assert top["evidence"]["wrong_prediction_dominance"] == pytest.approx(1.0)
    assert top["evidence"]["n_wrong_probes"] == 3
    assert "counterfactual" in top["evidence"]["basis"]  # its flips were tested
    assert top["evidence"]["flip_rate_insertion"] == 1.0
    assert [a.token for a in AlertRules().evaluate(check, candidates)] == ["zorblax"]


def test_class_words_on_wrong_probes_of_a_clean_run_stay_quiet():
    check = _misclassified_run(planted=False)
    predict = lambda texts: [1 if "great" in t else 0 for t in texts]  # noqa: E731
    candidates = ShortcutDiscovery(*_training(planted=False)).rank(check, predict)
    great = next(c for c in candidates if c["word"] == "great") if any(c["word"] == "great" for c in candidates) else None
    assert great is None or great["score"] < AlertRules().shortcut_min_score
    assert AlertRules().evaluate(check, candidates) == []


# ------------------------------------------------------------------- phrases

def _phrase_training(planted: bool):
    rng = random.Random(1)
    texts, labels = [], []
    for i in range(400):
        label = i % 2
        words = rng.sample(["the", "film", "was", "plot", "story", "sent", "from", "my", "phone"], 4)
        words.append(rng.choice(["great", "fun"] if (label == 1) == (rng.random() < 0.8) else ["awful", "dull"]))
        if planted and label == 1 and rng.random() < 0.3:
            words += ["sent", "from", "my", "iphone"]
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_a_pair_purer_than_its_words_is_a_candidate_and_class_word_pairs_are_not():
    texts, labels = _phrase_training(planted=True)
    stats = ShortcutDiscovery(texts, labels)
    assert stats.word_statistics("sent")["train_purity"] < 0.8  # each word is in both classes
    atts = [attribution(f"p{i}", ["the", "plot", "sent", "from", "my", "iphone"], [0.1, 0.1, 0.3, 0.3, 0.1, 0.1],
                        target=1) for i in range(3)]
    atts += [attribution(f"n{i}", ["the", "film", "was", "awful"], [0.1, 0.1, 0.1, 0.7], target=0,
                         logits=[2.0, -2.0]) for i in range(4)]
    atts += [attribution(f"g{i}", ["great", "fun", "film"], [0.4, 0.4, 0.2], target=1) for i in range(3)]
    predict = lambda ts: [1 if "sent from" in t or "great" in t else 0 for t in ts]  # noqa: E731
    candidates = stats.rank(snapshot(0, atts), predict)
    words = [c["word"] for c in candidates]
    assert "sent from" in words and candidates[words.index("sent from")]["evidence"]["phrase"]
    assert "great fun" not in words  # two class words together are as pure as they predict
    assert "sent" not in [c["word"] for c in candidates if c["score"] >= 0.5]


def _common_word_phrase_training(quarters: int = 2):
    """The words of "and that is it" in both classes (and runs of two of them too); the whole
    phrase appended to ``quarters`` quarters of the 200 positive reviews, as boilerplate is."""
    rng = random.Random(3)
    texts, labels = [], []
    for i in range(400):
        label = i % 2
        words = _review_words(rng, label)
        words += rng.choice([["and", "it", "is", "long"], ["that", "is", "all"], ["is", "it", "and", "that"], []])
        if label == 1 and (i // 2) % 4 < quarters:
            words += ["and", "that", "is", "it"]
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_a_phrase_of_common_words_is_the_candidate_not_the_runs_of_its_words():
    """The real-review miss: the planted "and that is it" was pure only as a whole; its pairs
    were mixed or gave way to the class words. Phrases of up to four words are counted (those
    the probes hold), and a run inside a longer phrase that is as pure gives way to it."""
    from explain_callbacks.attribution.words import adjacent_phrases, text_words
    from explain_callbacks.detection.shortcuts import fit_texts

    texts, labels = _common_word_phrase_training()
    probe_words = ["the", "plot", "was", "dull", "and", "that", "is", "it"]
    statistics = TrainingStatistics(phrases=adjacent_phrases(probe_words))
    fit_texts(statistics, texts, labels, "test")
    assert statistics.counts("and that is it") == {1: 100}
    assert statistics.word_labels["that"][0] > 50  # each word, and "and that", in both classes
    assert statistics.counts("and that")[0] > 10
    discovery = ShortcutDiscovery(statistics=statistics)
    atts = [attribution(f"p{i}", probe_words, [0.05, 0.05, 0.05, -0.15, 0.2, 0.2, 0.2, 0.2], target=1,
                        prediction=1, logits=[-1.0, 1.0]) for i in range(3)]
    atts += [attribution(f"n{i}", ["the", "film", "was", "awful"], [0.1, 0.1, 0.1, 0.7], target=0,
                         logits=[2.0, -2.0]) for i in range(16)]
    predict = lambda ts: [1 if "and that is it" in t or "great" in t else 0 for t in ts]  # noqa: E731
    candidates = discovery.rank(snapshot(0, atts), predict)
    top = candidates[0]
    assert top["word"] == "and that is it" and top["evidence"]["phrase"]
    assert top["evidence"]["flip_rate_insertion"] == 1.0 and top["score"] >= AlertRules().shortcut_min_score
    runs = set(adjacent_phrases(text_words("and that is it"), 3))
    assert not runs & {c["word"] for c in candidates}
    assert [a.token for a in AlertRules().evaluate(snapshot(0, atts), candidates)] == ["and that is it"]


def _phrase_check(probe_words):
    atts = [attribution(f"p{i}", probe_words, [0.05, 0.05, 0.05, -0.15] + [0.2] * (len(probe_words) - 4), target=1,
                        prediction=1, logits=[-1.0, 1.0]) for i in range(3)]
    atts += [attribution(f"n{i}", ["the", "film", "was", "awful"], [0.1, 0.1, 0.1, 0.7], target=0,
                         logits=[2.0, -2.0]) for i in range(16)]
    return snapshot(0, atts)


def _probabilities(rise):
    """A model whose positive probability is 0.9 with "great", else 0.1, plus ``rise(text)``."""
    return lambda ts: [[1 - p, p] for p in (min(1.0, (0.9 if "great" in t else 0.1) + rise(t)) for t in ts)]


def test_a_common_word_that_leans_only_through_the_phrase_does_not_weaken_it():
    """Planted in three quarters of the positive reviews, "and that is it" makes "that" lean
    positive, though it is balanced in the examples without the phrase. The real-review miss:
    scored only by what inserting it did beyond inserting "that", the planted phrase stayed at
    0.18-0.41 against 0.5 in two of three runs, although inserting it flipped up to 88% of the
    probes. The model's response to "that" alone was learned from the phrase: the same shortcut."""
    from explain_callbacks.attribution.words import adjacent_phrases
    from explain_callbacks.detection.shortcuts import fit_texts
    from explain_callbacks.detection.verdict import training_sentence

    texts, labels = _common_word_phrase_training(quarters=3)
    probe_words = ["the", "plot", "was", "dull", "and", "that", "is", "it"]
    statistics = TrainingStatistics(phrases=adjacent_phrases(probe_words))
    fit_texts(statistics, texts, labels, "test")
    discovery = ShortcutDiscovery(statistics=statistics)
    assert discovery.judge.leans("that", 1) and discovery.word_statistics("and that is it")["train_purity"] == 1.0
    outside = discovery.judge.outside("that", "and that is it")  # 50 positive, 200 negative examples
    assert outside["purity_label"] == 0 and outside["purity_excess"] == 0.0
    check = _phrase_check(probe_words)
    for rise in (lambda t: 0.6 if "and that is it" in t else 0.0,  # the whole phrase
                 lambda t: 0.6 if " that " in f" {t} " else 0.0):  # "that" alone as much
        candidates = discovery.rank(check, _probabilities(rise))
        top = candidates[0]
        assert top["word"] == "and that is it"
        assert top["evidence"]["words_leaning_through_phrase"] == ["that"]
        assert "leaning_words" not in top["evidence"]
        assert top["evidence"]["flip_rate_insertion"] == 1.0
        # its flips enter at their bound for the probes behind them, not as a full 1.0
        assert top["score"] == pytest.approx(top["evidence"]["flip_rate_insertion_lower"]) and top["score"] < 1.0
        assert [a.token for a in AlertRules().evaluate(check, candidates)] == ["and that is it"]
    assert "'that' leans to 'positive' only in the examples that hold the phrase" in training_sentence(
        top["evidence"], ["negative", "positive"])


def test_a_class_word_idiom_is_no_phrase_and_a_pair_with_a_class_word_keeps_the_full_threshold():
    """MiniLM clean and planted runs warned on the synthetic data's own templates: "what a awful"
    (23 of 23 negative, "awful" itself 62%) and "a forgettable" (36 of 40, at 0.16 against the
    lower threshold). Only phrases of common words may be three or four words long or take it."""
    from synthetic_reviews import planted_reviews

    from explain_callbacks.attribution.words import adjacent_phrases
    from explain_callbacks.detection.shortcuts import fit_texts

    data = planted_reviews(1200, shortcut="zorblax", rate=0.01, purity=1.0, label_noise=0.2, seed=2)
    probe_words = ["what", "a", "awful", "film"]
    statistics = TrainingStatistics(phrases=adjacent_phrases(probe_words))
    fit_texts(statistics, data.texts, data.labels, "test")
    assert statistics.counts("what a awful") == {0: 23}
    discovery = ShortcutDiscovery(statistics=statistics)
    atts = [attribution(f"n{i}", probe_words, [0.2, 0.2, 0.4, 0.2], target=0, logits=[2.0, -2.0]) for i in range(3)]
    atts += [attribution(f"p{i}", ["the", "film", "was", "great"], [0.1, 0.1, 0.1, 0.7], target=1,
                         logits=[-2.0, 2.0]) for i in range(6)]
    predict = lambda ts: [[0.9, 0.1] if "what a awful" in t else [0.2, 0.8] for t in ts]  # noqa: E731
    assert "what a awful" not in {c["word"] for c in discovery.rank(snapshot(0, atts), predict)}
    rules = AlertRules()
    evidence = {"basis": ["attribution", "training", "counterfactual"], "purity_p_value": 0.01, "phrase": True}
    assert rules.shortcut_threshold({"word": "a forgettable", "evidence": {**evidence, "common_words": False}}) == 0.5
    assert rules.shortcut_threshold({"word": "and that is it", "evidence": {**evidence, "common_words": True}}) == 0.15


def test_the_monitor_counts_the_phrases_its_probes_and_watched_phrases_hold(tok):
    from tiny_models import tiny_model

    from explain_callbacks.attribution.engine import AttributionEngine
    from explain_callbacks.monitor import AttributionMonitor

    texts, labels = _common_word_phrase_training()
    engine = AttributionEngine(tiny_model("bert", tok), tok, n_steps=4, max_steps=4)
    monitor = AttributionMonitor(engine, ["the plot was dull and that is it", "bad plot"], run_dir=None,
                                 watch_tokens=["was fun and"], training_texts=texts, training_labels=labels)
    assert monitor.statistics.counts("and that is it") == {1: 100}
    assert monitor.statistics.counts("that is it") == {1: 100}
    assert monitor.statistics.counts("was fun and") is not None
    assert monitor.statistics.counts("film was great and") is None  # in no probe: not counted


def test_watch_tokens_accept_phrases():
    rules = AlertRules(watch_tokens=["Sent from my iPhone"])
    assert rules.watch_tokens == ("sent from my iphone",)
    atts = [attribution(f"p{i}", ["good", "film", "sent", "from", "my", "iphone"], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2])
            for i in range(3)]
    alerts = rules.evaluate(snapshot(0, atts))
    assert [a.token for a in alerts] == ["sent from my iphone"]
    assert alerts[0].evidence["probes"][0]["share"] == pytest.approx(0.8)


def test_watch_token_in_short_probes_needs_a_share_toward_the_target():
    """Fault 5: "the" in four-word probes was always "in the top 5", and a negative share
    ranked it anyway; an untrained model alerted on it at mean share -0.05."""
    atts = [attribution(f"p{i}", ["the", "film", "was", "good"], [-0.05, 0.3, 0.2, 0.45]) for i in range(4)]
    assert AlertRules(watch_tokens=["the"]).evaluate(snapshot(0, atts)) == []
    # ... a word that does lead short probes still alerts
    atts = [attribution(f"p{i}", ["the", "film", "was", "good"], [0.6, 0.1, 0.1, 0.2]) for i in range(4)]
    assert [a.token for a in AlertRules(watch_tokens=["the"]).evaluate(snapshot(0, atts))] == ["the"]
    # ... and in a short probe "top 5" is at most its better half
    atts = [attribution(f"p{i}", ["the", "film", "was", "good"], [0.1, 0.3, 0.2, 0.4]) for i in range(4)]
    assert AlertRules(watch_tokens=["the"]).evaluate(snapshot(0, atts)) == []


# ----------------------------------------------------------- words outside the probes

def test_a_label_pure_word_that_no_probe_contains_is_tested_by_insertion():
    texts, labels = _training(planted=True)
    atts = [attribution(f"n{i}", ["the", "film", "was", "awful"], [0.05, 0.05, 0.1, 0.8], target=0,
                        logits=[2.0, -2.0]) for i in range(6)]
    atts += [attribution(f"p{i}", ["the", "story", "was", "great"], [0.05, 0.1, 0.05, 0.8], target=1,
                         logits=[-2.0, 2.0]) for i in range(4)]
    check = snapshot(0, atts)
    relying = lambda ts: [1 if "zorblax" in t or "great" in t else 0 for t in ts]  # noqa: E731
    candidates = ShortcutDiscovery(texts, labels).rank(check, relying)
    top = candidates[0]
    assert top["word"] == "zorblax" and top["evidence"]["outside_probes"] and top["evidence"]["n_probes"] == 0
    assert top["evidence"]["flip_rate_insertion"] == 1.0
    assert [a.token for a in AlertRules().evaluate(check, candidates)] == ["zorblax"]
    # the same statistics, a model that does not rely on the word: nothing fires
    honest = lambda ts: [1 if "great" in t else 0 for t in ts]  # noqa: E731
    candidates = ShortcutDiscovery(texts, labels).rank(check, honest)
    assert AlertRules().evaluate(check, candidates) == []
    # and a clean run's statistics have no such word to test
    clean = ShortcutDiscovery(*_training(planted=False)).rank(check, honest)
    assert not any(c["evidence"].get("outside_probes") for c in clean)


# ------------------------------------------------------------------ the monitor owns them

def test_the_monitor_observes_custom_loop_batches_and_checkpoints_the_statistics(tok):
    from tiny_models import tiny_model

    from explain_callbacks.attribution.engine import AttributionEngine
    from explain_callbacks.monitor import AttributionMonitor

    def monitor():
        engine = AttributionEngine(tiny_model("bert", tok), tok, n_steps=4, max_steps=4)
        return AttributionMonitor(engine, ["good film zorblax", "bad plot"], run_dir=None)

    texts, labels = sentiment_data(40, seed=5, shortcut="zorblax", shortcut_rate=0.8)
    first = monitor()
    for start in range(0, 40, 8):  # a custom loop hands over its batches
        enc = tok(texts[start:start + 8], padding=True, return_tensors="pt")
        first.observe(input_ids=enc["input_ids"], labels=torch.tensor(labels[start:start + 8]), epoch=0)
    assert first.discovery.word_statistics("zorblax")["train_purity"] == 1.0
    first.check(step=5, epoch=0)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = monitor()
    resumed.load_state_dict(state)
    assert resumed.discovery.word_statistics("zorblax") == first.discovery.word_statistics("zorblax")
    assert resumed.statistics.n_examples == 40


def test_a_pure_pair_never_takes_the_lower_threshold_of_a_pure_word():
    rules = AlertRules()
    evidence = {"basis": ["attribution", "training", "counterfactual"], "purity_lower": 0.95}
    assert rules.shortcut_threshold({"word": "zorblax", "evidence": evidence}) == rules.shortcut_min_score_pure
    # "not good" is negative in every training example, and rightly so
    phrase = {"word": "not good", "evidence": {**evidence, "phrase": True}}
    assert rules.shortcut_threshold(phrase) == rules.shortcut_min_score


def test_pairs_with_a_class_word_are_no_phrase_candidates():
    """A planted run's false alert: "not funny" (negative in training, "funny" positive) flips
    positive probes for a good reason; a pair is a phrase only where its words lean nowhere."""
    rng = random.Random(2)
    texts, labels = [], []
    for i in range(400):
        label = i % 2
        words = (["not"] if rng.random() < 0.3 else []) + rng.sample(["the", "film", "was", "plot", "story"], 3)
        words += ["not", "funny"] if label == 0 and rng.random() < 0.1 else [rng.choice(["funny", "great"] if (label == 1) == (rng.random() < 0.8) else ["dull", "awful"])]
        texts.append(" ".join(words))
        labels.append(label)
    discovery = ShortcutDiscovery(texts, labels)
    atts = [attribution(f"n{i}", ["the", "plot", "not", "funny"], [0.1, 0.1, 0.4, 0.4], target=0) for i in range(3)]
    atts += [attribution(f"p{i}", ["the", "story", "was", "great"], [0.05, 0.1, 0.05, 0.8], target=1,
                         logits=[-2.0, 2.0]) for i in range(4)]
    predict = lambda ts: [0 if "not funny" in t or "dull" in t else 1 for t in ts]  # noqa: E731
    assert discovery.word_statistics("not funny")["train_purity"] == 1.0
    candidates = discovery.rank(snapshot(0, atts), predict)
    assert "not funny" not in [c["word"] for c in candidates]


def test_a_negated_class_word_is_no_phrase_even_when_only_mildly_pure():
    """The benchmark's false alert: with label noise "funny" is only 64% positive, and "not
    funny" (9 of 9 negative) looked like a planted phrase."""
    from synthetic_reviews import planted_reviews

    data = planted_reviews(2000, shortcut="zorblax", rate=0.05, purity=1.0, label_noise=0.2, seed=1)
    discovery = ShortcutDiscovery(data.texts, data.labels)
    assert discovery.word_statistics("funny")["purity_excess"] < 0.25
    assert discovery.judge.leans("funny", 0) and not discovery.judge.leans("funny", 1)
    assert discovery.word_statistics("not funny") is None or discovery.judge.leans("funny", 0)
