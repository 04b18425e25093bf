"""Run directories shaped like the runs a user meets: a planted forum signature the model
learned ("medboard", 20 candidates behind it, evidence as discovery writes it) and a clean run.

Built on :func:`rundir_factory.write_run_dir`, so texts and words still carry HTML and rich-markup
attacks; the shortcut word itself is hostile in one variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from explain_callbacks.attribution.records import Alert

from .rundir_factory import write_run_dir

LABELS = ["negative", "positive"]


def candidate(word: str, score: float, **evidence: Any) -> dict[str, Any]:
    base = {
        "mean_share": 0.12, "top1_rate": 0.1, "n_probes": 6, "dominance": 0.2, "train_count": 140,
        "train_purity": 0.81, "purity_lower": 0.77, "purity_label": 1, "rarity": 0.4,
        "flip_rate_removal": None, "flip_rate_insertion": None, "n_removal_probes": 0, "n_insertion_probes": 0,
        "basis": ["attribution", "training"],
    }
    base.update(evidence)
    return {"word": word, "score": score, "evidence": base}


def shortcut_candidates(word: str = "medboard") -> list[dict[str, Any]]:
    planted = candidate(
        word, 0.83, mean_share=0.41, top1_rate=0.67, n_probes=3, dominance=0.74, train_count=89,
        train_purity=1.0, purity_lower=0.98, flip_rate_insertion=4 / 7, n_insertion_probes=7,
        flip_rate_removal=1.0, n_removal_probes=3, basis=["attribution", "training", "counterfactual"],
        wrong_prediction_dominance=0.6, n_wrong_probes=2,
    )
    genuine = [candidate(w, 0.31 - 0.012 * i, purity_label=i % 2) for i, w in enumerate(
        ["wonderful", "awful", "helped", "useless", "worse", "relief", "nausea", "great", "terrible", "miracle",
         "dizzy", "recommend", "insomnia", "amazing", "headache", "effective", "horrible", "sent from", "pain"])]
    genuine[-2]["evidence"]["phrase"] = True  # discovery marks adjacent pairs
    # ranked as discovery writes them: the planted word 3rd, behind two genuine words
    return genuine[:2] + [planted] + genuine[2:]


def shortcut_alert(word: str = "medboard") -> Alert:
    evidence = dict(shortcut_candidates(word)[2]["evidence"], score=0.83, threshold=0.15)
    return Alert(
        rule="shortcut", severity="warning", key=f"shortcut:{word}", token=word, first_step=20, first_epoch=1,
        first_check=1, last_step=30, last_epoch=2, last_check=2, active=True, evidence=evidence,
        message=f"the model may be using {word!r} as a shortcut (score 0.83, threshold 0.15).",
    )


def convergence_info(active: bool = True) -> Alert:
    return Alert(rule="convergence", severity="info", key="convergence", first_step=10, first_check=0, active=active,
                 message="31% of the probe attributions did not converge (limit 20%); raise n_steps or max_steps.",
                 evidence={"n_unconverged": 1, "n_probes": 3, "fraction": 0.31, "limit": 0.2})


def shortcut_run(path: Path, word: str = "medboard") -> Path:
    config = {"every_n_epochs": 1, "top_k": 5, "labels": LABELS}
    return write_run_dir(path, n_checks=4, alerts=[shortcut_alert(word), convergence_info(False)],
                         candidates=shortcut_candidates(word), config=config)


def clean_run(path: Path) -> Path:
    candidates = [c for c in shortcut_candidates() if c["word"] != "medboard"]
    return write_run_dir(path, n_checks=3, alerts=[], candidates=candidates,
                         config={"every_n_epochs": 1, "top_k": 5, "labels": LABELS})
