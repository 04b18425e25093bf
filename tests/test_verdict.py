"""The verdict that leads the report and ``show``, and candidate evidence said in sentences."""

from __future__ import annotations

import re
from html import unescape

import pytest
from helpers.rundir_factory import SCRIPT
from helpers.verdict_runs import (
    LABELS,
    candidate,
    clean_run,
    convergence_info,
    shortcut_alert,
    shortcut_candidates,
    shortcut_run,
)

from explain_callbacks.detection.verdict import candidate_sentences, candidate_summary, verdict
from explain_callbacks.run.readers import load_summary
from explain_callbacks.run.report import render_report


def _summary(**overrides):
    base = {"checks": [{"check_index": 0, "step": 100}, {"check_index": 1, "step": 200}], "n_probes": 64,
            "alerts": [], "candidates": [], "config": {"labels": LABELS}}
    base.update(overrides)
    return base


def test_shortcut_verdict_says_what_the_counterfactual_and_the_training_data_showed():
    summary = _summary(alerts=[shortcut_alert().to_dict()], candidates=shortcut_candidates())
    assert verdict(summary) == [
        "The model may be using 'medboard' as a shortcut: inserting it into 7 probes predicted as another class "
        "flipped 4 to 'positive'; it appears in 'positive' training examples only (89 of 89)."
    ]


def test_verdict_counts_the_other_active_alerts_and_ignores_info_for_the_lead():
    second = shortcut_alert("sent from")
    summary = _summary(alerts=[convergence_info().to_dict(), shortcut_alert().to_dict(), second.to_dict()])
    lead, more = verdict(summary)
    assert lead.startswith("The model may be using 'medboard'")
    assert more == "1 more alert is active; see the alerts below."


def test_verdict_of_a_clean_run_says_what_was_checked():
    summary = _summary(candidates=shortcut_candidates()[:2])
    assert verdict(summary) == [
        "No alert: 2 checks of 64 probes from step 100 to 200 found no shortcut, watched word or broken "
        "invariance to flag.",
        "The strongest shortcut candidate, 'wonderful' (score 0.31), stayed below the alert threshold.",
    ]
    no_stats = _summary(candidates=[candidate("wonderful", 0.4, basis=["attribution"])])
    assert verdict(no_stats)[1] == (
        "Shortcut discovery had no training statistics, so it ranked words (first 'wonderful') but could not alert."
    )
    assert verdict(_summary()) == [verdict(summary)[0]]
    assert verdict(_summary(checks=[])) == ["The run recorded no checks, so nothing was examined yet."]


def test_verdict_of_alerts_that_cleared():
    alert = shortcut_alert()
    alert.active = False
    (sentence,) = verdict(_summary(alerts=[alert.to_dict()]))
    assert sentence.startswith("No alert is active at the last check, but 1 alert fired during training and cleared")
    assert "'medboard'" in sentence


def test_other_rules_lead_with_their_message():
    watch = {"rule": "watch_token", "severity": "warning", "token": "medboard", "active": True,
             "message": "watched token 'medboard' is in the top 5 words of 80% of the 5 probes containing it."}
    failed = {"rule": "check_failed", "severity": "error", "token": None, "active": True,
              "message": "step 40: RuntimeError: out of memory"}
    assert verdict(_summary(alerts=[watch]))[0].startswith("The model leans on the watched word 'medboard': watched")
    assert verdict(_summary(alerts=[watch, failed]))[0] == "Check failed: step 40: RuntimeError: out of memory."


@pytest.mark.parametrize("evidence", [None, {}, {"basis": None}, {"n_insertion_probes": None, "flip_rate_insertion": 0.5},
                                      {"train_count": "many", "train_purity": None}, "not a mapping"])
def test_candidate_sentences_read_missing_or_odd_evidence(evidence):
    sentences = candidate_sentences({"word": "x", "evidence": evidence})
    assert sentences and all(s.endswith(".") for s in sentences)
    verdict(_summary(alerts=[{"rule": "shortcut", "severity": "warning", "token": "x", "active": True,
                              "message": "m", "evidence": evidence}]))


