"""The documented notebook entry point, kept at its old path: ``from explain_callbacks.report
import load_run``. The report itself lives in :mod:`explain_callbacks.run.report`."""

from explain_callbacks.run.report import LoadedRun, load_run, render_report

__all__ = ["LoadedRun", "load_run", "render_report"]
