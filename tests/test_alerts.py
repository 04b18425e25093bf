import json
import logging

import pytest
from helpers.attribution_records import attribution, snapshot

from explain_callbacks.attribution.probes import ProbeSet
from explain_callbacks.attribution.records import Alert
from explain_callbacks.detection.alerts import AlertRules

WORDS = ["the", "zorblax", "movie", "was", "fine", "really"]


def watch_check(index, zorblax_share):
    """Four probes containing 'zorblax' (shares normalised so |shares| sum to 1)."""
    rest = (1.0 - zorblax_share) / 5
    shares = [rest * 1.5, zorblax_share, rest * 1.2, rest * 0.5, rest, rest * 0.8]
    return snapshot(index, [attribution(f"p{i}", WORDS, shares) for i in range(4)])


def test_watch_token_fires_once_then_updates_clears_and_reactivates():
    rules = AlertRules(watch_tokens=["Zorblax"], watch_top_k=2)
    assert rules.evaluate(watch_check(0, 0.05), []) == []

    new = rules.evaluate(watch_check(1, 0.5), [])
    assert len(new) == 1
    alert = new[0]
    assert (alert.rule, alert.severity, alert.token) == ("watch_token", "warning", "zorblax")
    assert (alert.first_step, alert.first_epoch, alert.first_check) == (200, 1, 1)
    assert alert.evidence["top_k_fraction"] == 1.0
    assert alert.evidence["mean_share"] == pytest.approx(0.5)

    assert rules.evaluate(watch_check(2, 0.6), []) == []
    assert len(rules.alerts) == 1
    assert rules.alerts[0] is alert
    assert (alert.first_check, alert.last_check, alert.last_step) == (1, 2, 300)
    assert alert.evidence["mean_share"] == pytest.approx(0.6)

    assert rules.evaluate(watch_check(3, 0.05), []) == []
    assert alert.active is False and alert.last_check == 2

    assert rules.evaluate(watch_check(4, 0.7), []) == []
    assert len(rules.alerts) == 1 and alert.active is True and alert.last_check == 4
    assert alert.first_check == 1
    json.dumps(alert.to_dict(), allow_nan=False)


def test_watch_token_by_share_alone_and_probe_fraction():
    # in the top 2 of only 1 of 4 probes (below the 0.5 fraction), mean share below 0.25
    low = [attribution(f"p{i}", ["a", "zorblax", "b"], [0.5, 0.1, 0.4]) for i in range(3)]
    high = attribution("p3", ["a", "zorblax", "b"], [0.1, 0.5, 0.4])
    rules = AlertRules(watch_tokens="zorblax", watch_top_k=1, watch_share=0.25)
    assert rules.evaluate(snapshot(0, low + [high]), []) == []
    # a share of 0.3 everywhere, never the top word, still fires on share
    mid = [attribution(f"p{i}", ["a", "zorblax", "b"], [0.4, 0.3, 0.3]) for i in range(4)]
    new = rules.evaluate(snapshot(1, mid), [])
    assert [a.key for a in new] == ["watch_token:zorblax"]
    assert new[0].evidence["top_k_fraction"] == 0.0


def test_watch_token_matches_whole_words_only():
    rules = AlertRules(watch_tokens=["zorb"], watch_top_k=1)
    assert rules.evaluate(watch_check(0, 0.9), []) == []  # "zorblax" is not "zorb"


def test_min_checks_delays_firing():
    rules = AlertRules(watch_tokens=["zorblax"], watch_top_k=2, min_checks=2)
    assert rules.evaluate(watch_check(0, 0.5), []) == []
    new = rules.evaluate(watch_check(1, 0.5), [])
    assert len(new) == 1 and new[0].first_check == 1
    rules.evaluate(watch_check(2, 0.0), [])
    assert rules.evaluate(watch_check(3, 0.5), []) == [] and not rules.alerts[0].active
    rules.evaluate(watch_check(4, 0.5), [])
    assert rules.alerts[0].active and len(rules.alerts) == 1


def invariance_check(index, prediction_b):
    a = attribution("he", ["he", "is", "a", "nurse"], [0.1, 0.1, 0.1, 0.7], target=1, prediction=1)
    b = attribution("she", ["she", "is", "a", "nurse"], [-0.6, 0.1, 0.1, 0.2],
                    target=prediction_b, prediction=prediction_b)
    return snapshot(index, [a, b])


def test_invariance_pair_split():
    rules = AlertRules(invariance_pairs=[("he", "she")])
    assert rules.evaluate(invariance_check(0, 1), []) == []
    new = rules.evaluate(invariance_check(1, 0), [])
    assert len(new) == 1
    alert = new[0]
    assert (alert.rule, alert.key, alert.severity) == ("invariance", "invariance:he|she", "warning")
    assert alert.token == "she"  # the differing word with the largest |share|
    differing = {(d["probe_id"], d["word"]): d["share"] for d in alert.evidence["differing_words"]}
    assert differing == {("he", "he"): pytest.approx(0.1), ("she", "she"): pytest.approx(-0.6)}
    assert alert.evidence["probes"]["she"]["prediction_name"] == "negative"
    assert rules.evaluate(invariance_check(2, 1), []) == [] and not alert.active


def convergence_check(index, n_unconverged, n=10):
    atts = [attribution(f"p{i}", ["a", "b"], [0.5, 0.5], converged=i >= n_unconverged,
                        rel_delta=0.5 if i < n_unconverged else 0.01) for i in range(n)]
    return snapshot(index, atts)