def test_candidate_sentences_in_full():
    planted = shortcut_candidates()[2]
    assert candidate_sentences(planted, LABELS) == [
        "Inserting it into 7 probes predicted as another class flipped 4 to 'positive'.",
        "Removing it from 3 probes changed 3 predictions.",
        "It appears in 'positive' training examples only (89 of 89).",
        "It carries the prediction in 2 probes the model gets wrong.",
        "In the 3 probes that contain it, it takes a mean share of 0.41 and is the top word in 2 of them.",
    ]
    assert candidate_summary(planted, LABELS) == (
        "Inserting it into 7 probes predicted as another class flipped 4 to 'positive'. "
        "It appears in 'positive' training examples only (89 of 89)."
    )
    genuine = candidate("great", 0.2, train_count=140, train_purity=0.81, purity_label=1, basis=["attribution"])
    assert candidate_sentences(genuine, LABELS)[0] == "113 of the 140 training examples that contain it are labelled 'positive'."
    assert candidate_sentences(genuine, LABELS)[-1] == "No training statistics were available, so its label purity is unknown."
    assert "'label-7'" in candidate_sentences(candidate("odd", 0.1, purity_label="label-7"))[0]


def _text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_report_leads_with_the_verdict_then_alerts_then_five_candidates(tmp_path):
    run = shortcut_run(tmp_path / "run")
    html = render_report(run).read_text(encoding="utf-8")
    text = _text(html)
    lead = verdict(load_summary(run), None)[0]
    assert lead in text
    assert text.index(lead) < text.index("Alerts") < text.index("Shortcut candidates") < text.index("Drift of the")
    stories = re.findall(r'<li class="card[^"]*">', html)
    assert len(stories) == 5
    # the planted word stands out among the five: alerted, its evidence in sentences
    first_card = html[html.index('<ol class="candidates">'):].split("</li>")[0]
    assert 'class="card alert-warning"' in first_card and "#3" in first_card and "medboard" in first_card
    assert "alerted" in first_card
    assert "Inserting it into 7 probes predicted as another class flipped 4 to &#39;positive&#39;." in html
    # the raw figures are folded, all of them still there
    raw = html[html.index("All 20 candidates with their raw evidence"):]
    raw = raw[: raw.index("</details>")]
    assert all(f"<code>{c['word']}</code>" in raw for c in shortcut_candidates())
    assert "n_insertion_probes" in raw and "purity_lower" in raw
    assert "Mean |share|" in html


def test_clean_report_verdict(tmp_path):
    html = render_report(clean_run(tmp_path / "clean")).read_text(encoding="utf-8")
    assert 'class="verdict verdict-clean"' in html
    assert "No alert: 3 checks of 3 probes from step 10 to 30 found no shortcut" in _text(html)


def test_verdict_escapes_the_word(tmp_path):
    html = render_report(shortcut_run(tmp_path / "hostile", word=SCRIPT)).read_text(encoding="utf-8")
    verdict_html = re.search(r'<p class="verdict[^>]*>(.*?)</p>', html, re.S).group(1)
    assert "<script>" not in verdict_html and "&lt;script&gt;alert(1)&lt;/script&gt;" in verdict_html


def test_sentences_read_for_none_all_and_one():
    evidence = {"n_probes": 1, "mean_share": 0.7, "top1_rate": 1.0, "flip_rate_insertion": 1.0, "n_insertion_probes": 8,
                "purity_label": 1, "flip_rate_removal": 0.0, "n_removal_probes": 1}
    assert candidate_sentences({"evidence": evidence}, LABELS) == [
        "Inserting it into 8 probes predicted as another class flipped all 8 to 'positive'.",
        "Removing it from 1 probe changed no prediction.",
        "In the one probe that contains it, it takes a share of 0.70 and is its top word.",
    ]
    none = {"flip_rate_insertion": 0.0, "n_insertion_probes": 8, "purity_label": 0}
    assert candidate_sentences({"evidence": none}, LABELS)[0] == (
        "Inserting it into 8 probes predicted as another class flipped none of them to 'negative'."
    )


def test_candidate_sentences_tell_the_insertion_effect_and_the_purity_test():
    planted = candidate("zorblax", 0.9, train_count=13, train_purity=1.0, purity_label=1,
                        purity_reference=0.74, purity_p_value=0.023, insertion_effect=0.124,
                        insertion_effect_p=0.00025, n_effect_probes=16,
                        basis=["attribution", "training", "counterfactual"])
    sentences = candidate_sentences(planted, LABELS)
    assert ("Inserting it moved the probability of 'positive' by +0.12 on average in 16 probes "
            "predicted otherwise, beyond neutral control words (p = 0.00025).") in sentences
    assert ("It appears in 'positive' training examples only (13 of 13), purer than the purest "
            "well-measured class word of the data (74%; p = 0.023).") in sentences
    genuine = candidate("unfunny", 0.9, train_count=19, train_purity=1.0, purity_label=0,
                        purity_reference=0.95, purity_p_value=0.4)
    assert "no purer than the purest well-measured class word of the data (95%; p = 0.4)" in " ".join(
        candidate_sentences(genuine, LABELS))
