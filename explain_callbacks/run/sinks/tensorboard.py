"""TensorBoard sink: scalars, token and alert tables, a relative-delta histogram per check."""

from __future__ import annotations

import html
import importlib.util
import math
import os
import re
from typing import Any

from explain_callbacks.attribution.records import Alert, CheckResult, top_rows
from explain_callbacks.run.sinks.base import RunInfo

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def markdown_cell(value: Any) -> str:
    """User text made safe for one markdown table cell: HTML escaped, markdown characters
    (the ``|`` that would split the cell included) backslash-escaped, newlines flattened."""
    text = html.escape(str(value), quote=False)
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split()) or " "


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(markdown_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _share(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def token_table_markdown(result: CheckResult, summary: dict[str, Any] | None = None) -> str:
    """The check's top-k words with the mean |share| they are ranked by."""
    rows = [
        [row.get("rank", i + 1), row.get("word", ""), _share(row.get("mean_abs_share")), _share(row.get("mean_share")),
         _share(row.get("sum_share")), row.get("n_probes", "")]
        for i, row in enumerate(top_rows(result, summary or {}))
    ]
    return markdown_table(["rank", "word", "mean abs share", "mean share", "sum share", "probes"], rows)


def alerts_markdown(alerts: list[Alert]) -> str:
    rows = [[a.severity, a.rule, a.token or "", a.first_step, a.message] for a in alerts]
    return markdown_table(["severity", "rule", "token", "first step", "message"], rows)


class TensorBoardSink:
    """Writes each check to TensorBoard.

    Pass an open ``writer`` to share the training run's event files (Lightning's
    ``TensorBoardLogger.experiment``, the ``tb_writer`` of Hugging Face's
    ``TensorBoardCallback``, or a tensorboardX ``SummaryWriter``); it is flushed, never closed.
    Otherwise the sink opens ``torch.utils.tensorboard.SummaryWriter(log_dir)`` at start and
    closes it at finish. ``prefix`` replaces the leading ``attribution`` of every tag.
    """

    def __init__(self, writer: Any = None, log_dir: str | os.PathLike[str] | None = None, prefix: str = "attribution"):
        if writer is None and log_dir is None:
            raise ValueError(
                "TensorBoardSink needs a writer (e.g. trainer.logger.experiment) or a log_dir to "
                "open one in; pass writer=... or log_dir=..."
            )
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise ValueError(
                f"writer must be a SummaryWriter-like object with add_scalar(); got {type(writer).__name__}."
            )
        if writer is None and importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "TensorBoardSink(log_dir=...) needs the tensorboard package: "
                'pip install "explain-callbacks[tensorboard]"'
            )
        if not prefix or prefix.strip("/") != prefix:
            raise ValueError(f"prefix must be a non-empty tag prefix without leading/trailing '/', got {prefix!r}.")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.prefix = prefix
        self._writer = writer
        self._owns_writer = writer is None
        self._layout_registered = False

    @property
    def writer(self) -> Any:
        return self._writer

    @property
    def target(self) -> Any:
        """Where it writes: the writer it was given, else its log folder."""
        return self._writer if not self._owns_writer else self.log_dir

    def _tag(self, name: str) -> str:
        head, sep, rest = name.partition("/")
        return f"{self.prefix}/{rest}" if head == "attribution" and sep else f"{self.prefix}/{name}"

    def start(self, run: RunInfo) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        self._register_layout()

    def _register_layout(self) -> None:
        add_layout = getattr(self._writer, "add_custom_scalars", None)
        if self._layout_registered or add_layout is None:
            return
        p = re.escape(self.prefix)
        add_layout({
            f"{self.prefix}: drift": {
                "vs previous check": ["Multiline", [rf"{p}/drift/vs_previous/.*"]],
                "vs reference check": ["Multiline", [rf"{p}/drift/vs_reference/.*"]],
            },
            f"{self.prefix}: convergence": {
                "relative delta": ["Multiline", [rf"{p}/convergence/.*rel_delta"]],
                "share converged": ["Multiline", [rf"{p}/convergence/share_converged"]],
                "integration steps": ["Multiline", [rf"{p}/convergence/.*steps.*"]],
            },
        })
        self._layout_registered = True

    def log_check(self, result: CheckResult, summary: dict[str, Any]) -> None:
        if self._writer is None:
            raise RuntimeError("TensorBoardSink.log_check called before start().")
        writer = self._writer
        step = result.snapshot.step
        for name, value in result.scalars().items():
            writer.add_scalar(self._tag(name), value, global_step=step)
        if result.token_table:
            writer.add_text(self._tag("attribution/top_tokens"), token_table_markdown(result, summary), global_step=step)
        if result.new_alerts:
            writer.add_text(self._tag("attribution/alerts"), alerts_markdown(result.new_alerts), global_step=step)
        rel_deltas = [a.rel_delta for a in result.snapshot.attributions if math.isfinite(a.rel_delta)]
        if rel_deltas:
            import numpy as np

            writer.add_histogram(
                self._tag("attribution/convergence/rel_delta"), np.asarray(rel_deltas, dtype=np.float64),
                global_step=step,
            )
        writer.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        if self._writer is None:
            return
        if self._owns_writer:
            self._writer.close()
            self._writer = None
        else:
            self._writer.flush()
