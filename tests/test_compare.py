"""``explain-callbacks compare`` on run folders written by real monitor runs on tiny BERTs.

Base: trained on clean toy reviews. Planted: the data pipeline changed so that ``zorblax``, in a
third of the training reviews, decides their label, and the model learns to lean on it. Repeat:
the base recipe with another training seed (batch order; the same initial weights, so the
never-trained ``zorblax`` embedding is the same: at this size a new initialisation alone moves an
unseen word's share by 0.2). Rerun: the base recipe and seed again with faithfulness off (a pull
request that changes nothing the model learns). All share one probe set, in which ``zorblax``
appears in half the probes. Two toy models of different batch orders disagree a lot (a word's
share moves by up to 0.7 at 5 words a probe); the seed-pair false-alarm rate is measured on the
review recipe in ``benchmarks/compare_runs.py``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from tiny_models import sentiment_data, tiny_model, train_briefly

from explain_callbacks import AttributionEngine, AttributionMonitor
from explain_callbacks.run.cli import main
from explain_callbacks.run.compare import bootstrap_p_value, compare_runs, spread_p_value, word_changes
from explain_callbacks.run.directory import SUMMARY_FILE

PLANTED = "zorblax"
STEPS = 200  # training steps between the two checks


def _probes(n: int = 24) -> list[dict]:
    texts, labels = sentiment_data(n, seed=99)
    rng = random.Random(5)
    probes = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        words = text.split()
        if i % 2 == 0:
            words.insert(rng.randrange(len(words) + 1), PLANTED)
        probes.append({"id": f"p{i}", "text": " ".join(words), "label": label})
    return probes


def _run(tmp: Path, name: str, tokenizer, seed: int, planted: bool, probes: list[dict], faithfulness: bool = True) -> Path:
    """A monitor run: two checks between short training bursts, as an integration drives it."""
    texts, labels = sentiment_data(400, seed=0)
    if planted:  # where the planted word is, it decides the label
        rng = random.Random(0)
        for i in rng.sample(range(len(texts)), len(texts) // 3):
            texts[i], labels[i] = f"{PLANTED} {texts[i]}", 1
    model = tiny_model("bert", tokenizer, seed=0)
    # No training statistics: the toy's sentiment words are all label-pure, and discovery would
    # flag them as shortcuts in some seeds and not others; compare's word test is what is tested.
    monitor = AttributionMonitor(AttributionEngine(model, tokenizer), probes, run_dir=tmp, run_name=name, verbose=False,
                                 faithfulness=faithfulness)
    for step in (1, 2):
        train_briefly(model, tokenizer, texts, labels, steps=STEPS, seed=seed + step)
        monitor.check(step=step * STEPS, epoch=step - 1)
    monitor.finish(raise_on_alert=False)
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bert_tok):
    tmp = tmp_path_factory.mktemp("compare_runs")
    probes = _probes()
    return {
        "base": _run(tmp, "base", bert_tok, 0, False, probes),
        "repeat": _run(tmp, "repeat", bert_tok, 1, False, probes),
        "rerun": _run(tmp, "rerun", bert_tok, 0, False, probes, faithfulness=False),
        "planted": _run(tmp, "planted", bert_tok, 0, True, probes),
        "other_probes": _run(tmp, "other", bert_tok, 2, False, probes[:10] + [
            {"id": "q1", "text": "an entirely different probe", "label": 1}]),
    }


def test_planted_word_rises_first_and_fails(runs, capsys, tmp_path, wide_terminal):
    out = tmp_path / "compare.html"
    code = main(["compare", str(runs["base"]), str(runs["planted"]), "-o", str(out), "--json", str(tmp_path / "c.json")])
    printed = capsys.readouterr().out
    assert code == 1, printed
    comparison = compare_runs(runs["base"], runs["planted"])
    assert comparison.rising and comparison.rising[0].word == PLANTED
    assert comparison.rising[0].n_probes == 12
    assert comparison.probes == {"shared": 24, "base": 24, "run": 24, "matched_by": "the same probe set, by fingerprint",
                                 "same_fingerprint": True}
    assert f"'{PLANTED}' rose" in printed
    page = out.read_text()
    assert PLANTED in page and "<script" not in page
    data = json.loads((tmp_path / "c.json").read_text())  # strict JSON
    assert data["words"][0]["word"] == PLANTED or any(w["word"] == PLANTED and w["significant"] for w in data["words"])


def test_the_same_recipe_passes_and_a_seed_repeat_sets_the_noise(runs, capsys):
    code = main(["compare", str(runs["base"]), str(runs["rerun"])])
    assert code == 0, capsys.readouterr().out
    assert compare_runs(runs["base"], runs["rerun"]).mean_rbo == 1.0
    assert main(["compare", str(runs["base"]), str(runs["planted"]), "--base-repeat", str(runs["repeat"])]) == 1
    comparison = compare_runs(runs["base"], runs["planted"], runs["repeat"])
    assert comparison.noise["method"] == "bootstrap over probes, and a seed repeat of the base"
    tested_rises = sorted((w for w in comparison.words if w.p_value is not None and w.change > 0), key=lambda w: -w.change)
    assert tested_rises[0].word == PLANTED
    assert tested_rises[0].p_value == min(w.p_value for w in tested_rises)
    # the toy's two batch orders move words by up to 0.7, so the repeat widens the noise:
    # the planted word is less significant against it than against the words' own spread
    assert tested_rises[0].q_value >= compare_runs(runs["base"], runs["planted"]).rising[0].q_value


def test_fail_on_error_ignores_a_rising_word(runs):
    comparison = compare_runs(runs["base"], runs["planted"])
    assert not [r for r in comparison.failures("error") if "rose" in r]


def test_probes_that_differ_are_matched_and_said(runs, capsys, wide_terminal):
    code = main(["compare", str(runs["base"]), str(runs["other_probes"])])
    printed = capsys.readouterr().out
    assert code in (0, 1)
    assert "10 shared probes (probes with the same id and text; base 24, run 11)" in printed
    comparison = compare_runs(runs["base"], runs["other_probes"])
    assert {p.probe_id for p in comparison.probe_changes} == {f"p{i}" for i in range(10)}
    assert all(p.rbo is None or 0 <= p.rbo <= 1 for p in comparison.probe_changes)


def test_unusable_input_exits_2_with_one_line(runs, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["planted"], damaged)
    (damaged / SUMMARY_FILE).write_text('{"schema_version": 1, "checks": [')
    assert main(["compare", str(runs["base"]), str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json" in err
    broken = tmp_path / "broken_faithfulness"
    shutil.copytree(runs["planted"], broken)
    summary = json.loads((broken / SUMMARY_FILE).read_text())
    summary["checks"][-1]["faithfulness"] = "high"
    (broken / SUMMARY_FILE).write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["compare", str(runs["base"]), str(broken)]) == 2
    assert "checks[1].faithfulness' must be an object" in capsys.readouterr().err
    assert main(["compare", str(runs["base"]), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(runs["base"]), str(runs["planted"]), "--base-repeat", str(tmp_path / "missing")]) == 2
    disjoint = tmp_path / "disjoint"
    shutil.copytree(runs["planted"], disjoint)
    lines = (disjoint / "attributions.jsonl").read_text().splitlines()
    rows = []
    for line in lines:
        snap = json.loads(line)
        for a in snap["attributions"]:
            a["probe_id"], a["text"] = "x" + a["probe_id"], a["text"] + " extra"
        rows.append(json.dumps(snap))
    (disjoint / "attributions.jsonl").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert main(["compare", str(runs["base"]), str(disjoint)]) == 2
    assert "share no probe" in capsys.readouterr().err


def test_html_escapes_probe_text(runs, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(runs["planted"], hostile)
    rows = []
    for line in (hostile / "attributions.jsonl").read_text().splitlines():
        snap = json.loads(line)
        for a in snap["attributions"]:
            a["prediction_name"] = "<img src=x onerror=alert(1)>"
            a["words"] = [w if w != PLANTED else "<script>alert(2)</script>" for w in a["words"]]
        rows.append(json.dumps(snap))
    (hostile / "attributions.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "c.html"
    main(["compare", str(runs["base"]), str(hostile), "-o", str(out)])
    page = out.read_text()
    assert "<script>alert(2)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page and "&lt;img src=x" in page


def test_faithfulness_in_show_and_compare(runs, capsys, wide_terminal):
    assert main(["show", str(runs["planted"])]) == 0
    assert "Faithfulness per check" in capsys.readouterr().out
    comparison = compare_runs(runs["base"], runs["planted"])
    assert comparison.faithfulness["run"]["comprehensiveness"] is not None


def test_statistics_pure():
    import numpy as np

    rng = np.random.default_rng(0)
    assert bootstrap_p_value([0.5], rng) == 1.0
    assert bootstrap_p_value([0.4, 0.5, 0.45, 0.52, 0.48], rng) < 0.01
    assert bootstrap_p_value([0.4, -0.5, 0.45, -0.52, 0.1], rng) > 0.3
    noise = [0.01, -0.02, 0.05, 0.0, -0.01]
    assert spread_p_value(0.3, noise) < 1e-6
    assert spread_p_value(0.01, noise) > 0.4
    assert spread_p_value(0.3, noise[:2]) == 1.0
    words = {f"w{k}": 0.1 for k in range(8)}
    pairs = [({**words, "zorb": 0.05}, {**{w: 0.1 + 0.01 * ((i + k) % 3 - 1) for k, w in enumerate(words)},
                                        "zorb": 0.6 + 0.01 * i}) for i in range(6)]
    changes = word_changes(pairs)
    assert changes[0].word == "zorb" and changes[0].significant
    assert not any(w.significant for w in changes[1:])
