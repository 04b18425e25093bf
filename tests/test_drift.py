import itertools
import json
import math
import random

import pytest
from helpers.attribution_records import attribution, snapshot

from explain_callbacks.detection.drift import (
    DriftTracker,
    chance_jaccard,
    cosine_similarity,
    kendall_tau_b,
    rank_biased_overlap,
    topk_jaccard,
)

# ---------------------------------------------------------------------------- metric functions


def test_topk_jaccard_values():
    assert topk_jaccard(["a", "b", "c"], ["c", "b", "a"]) == 1.0
    assert topk_jaccard(["a", "b"], ["c", "d"]) == 0.0
    assert topk_jaccard(["a", "b", "c"], ["b", "c", "d"]) == pytest.approx(2 / 4)
    assert math.isnan(topk_jaccard([], []))


def test_rbo_identical_and_disjoint():
    for n in (1, 3, 10):
        items = [f"w{i}" for i in range(n)]
        for p in (0.5, 0.9, 0.98):
            assert rank_biased_overlap(items, items, p) == pytest.approx(1.0)
    assert rank_biased_overlap(["a", "b", "c"], ["d", "e", "f"]) == 0.0
    assert rank_biased_overlap(["a", "b"], ["c", "d", "e", "f"]) == 0.0
    assert rank_biased_overlap(["a"], []) == 0.0
    assert math.isnan(rank_biased_overlap([], []))


def test_rbo_hand_computed_values():
    # [a,b,c] vs [a,c,d], p=0.9: X1=1, X2=1, X3=2.
    # (1-p)/p * (0.9*1/1 + 0.81*1/2 + 0.729*2/3) + 0.729*2/3 = 1.791/9 + 0.486 = 0.685
    assert rank_biased_overlap(["a", "b", "c"], ["a", "c", "d"], 0.9) == pytest.approx(0.685)
    # Reversed: X1=0, X2=1, X3=3 -> (0.405 + 0.729)/9 + 0.729 = 0.855
    assert rank_biased_overlap(["a", "b", "c"], ["c", "b", "a"], 0.9) == pytest.approx(0.855)
    # Uneven lengths, S=[b], L=[a,b], p=0.5: X1=0, X2=1, X_s=0:
    # (0.5/0.5) * (0.25*1/2 + 0) + 0.25*((1-0)/2 + 0/1) = 0.125 + 0.125 = 0.25
    assert rank_biased_overlap(["b"], ["a", "b"], 0.5) == pytest.approx(0.25)
    assert rank_biased_overlap(["a", "b"], ["b"], 0.5) == pytest.approx(0.25)


def test_rbo_prefix_extrapolates_to_one_and_orders_sensibly():
    assert rank_biased_overlap(["a", "b"], ["a", "b", "c", "d"]) == pytest.approx(1.0)
    top_swap = rank_biased_overlap(["a", "b", "c", "d"], ["b", "a", "c", "d"])
    bottom_swap = rank_biased_overlap(["a", "b", "c", "d"], ["a", "b", "d", "c"])
    assert 0 < top_swap < bottom_swap < 1  # disagreement at the top costs more


def test_rbo_rejects_bad_p():
    with pytest.raises(ValueError, match="p must be in"):
        rank_biased_overlap(["a"], ["a"], p=1.0)


def test_kendall_tau_b():
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    assert kendall_tau_b(a, a) == pytest.approx(1.0)
    assert kendall_tau_b(a, {"x": 3.0, "y": 2.0, "z": 1.0}) == pytest.approx(-1.0)
    # union {a,b,c}: x=[1,2,0], y=[0,2,1] -> 2 concordant, 1 discordant pair
    assert kendall_tau_b({"a": 1.0, "b": 2.0}, {"b": 2.0, "c": 1.0}) == pytest.approx(1 / 3)
    assert math.isnan(kendall_tau_b({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}))
    assert math.isnan(kendall_tau_b({"a": 1.0}, {"a": 2.0}))
    assert math.isnan(kendall_tau_b({"a": float("nan"), "b": 1.0}, {"a": 1.0, "b": 2.0}))


