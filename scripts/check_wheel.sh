#!/usr/bin/env bash
# Packaging check, run by .ci/run: build the wheel (failing on any build warning), install it
# into a fresh virtual environment, and from outside the source tree import every integration,
# run the CLI and render a report, so a file the wheel leaves out fails CI.
# The fresh environment takes its third-party packages from .venv (a .pth line: no .pth of
# .venv is run, so its editable install of this project is not seen) and the project only
# from the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m pip wheel -q --no-deps -w "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
if grep -v "^WARNING: Location" "$work/build.log" | grep -iE "warning|would be ignored"; then
  echo ">> the wheel build printed warnings (above)"; exit 1
fi
python3 -m venv "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/third_party.pth"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$work"/dist/*.whl 2>&1 | grep -v "^WARNING: Location" || true

cd "$work"
"$work/venv/bin/python" - "$root" <<'PY'
import importlib, pathlib, subprocess, sys
root = pathlib.Path(sys.argv[1])
import explain_callbacks
where = pathlib.Path(explain_callbacks.__file__).resolve()
assert root not in where.parents, f"imported the source tree, not the wheel: {where}"
for name in ("lightning", "pytorch_lightning", "transformers", "flair"):
    importlib.import_module(f"explain_callbacks.integrations.{name}")
from explain_callbacks.report import load_run  # noqa: F401  (the documented notebook path)
cli = [str(pathlib.Path(sys.executable).parent / "explain-callbacks")]
version = subprocess.run(cli + ["--version"], capture_output=True, text=True, check=True).stdout.strip()
assert version == f"explain-callbacks {explain_callbacks.__version__}", version
assert subprocess.run(cli + ["check", "no-such-run"], capture_output=True).returncode == 2

sys.path.insert(0, str(root / "examples"))  # a tiny model to make a real run with
import tempfile
from tiny_models import bert_tokenizer, tiny_model
from explain_callbacks import AttributionEngine, AttributionMonitor
scratch = pathlib.Path(tempfile.mkdtemp())
tok = bert_tokenizer(scratch)
engine = AttributionEngine(tiny_model("bert", tok), tok, n_steps=4, max_steps=4)
monitor = AttributionMonitor(engine, ["a great film", "a dull plot"], run_dir=scratch / "runs", run_name="wheel",
                             verbose=False)
monitor.check(step=1, epoch=0)
monitor.finish()
run = scratch / "runs" / "wheel"
assert (run / "report.html").stat().st_size > 1000
for command in (["check", str(run)], ["show", str(run)], ["report", str(run), "-o", str(scratch / "r.html")]):
    done = subprocess.run(cli + command, capture_output=True, text=True)
    assert done.returncode in (0, 1) and "unexpected" not in done.stderr, (command, done.stderr)
print(f">> wheel: {where.parent} imports every integration; CLI {version} checks, shows and reports a run")
PY
