"""The public surface: documented import paths, the version, and a core that imports no training
framework."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import explain_callbacks

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(explain_callbacks.__path__, "explain_callbacks.")
    if not m.name.startswith("explain_callbacks.integrations") and m.name != "explain_callbacks.__main__"
)


def test_public_names():
    for name in ("ProbeSet", "AttributionEngine", "AttributionMonitor", "AttributionAlertError", "ProbeAttribution"):
        assert hasattr(explain_callbacks, name), name


def test_the_folders_say_the_architecture():
    rooms = {name.split(".")[1] for name in CORE if name.count(".") >= 2}
    assert {"attribution", "detection", "run"} <= rooms
    assert "explain_callbacks.synthetic" not in CORE  # demo data lives with the examples


def test_core_imports_no_training_framework():
    code = (
        f"import importlib, sys\nfor name in {CORE!r}: importlib.import_module(name)\n"
        "banned = ('lightning', 'pytorch_lightning', 'flair', 'wandb', 'transformers.trainer', 'tensorboard')\n"
        "print(' '.join(m for m in banned if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_documented_import_paths_still_work():
    from explain_callbacks.report import load_run
    from explain_callbacks.run.report import load_run as moved
    from explain_callbacks.run.sinks import RunDirectorySink as moved_sink
    from explain_callbacks.sinks import RunDirectorySink, TensorBoardSink  # noqa: F401

    assert load_run is moved and RunDirectorySink is moved_sink
    import explain_callbacks.integrations

    assert explain_callbacks.integrations.__name__ == "explain_callbacks.integrations"


def test_version_in_the_package_and_the_command_line():
    from importlib.metadata import version

    assert explain_callbacks.__version__ == version("explain-callbacks")
    done = subprocess.run([sys.executable, "-m", "explain_callbacks", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"explain-callbacks {explain_callbacks.__version__}"


def _package_imports() -> dict[str, set[str]]:
    """Each package module and the package modules it imports (lazy imports included)."""
    import ast
    from pathlib import Path

    root = Path(explain_callbacks.__file__).parent
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges[name] = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("explain_callbacks")
        }
    return edges


def test_no_import_runs_back_up_and_no_cycle():
    rank = {"attribution": 0, "detection": 1, "run": 2, "monitor": 3, "options": 3, "schedule": 3, "integrations": 4}
    edges = _package_imports()

    def room(name):
        return rank.get(name.split(".")[1]) if name.count(".") else None

    upward = [(a, b) for a, bs in edges.items() for b in bs if None not in (room(a), room(b)) and room(b) > room(a)]
    assert upward == []

    def reaches(start, goal, seen):
        return any(b == goal or (b not in seen and not seen.add(b) and reaches(b, goal, seen)) for b in edges.get(start, ()))

    assert [a for a in edges if reaches(a, a, set())] == []