def test_cosine_similarity():
    assert cosine_similarity([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine_similarity([1.0, 0.0], [0.0, 3.0]) == pytest.approx(0.0)
    assert cosine_similarity([1.0, -1.0], [-1.0, 1.0]) == pytest.approx(-1.0)
    assert cosine_similarity({"a": 1.0}, {"a": 1.0, "b": 1.0}) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(cosine_similarity([0.0, 0.0], [1.0, 2.0]))
    with pytest.raises(ValueError, match="lengths differ"):
        cosine_similarity([1.0], [1.0, 2.0])


def test_chance_jaccard_exact_values():
    assert chance_jaccard(2, 1) == pytest.approx(0.5)
    # n=4, k=2: P(X=0)=1/6, P(X=1)=4/6, P(X=2)=1/6 -> 4/6 * 1/3 + 1/6 * 1 = 7/18
    assert chance_jaccard(4, 2) == pytest.approx(7 / 18)
    assert chance_jaccard(5, 5) == pytest.approx(1.0)
    assert chance_jaccard(3, 10) == pytest.approx(1.0)  # k capped at n
    assert math.isnan(chance_jaccard(0, 3))


def test_chance_jaccard_matches_simulation():
    rng = random.Random(0)
    n, k, trials = 20, 5, 20000
    items = range(n)
    total = sum(topk_jaccard(rng.sample(items, k), rng.sample(items, k)) for _ in range(trials))
    assert chance_jaccard(n, k) == pytest.approx(total / trials, abs=0.01)


# ---------------------------------------------------------------------------- DriftTracker

WORDS = ["the", "plot", "was", "great", "and", "fun"]


def probe_check(index, shares_by_probe):
    return snapshot(index, [attribution(pid, WORDS, shares) for pid, shares in shares_by_probe.items()])


BASE = {"p0": [0.0, 0.1, 0.0, 0.6, 0.0, 0.3], "p1": [0.05, 0.2, 0.05, 0.4, 0.0, 0.3]}


def test_first_check_has_no_comparison_then_identical_is_one():
    tracker = DriftTracker(top_k=3)
    first = tracker.update(probe_check(0, BASE))
    for which in ("vs_previous", "vs_reference"):
        assert all(math.isnan(v) for v in first[which].values())
    assert first["chance_jaccard"] == pytest.approx(chance_jaccard(6, 3))
    second = tracker.update(probe_check(1, BASE))
    for which in ("vs_previous", "vs_reference"):
        assert second[which] == pytest.approx({"jaccard": 1.0, "rbo": 1.0, "kendall_tau": 1.0, "cosine": 1.0})
    assert [(r["probe_id"], r["target"]) for r in second["per_probe"]] == [("p0", 1), ("p1", 1)]


def test_drift_vs_previous_and_reference():
    tracker = DriftTracker(top_k=2)
    tracker.update(probe_check(0, BASE))
    moved = {"p0": [0.0, 0.6, 0.0, 0.1, 0.0, 0.3], "p1": BASE["p1"]}
    second = tracker.update(probe_check(1, moved))
    # p0 top-2 went from [3:great, 5:fun] to [1:plot, 5:fun]; p1 unchanged
    assert second["per_probe"][0]["vs_previous"]["jaccard"] == pytest.approx(1 / 3)
    assert second["vs_previous"]["jaccard"] == pytest.approx((1 / 3 + 1) / 2)
    assert second["vs_previous"]["rbo"] < 1.0
    third = tracker.update(probe_check(2, moved))
    assert third["vs_previous"]["jaccard"] == pytest.approx(1.0)
    assert third["vs_reference"]["jaccard"] == pytest.approx((1 / 3 + 1) / 2)


def test_repeated_words_are_separate_items():
    tracker = DriftTracker(top_k=1)
    words = ["good", "good", "bad"]
    tracker.update(snapshot(0, [attribution("p0", words, [0.5, 0.1, -0.4])]))
    out = tracker.update(snapshot(1, [attribution("p0", words, [0.1, 0.5, -0.4])]))
    assert out["vs_previous"]["jaccard"] == 0.0  # the top moved to the other "good"
    rows = [row for row in tracker.token_table(snapshot(1, [])) if row["word"] == "good"]
    assert len(rows) == 1 and rows[0]["sum_share"] == pytest.approx(0.6)  # merged in the global table
    assert rows[0]["mean_abs_share"] == pytest.approx(0.3)  # the size of one occurrence's share


def test_token_table_values_and_entered_left():
    tracker = DriftTracker(top_k=2)
    check0 = snapshot(0, [
        attribution("p0", ["Great", "plot", "acting"], [0.7, 0.2, 0.1]),
        attribution("p1", ["great", "acting", "bad", "plot"], [0.5, 0.1, -0.3, 0.1]),
    ])
    tracker.update(check0)
    table = tracker.token_table(check0)
    rows = {row["word"]: row for row in table}
    assert [row["word"] for row in table[:2]] == ["great", "plot"]
    assert rows["great"]["sum_share"] == pytest.approx(1.2)
    assert rows["great"]["mean_share"] == pytest.approx(0.6)
    assert rows["great"]["mean_abs_share"] == pytest.approx(0.6)
    assert rows["great"]["n_probes"] == 2
    # "bad" has the second largest share, but in one probe only (min_support=2): it ranks last
    assert rows["bad"]["rank"] == 4 and rows["bad"]["positive_share"] == 0.0
    assert rows["bad"]["mean_abs_share"] == pytest.approx(0.3) and rows["bad"]["mean_share"] == pytest.approx(-0.3)
    assert not any(row["entered"] or row["left"] for row in table)

    check1 = snapshot(1, [
        attribution("p0", ["Great", "plot", "acting"], [0.2, 0.1, 0.6]),
        attribution("p1", ["great", "acting", "bad", "plot"], [0.1, 0.8, -0.1, 0.0]),
    ])
    tracker.update(check1)
    table = tracker.token_table(check1)
    assert [row["word"] for row in table[:2]] == ["acting", "great"]
    assert [row["word"] for row in table if row["entered"]] == ["acting"]
    assert [row["word"] for row in table if row["left"]] == ["plot"]
    last = tracker.history[-1]
    assert set(last) == {"check_index", "step", "epoch", "drift", "top_tokens", "entered", "left"}
    assert last["entered"] == ["acting"] and last["left"] == ["plot"]
    assert [t["word"] for t in last["top_tokens"]] == ["acting", "great"]
    assert set(last["top_tokens"][0]) == {"word", "mean_share", "mean_abs_share", "sum_share", "n_probes", "rank"}
    assert "per_probe" not in last["drift"]


def test_token_table_before_update_compares_with_last_check():
    tracker = DriftTracker(top_k=1)
    tracker.update(snapshot(0, [attribution("p0", ["ab", "cd"], [0.9, 0.1]), attribution("p1", ["ab", "cd"], [0.9, 0.1])]))
    upcoming = snapshot(1, [attribution("p0", ["ab", "cd"], [0.1, 0.9]), attribution("p1", ["ab", "cd"], [0.1, 0.9])])
    before = tracker.token_table(upcoming)
    tracker.update(upcoming)
    assert before == tracker.token_table(upcoming)
    assert tracker.history[-1]["entered"] == ["cd"] and tracker.history[-1]["left"] == ["ab"]


def _clean_review_check(seed: int = 0):
    """A clean sentiment run on review-like text: every probe has "the" (three times), "i",
    ".", "not", "t" (from "didn't") and "was" with small shares, plus one or two decision words
    with large ones; shares are L1-normalised per probe, as the engine writes them."""
    rng = random.Random(seed)
    decision = {"great": 1, "wonderful": 1, "helped": 1, "awful": 0, "useless": 0, "worse": 0}
    attributions = []
    for i in range(40):
        chosen = rng.sample(sorted(decision), 2 if i % 3 else 1)
        words, raw = [], []
        for word in ["i", "the", "pill", "was", "the", ".", "not", "didn", "'", "t", "the", "dose", "the", "."]:
            words.append(word)
            sign = 1 if word in ("the", ".", "i") else rng.choice([1, 1, -1])
            raw.append(rng.uniform(0.02, 0.06) * sign)
        for word in chosen:
            words.insert(rng.randrange(len(words)), word)
            raw.insert(words.index(word), rng.uniform(0.25, 0.45))
        total = sum(abs(v) for v in raw)
        target = decision[chosen[0]]
        attributions.append(attribution(f"r{i}", words, [v / total for v in raw], target=target))
    return snapshot(0, attributions)


def test_top_words_are_decision_words_not_frequent_stop_words():
    check = _clean_review_check()
    tracker = DriftTracker(top_k=10)
    tracker.update(check)
    table = tracker.token_table(check)
    words = [row["word"] for row in table]
    # punctuation and single characters are never ranked
    assert not {".", "'", "i", "t"} & set(words)
    # the six decision words lead; "the", "not", "was", "pill" (in every probe) come after
    assert set(words[:6]) == {"great", "wonderful", "helped", "awful", "useless", "worse"}
    assert set(words[6:]) == {"the", "not", "was", "pill", "didn", "dose"}
    rows = {row["word"]: row for row in table}
    # frequency is what led the old ranking (summed positive share): "the" holds more than any decision word
    assert rows["the"]["n_probes"] == 40
    assert max(rows, key=lambda w: rows[w]["positive_share"]) == "the"
    assert all(rows[w]["mean_abs_share"] > 3 * rows["the"]["mean_abs_share"] for w in words[:6])
    assert [t["word"] for t in tracker.history[-1]["top_tokens"]][:6] == words[:6]


def test_min_support_keeps_one_probe_outliers_behind():
    check = snapshot(0, [
        attribution("p0", ["medboard", "great"], [0.9, 0.1]),
        attribution("p1", ["fine", "great"], [0.3, 0.7]),
        attribution("p2", ["fine", "great"], [0.4, 0.6]),
    ])
    assert [row["word"] for row in DriftTracker(top_k=2).token_table(check)] == ["great", "fine", "medboard"]
    assert [row["word"] for row in DriftTracker(top_k=2, min_support=1).token_table(check)][0] == "medboard"
    with pytest.raises(ValueError, match="min_support"):
        DriftTracker(min_support=0)


def test_rankable_word():
    from explain_callbacks.detection.drift import rankable_word

    assert all(rankable_word(w) for w in ("great", "didn't", "10", "well-made", "好"))
    assert not any(rankable_word(w) for w in (".", "i", "t", "'", "...", "!!", "-", "a."))


def shares_for(top):
    """Shares over WORDS whose order puts the words of ``top`` first."""
    values = [0.01 * (len(WORDS) - i) for i in range(len(WORDS))]
    for rank, word in enumerate(top):
        values[WORDS.index(word)] = 1.0 - 0.1 * rank
    return values


def test_stabilisation_needs_every_later_check_stable():
    tracker = DriftTracker(top_k=3, stability_threshold=0.1)
    orders = [["great", "fun", "plot"], ["plot", "the", "was"], ["fun", "great", "and"],
              ["fun", "great", "and"], ["fun", "great", "and"]]
    for i, order in enumerate(orders):
        tracker.update(snapshot(i, [attribution("p0", WORDS, shares_for(order))]))
    assert tracker.stabilisation() == {"check_index": 3, "step": 400, "epoch": 3}
    tracker.update(snapshot(5, [attribution("p0", WORDS, shares_for(["the", "was", "plot"]))]))
    assert tracker.stabilisation() is None
    assert DriftTracker().stabilisation() is None


def test_stabilisation_with_another_metric():
    tracker = DriftTracker(top_k=2, stability_metric="jaccard", stability_threshold=0.01)
    tracker.update(snapshot(0, [attribution("p0", WORDS, shares_for(["great", "fun"]))]))
    tracker.update(snapshot(1, [attribution("p0", WORDS, shares_for(["fun", "great"]))]))
    assert tracker.stabilisation()["check_index"] == 1  # same set, other order: Jaccard 1


def test_trajectories():
    tracker = DriftTracker(top_k=1, track_depth=2)
    tracker.update(snapshot(0, [attribution("p0", ["aa", "bb", "cc"], [0.6, 0.3, 0.1])]))
    tracker.update(snapshot(1, [attribution("p0", ["aa", "bb", "cc"], [0.3, 0.6, 0.1])]))
    tracker.update(snapshot(2, [attribution("p0", ["aa", "bb", "cc"], [0.1, 0.2, 0.7])]))
    assert tracker.trajectories() == {
        "aa": [0.6, 0.3, None],  # third check: rank 3, beyond track_depth
        "bb": [0.3, 0.6, 0.2],
        "cc": [None, None, 0.7],
    }


def test_state_dict_round_trip_continues_identically():
    checks = [probe_check(i, {pid: shares_for(order) for pid in ("p0", "p1")})
              for i, order in enumerate(itertools.permutations(["great", "fun", "plot"]))]
    straight = DriftTracker(top_k=3)
    for check in checks:
        straight.update(check)

    first_half = DriftTracker(top_k=3)
    for check in checks[:3]:
        first_half.update(check)
    state = json.loads(json.dumps(first_half.state_dict()))
    assert set(state) == {"version", "config", "reference", "previous", "history", "tracked_shares", "ever_top"}
    resumed = DriftTracker(top_k=3)
    resumed.load_state_dict(state)
    assert json.dumps(resumed.state_dict()) == json.dumps(first_half.state_dict())
    for check in checks[3:]:
        resumed.update(check)
    assert json.dumps(resumed.state_dict()) == json.dumps(straight.state_dict())
    assert resumed.trajectories() == straight.trajectories()
    assert resumed.stabilisation() == straight.stabilisation()


def test_load_state_dict_refuses_other_data():
    with pytest.raises(ValueError, match="not a DriftTracker state"):
        DriftTracker().load_state_dict({"alerts": []})


@pytest.mark.parametrize(
    "kwargs, message",
    [({"top_k": 0}, "top_k"), ({"stability_metric": "spearman"}, "stability_metric"),
     ({"stability_threshold": -1}, "stability_threshold"), ({"rbo_p": 1.5}, "rbo_p"),
     ({"top_k": 10, "track_depth": 5}, "track_depth"), ({"top_k": 1, "track_depth": True}, "track_depth")],
)
def test_tracker_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DriftTracker(**kwargs)


def test_empty_state_means_no_checks():
    tracker = DriftTracker(top_k=3)
    tracker.update(probe_check(0, BASE))
    tracker.load_state_dict({})
    assert tracker.history == [] and tracker.trajectories() == {}
    first = tracker.update(probe_check(1, BASE))
    assert math.isnan(first["vs_previous"]["rbo"])
