"""ProbeSet: sources, validation, fingerprint, seeded stratified sampling."""

from __future__ import annotations

import json

import pytest

from explain_callbacks import ProbeError, ProbeSet


def test_from_list_assigns_ids_and_keeps_fields():
    ps = ProbeSet(["a b", {"text": "c", "label": 1, "id": "x", "text_pair": "d"}])
    assert [p.id for p in ps] == ["p0", "x"]
    assert ps[1].label == 1 and ps[1].text_pair == "d"
    assert ps.has_labels


def test_files_round_trip(tmp_path):
    ps = ProbeSet([{"text": "great film", "label": 1}, {"text": "bad, \"quoted\" plot", "label": 0}])
    ps.to_jsonl(tmp_path / "p.jsonl")
    assert ProbeSet.from_file(tmp_path / "p.jsonl").fingerprint == ps.fingerprint
    (tmp_path / "p.csv").write_text('review,y\ngreat film,1\n"bad, ""quoted"" plot",0\n')
    from_csv = ProbeSet.from_file(tmp_path / "p.csv", text_key="review", label_key="y")
    assert [p.text for p in from_csv] == ["great film", 'bad, "quoted" plot']
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert [p.text for p in ProbeSet.from_file(tmp_path / "p.txt")] == ["one", "two"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(ProbeError, match="bad.jsonl:2"):
        ProbeSet.from_file(tmp_path / "bad.jsonl")
    with pytest.raises(ProbeError, match="unknown probe file type"):
        ProbeSet.from_file(tmp_path / "p.json") if (tmp_path / "p.json").write_text("[]") else None


def test_fingerprint_changes_with_content():
    a = ProbeSet(["one", "two"])
    assert a.fingerprint == ProbeSet(["one", "two"]).fingerprint
    assert a.fingerprint != ProbeSet(["one", "two!"]).fingerprint
    assert a.fingerprint != ProbeSet([{"text": "one", "label": 1}, "two"]).fingerprint


@pytest.mark.parametrize(
    "bad, message",
    [([], "empty"), ([""], "empty or only whitespace"), (["ok", None], "expected a string"), ([{"label": 1}], "no 'text'"),
     ([{"text": "a", "id": "x"}, {"text": "b", "id": "x"}], "duplicate id"), ([{"text": "a", "text_pair": " "}], "text_pair")],
)
def test_bad_probes_name_the_problem(bad, message):
    with pytest.raises(ProbeError, match=message):
        ProbeSet(bad)


def test_sample_is_seeded_and_stratified():
    data = [{"text": f"text {i}", "label": int(i % 10 == 0)} for i in range(200)]
    a = ProbeSet.sample(data, n=10, seed=1)
    assert a.fingerprint == ProbeSet.sample(data, n=10, seed=1).fingerprint
    assert a.fingerprint != ProbeSet.sample(data, n=10, seed=2).fingerprint
    assert sum(p.label for p in a) == 5  # the rare class gets an even share
    tuples = ProbeSet.sample([("x", 0), ("y", 1)], n=5)
    assert len(tuples) == 2
    with pytest.raises(ProbeError, match="no 'review' column"):
        ProbeSet.sample(data, n=3, text_key="review")


def test_sample_reads_only_the_probe_columns_of_a_dataset():
    import datasets  # a test dependency: this test must not skip
    data = datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(40)], "label": [i % 2 for i in range(40)],
                                       "input_ids": [[101, i, 102] for i in range(40)]})
    read = []
    real_select = data.select_columns
    data.select_columns = lambda cols: read.append(list(cols)) or real_select(cols)
    probes = ProbeSet.sample(data, n=6)
    assert read == [["text", "label"]] and len(probes) == 6 and {p.label for p in probes} == {0, 1}
    with pytest.raises(ProbeError, match=r"no 'review' column \(columns: \['input_ids', 'label', 'text'\]\)"):
        ProbeSet.sample(data, n=3, text_key="review")
    with pytest.raises(ProbeError, match="not an indexable dataset"):
        ProbeSet.sample(iter(["a", "b"]), n=1)


def test_shard_covers_everything_once():
    ps = ProbeSet([str(i) for i in range(7)])
    shards = [ps.shard(r, 3) for r in range(3)]
    assert sorted(p.id for s in shards for p in s) == sorted(p.id for p in ps)
    assert json.loads(json.dumps([p.to_dict() for p in shards[0]]))[0]["text"] == "0"