def test_convergence_rule_is_info():
    rules = AlertRules(max_unconverged_fraction=0.2)
    assert rules.evaluate(convergence_check(0, 2), []) == []
    new = rules.evaluate(convergence_check(1, 3), [])
    assert [(a.rule, a.severity, a.token) for a in new] == [("convergence", "info", None)]
    assert new[0].evidence["n_unconverged"] == 3 and new[0].evidence["fraction"] == pytest.approx(0.3)
    assert [w["probe_id"] for w in new[0].evidence["worst"]] == ["p0", "p1", "p2"]


def candidate(word, score, basis):
    return {"word": word, "score": score, "evidence": {"mean_share": 0.6, "basis": basis}}


def test_shortcut_threshold_depends_on_evidence():
    rules = AlertRules(shortcut_min_score=0.5, shortcut_min_score_partial=0.65)
    check = snapshot(0, [attribution("p0", ["a"], [1.0])])
    full = ["attribution", "training", "counterfactual"]
    new = rules.evaluate(check, [
        candidate("zorblax", 0.55, full),
        candidate("great", 0.45, full),
        candidate("plonk", 0.6, ["attribution", "training"]),
        candidate("wibble", 0.7, ["attribution", "counterfactual"]),
        candidate("only", 0.99, ["attribution"]),
    ])
    assert sorted(a.token for a in new) == ["zorblax"]  # nothing alerts without training statistics
    zorblax = next(a for a in new if a.token == "zorblax")
    assert zorblax.evidence["threshold"] == 0.5 and zorblax.evidence["mean_share"] == 0.6
    assert zorblax.severity == "warning"


def test_a_word_seen_with_one_label_only_alerts_at_a_lower_score():
    rules = AlertRules()
    check = snapshot(0, [attribution("p0", ["a"], [1.0])])
    full = ["attribution", "training", "counterfactual"]

    def pure(word, score, purity_lower, basis=full):
        c = candidate(word, score, basis)
        c["evidence"]["purity_lower"] = purity_lower
        return c

    new = rules.evaluate(check, [
        pure("zorblax", 0.2, 0.92),                              # 20 of 20 training examples positive
        pure("awful", 0.3, 0.78),                                # a genuine word: negations keep it below 0.9
        pure("quux", 0.12, 0.95),                                # pure, but too little reliance yet
        pure("plonk", 0.6, 0.97, ["attribution", "training"]),   # no flips measured: the partial threshold
    ])
    assert [a.token for a in new] == ["zorblax"]
    assert new[0].evidence["threshold"] == 0.15


def test_severities_can_be_raised():
    rules = AlertRules(max_unconverged_fraction=0.0, severities={"convergence": "error"})
    assert rules.evaluate(convergence_check(0, 1), [])[0].severity == "error"


def test_state_dict_round_trip():
    rules = AlertRules(watch_tokens=["zorblax"], watch_top_k=2, invariance_pairs=[("he", "she")], min_checks=2)
    rules.evaluate(watch_check(0, 0.5), [])
    rules.evaluate(watch_check(1, 0.5), [])
    state = json.loads(json.dumps(rules.state_dict(), allow_nan=False))
    resumed = AlertRules(watch_tokens=["zorblax"], watch_top_k=2, invariance_pairs=[("he", "she")], min_checks=2)
    resumed.load_state_dict(state)
    assert [a.to_dict() for a in resumed.alerts] == [a.to_dict() for a in rules.alerts]
    assert resumed.state_dict() == rules.state_dict()
    assert resumed.evaluate(watch_check(2, 0.5), []) == []
    assert len(resumed.alerts) == 1 and resumed.alerts[0].last_check == 2
    assert isinstance(resumed.alerts[0], Alert)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"watch_tokens": [""]}, "non-empty"), ({"watch_tokens": [3]}, "non-empty"),
     ({"watch_top_k": 0}, "watch_top_k"),
     ({"watch_probe_fraction": 1.5}, "watch_probe_fraction"), ({"invariance_pairs": [("p0",)]}, "two probe ids"),
     ({"invariance_pairs": ["p0p1"]}, "two probe ids"), ({"invariance_pairs": [("p0", "p0")]}, "same probe"),
     ({"max_unconverged_fraction": -0.1}, "max_unconverged_fraction"), ({"min_checks": 0}, "min_checks"),
     ({"shortcut_min_score": 0.8, "shortcut_min_score_partial": 0.6}, "at least"),
     ({"shortcut_min_score_pure": 0.6}, "at most"), ({"pure_purity_lower": 0}, "pure_purity_lower"),
     ({"pure_max_p": 1.5}, "pure_max_p"), ({"health_min_probes": True}, "health_min_probes"),
     ({"severities": {"shortcut": "fatal"}}, "severity"), ({"severities": {"nope": "info"}}, "unknown rule")],
)
def test_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlertRules(**kwargs)


def test_validate_against_probe_set(caplog):
    probes = ProbeSet([{"id": "he", "text": "He is a nurse."}, {"id": "she", "text": "She is a nurse."}])
    with pytest.raises(ValueError, match="'her'"):
        AlertRules(invariance_pairs=[("he", "her")]).validate(probes)
    with caplog.at_level(logging.WARNING, logger="explain_callbacks.detection.alerts"):
        AlertRules(watch_tokens=["NURSE", "zorblax"], invariance_pairs=[("he", "she")]).validate(probes)
    assert "'zorblax' occurs in no probe" in caplog.text
    assert "nurse" not in caplog.text


def test_empty_state_means_no_alerts():
    rules = AlertRules(watch_tokens=["zorblax"], watch_top_k=2)
    rules.evaluate(watch_check(0, 0.5), [])
    rules.load_state_dict({})
    assert rules.alerts == []
    with pytest.raises(ValueError, match="not an AlertRules state"):
        rules.load_state_dict({"history": []})
