"""A run directory is input from outside: the CLI and the report must take any damage to it
with exit 2 and one line (never a traceback, never exit 1, which CI reads as "alerts found"),
and no text in it may act on the terminal or hide in the page."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
from helpers.rundir_factory import make_alert, write_run_dir

from explain_callbacks.run.cli import main
from explain_callbacks.run.report import render_report
from explain_callbacks.run.safe_text import visible

DEEP = "__deep__"
ODD_VALUES = [
    "x", "", "\x1b[2J", [], [1], ["a", None], {}, {"a": 1}, {"step": "3"}, None, True, False, 0, -1, 1.5,
    1e308, 2**70, "NaN", DEEP,
]


def _paths(node, prefix=()):
    """Every (path, value) in a JSON tree, the root included."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _mutate(summary: dict, rng: random.Random) -> object:
    """One seeded change: a value replaced by an odd one, a key dropped, or an object wrapped."""
    tree = copy.deepcopy(summary)
    path, _ = rng.choice(list(_paths(tree)))
    if not path:
        return rng.choice([[tree], "summary", 3, None, {"schema_version": 1, "checks": DEEP}])
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.25:
        parent[path[-1]] = [parent[path[-1]]]
    else:
        parent[path[-1]] = rng.choice(ODD_VALUES)
    return tree


def _write(path: Path, data: object, depth: int) -> None:
    text = json.dumps(data, ensure_ascii=False)
    path.write_text(text.replace(json.dumps(DEEP), "[" * depth + "]" * depth), encoding="utf-8")


def _assert_usable_or_one_line(code: int, out: str, err: str, where: str) -> None:
    assert "unexpected" not in err, f"{where}: {err}"  # the CLI's last-resort catch: a gap in validation
    assert code in (0, 1, 2), where
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("explain-callbacks: error: "), f"{where}: {err!r}"
    else:
        assert err == "", f"{where}: {err!r}"


def _conforms(summary: object) -> bool:
    """Whether a summary matches the published schema (``summary.schema.json``, read by the
    jsonschema library itself) and the schema version this package reads."""
    from jsonschema import Draft202012Validator

    from explain_callbacks.attribution.records import SCHEMA_VERSION
    from explain_callbacks.run.readers import SUMMARY_SCHEMA_FILE

    schema = json.loads(SUMMARY_SCHEMA_FILE.read_text(encoding="utf-8"))
    if not isinstance(summary, dict) or type(summary.get("schema_version")) is not int:
        return False
    return summary["schema_version"] == SCHEMA_VERSION and Draft202012Validator(schema).is_valid(summary)


def _fails_the_gate(summary: dict) -> bool:
    """What ``check`` (default ``--fail-on warning``) promises: a warning or error alert, cleared
    or not, or any failed check, lost write or failed sink."""
    return any(a.get("severity") in ("warning", "error") for a in summary.get("alerts") or []) or any(
        summary.get(name) for name in ("failed_checks", "write_failures", "sink_errors"))


def test_mutated_summaries_exit_2_exactly_when_they_break_the_schema(tmp_path, capsys, monkeypatch):
    """A file that does not match the schema is exit 2 with one line; one that does is judged
    (0 or 1, as its alerts say). It once let 6 of 108 calls through (``alerts[0].evidence`` a
    string: ``show`` exit 0, ``check`` exit 1)."""
    monkeypatch.setenv("COLUMNS", "120")
    run_path = write_run_dir(
        tmp_path / "fuzz", n_checks=2, alerts=[make_alert("warning"), make_alert("error", active=False, rule="r")],
        failed_checks=["step 3: RuntimeError: boom"], sink_errors=[], write_failures=[],
    )
    original = json.loads((run_path / "summary.json").read_text(encoding="utf-8"))
    codes = []
    for seed in range(300):
        rng = random.Random(seed)
        mutated = _mutate(original, rng)
        depth = rng.choice([5, 50, 100_000])
        _write(run_path / "summary.json", mutated, depth=depth)
        try:
            on_disk = json.loads((run_path / "summary.json").read_text(encoding="utf-8"))
        except RecursionError:  # 100,000 levels deep: no JSON reader takes it
            on_disk = None
        usable = on_disk is not None and _conforms(on_disk)
        for command in ("check", "show") if seed % 50 else ("check", "show", "report"):
            code = main([command, str(run_path)])
            captured = capsys.readouterr()
            where = f"seed {seed} {command}"
            _assert_usable_or_one_line(code, captured.out, captured.err, where)
            if not usable:
                assert code == 2, f"{where}: a summary that breaks the schema was read"
            elif command == "check":
                assert code == (1 if _fails_the_gate(on_disk) else 0), where
            else:
                assert code == 0, where
            codes.append(code)
    assert codes.count(2) > 50 and codes.count(1) > 50  # the mutations hit both sides


def test_mutated_attribution_lines_exit_2_with_one_line(tmp_path, capsys):
    run_path = write_run_dir(tmp_path / "fuzz", n_checks=2)
    lines = (run_path / "attributions.jsonl").read_text(encoding="utf-8").splitlines()
    original = json.loads(lines[0])
    for seed in range(12):
        rng = random.Random(seed)
        mutated = _mutate(original, rng)
        text = json.dumps(mutated, ensure_ascii=False).replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)
        (run_path / "attributions.jsonl").write_text(text + "\n" + lines[1] + "\n", encoding="utf-8")
        code = main(["report", str(run_path)])
        captured = capsys.readouterr()
        _assert_usable_or_one_line(code, "", captured.err, f"seed {seed}")


# --------------------------------------------------------------------------- terminal and page

ESCAPES = "\x1b[2J\x1b[31mred\x1b]0;owned\x07\x9b1m"
HIDDEN = "admin\u202etxt.exe\u200b\u2066x\u2069\ufeff"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u200b", "\u2066", "\u2069", "\ufeff")


def _hostile_run(tmp_path: Path) -> Path:
    alert = make_alert("warning")
    alert.token = ESCAPES
    alert.message = f"leans on {HIDDEN}"
    run_path = write_run_dir(tmp_path / "hostile", n_checks=2, alerts=[alert], run_name=ESCAPES + HIDDEN)
    summary = json.loads((run_path / "summary.json").read_text(encoding="utf-8"))
    summary["checks"][-1]["top_tokens"][0]["word"] = ESCAPES
    summary["candidates"][0]["word"] = HIDDEN
    (run_path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    lines = (run_path / "attributions.jsonl").read_text(encoding="utf-8").splitlines()
    snapshot = json.loads(lines[-1])
    snapshot["attributions"][0]["words"][0] = HIDDEN + ESCAPES
    snapshot["attributions"][0]["text"] = HIDDEN
    lines[-1] = json.dumps(snapshot)
    (run_path / "attributions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_path


@pytest.mark.parametrize("command", ["show", "check"])
def test_escape_sequences_never_reach_the_terminal(tmp_path, capsys, command, wide_terminal):
    run_path = _hostile_run(tmp_path)
    main([command, str(run_path)])
    out = capsys.readouterr().out
    assert not [c for c in RAW if c in out], out
    assert "[U+001B][2J" in out and "[U+202E]" in out


def test_bidi_and_zero_width_characters_are_visible_in_the_report(tmp_path):
    html = render_report(_hostile_run(tmp_path)).read_text(encoding="utf-8")
    assert not [c for c in RAW if c in html]
    assert "admin[U+202E]txt.exe[U+200B]" in html and "[U+001B][2J" in html


def test_visible_keeps_ordinary_text():
    text = "naïve café — 日本語 emoji 🙂 tab\tand\nnewline"
    assert visible(text) == text
    assert visible("a\x1bb\u202ec") == "a[U+001B]b[U+202E]c"


def test_the_schema_knows_the_one_severity_ordering():
    from explain_callbacks.attribution.records import SEVERITY_ORDER
    from explain_callbacks.run.readers import SUMMARY_SCHEMA_FILE

    schema = json.loads(SUMMARY_SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$defs"]["alert"]["properties"]["severity"]["enum"] == list(SEVERITY_ORDER)
