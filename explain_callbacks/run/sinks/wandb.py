"""Weights & Biases sink: scalars, a top-token table, the latest heatmap, run summary, alerts.

The sink logs into a run the training framework already owns (Lightning's ``WandbLogger``,
Hugging Face's ``WandbCallback``) or into whatever ``wandb.init`` made active. It never passes
``step=`` to ``run.log``: W&B's own step belongs to the framework, and an explicit step lower
than it is dropped. Instead the training step goes into the logged dict under ``step_key``
(``"trainer/global_step"`` for Lightning, ``"train/global_step"`` for the HF Trainer) and
``attribution/*`` is plotted against it with ``define_metric``.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from explain_callbacks.attribution.records import Alert, CheckResult, top_rows
from explain_callbacks.run.sinks.base import RunInfo

logger = logging.getLogger(__name__)

TOKEN_TABLE_COLUMNS = ["check", "step", "rank", "word", "mean_abs_share", "mean_share", "sum_share", "n_probes"]


class WandbSink:
    """Logs each check to a W&B run.

    ``run`` is the run to log into; ``None`` takes the active ``wandb.run`` at :meth:`start`.
    With no run given and none active, :meth:`start` raises (the monitor then logs the error
    and leaves this sink out; training goes on). Works with ``WANDB_MODE=offline`` and
    ``disabled``; ``run.alert`` is only called for online runs. ``log_tables=False`` logs
    scalars and summary fields only (no table, no heatmap). ``attribution/top_tokens`` holds the
    top-k words of the current check (a new table each check, not the run so far).
    """

    def __init__(self, run: Any = None, step_key: str | None = None, log_tables: bool = True):
        try:  # imported here: the package never needs wandb unless this sink is made
            import wandb
        except ImportError as err:
            raise ImportError('WandbSink needs wandb: pip install "explain-callbacks[wandb]"') from err
        self._wandb = wandb
        if step_key is not None and (not isinstance(step_key, str) or not step_key or step_key.startswith("attribution/")):
            raise ValueError(
                f"step_key must name the framework's step metric (e.g. 'trainer/global_step'), got {step_key!r}."
            )
        self._given_run = run
        self.step_key = step_key
        self.log_tables = log_tables
        self.run: Any = None

    @property
    def target(self) -> Any:
        """The W&B run it logs into: the one given, else whichever run is active."""
        return self._given_run if self._given_run is not None else "the active W&B run"

    def start(self, run: RunInfo) -> None:
        active = self._given_run if self._given_run is not None else self._wandb.run
        if active is None:
            raise RuntimeError(
                "WandbSink has no W&B run to log into: call wandb.init(...) before training, or "
                "pass WandbSink(run=...) (e.g. WandbLogger.experiment)."
            )
        self.run = active
        if self.step_key:
            self.run.define_metric("attribution/*", step_metric=self.step_key)

    def log_check(self, result: CheckResult, summary: dict[str, Any]) -> None:
        if self.run is None:
            raise RuntimeError("WandbSink.log_check called before start().")
        snapshot = result.snapshot
        data: dict[str, Any] = dict(result.scalars())
        if self.step_key:
            data[self.step_key] = snapshot.step
        if self.log_tables:
            rows = [
                [snapshot.check_index, snapshot.step, row.get("rank", i + 1), str(row.get("word", "")),
                 row.get("mean_abs_share"), row.get("mean_share"), row.get("sum_share"), row.get("n_probes")]
                for i, row in enumerate(top_rows(result, summary))
            ]
            if rows:
                data["attribution/top_tokens"] = self._wandb.Table(columns=TOKEN_TABLE_COLUMNS, data=rows)
            heatmap = self._heatmap(snapshot)
            if heatmap is not None:
                data["attribution/heatmap"] = heatmap
        self.run.log(data)
        self._update_summary(summary, result.alerts)
        for alert in result.new_alerts:
            self._send_alert(alert)

    def _heatmap(self, snapshot: Any) -> Any:
        try:
            from explain_callbacks.run.report import render_heatmap_html
        except ImportError:
            logger.debug("no heatmap logged to W&B: explain_callbacks.report is unavailable")
            return None
        try:
            return self._wandb.Html(io.StringIO(render_heatmap_html(snapshot)), inject=False)
        except Exception:  # the scalars and tables still go out
            logger.warning("no heatmap logged to W&B for check %s", snapshot.check_index, exc_info=True)
            return None

    def _update_summary(self, summary: dict[str, Any], alerts: list[Alert] | None = None) -> None:
        if alerts is None:
            alert_dicts = list(summary.get("alerts") or [])
        else:
            alert_dicts = [a.to_dict() for a in alerts]
        stabilisation = summary.get("stabilisation") or {}
        fields = {
            "attribution/alerts": [
                {k: a.get(k) for k in ("rule", "severity", "token", "first_step", "first_epoch", "message", "active")}
                for a in alert_dicts
            ],
            "attribution/n_alerts": sum(1 for a in alert_dicts if a.get("active", True)),
            "attribution/stabilisation_step": stabilisation.get("step"),
            "attribution/n_checks": len(summary.get("checks") or []),
        }
        for key, value in fields.items():
            self.run.summary[key] = value

    def _is_online(self) -> bool:
        if getattr(self.run, "disabled", False) or getattr(self.run, "offline", False):
            return False
        mode = getattr(getattr(self.run, "settings", None), "mode", None)
        return mode in (None, "online", "run")

    def _send_alert(self, alert: Alert) -> None:
        if not self._is_online():
            return
        level = self._wandb.AlertLevel.ERROR if alert.severity == "error" else self._wandb.AlertLevel.WARN
        try:
            self.run.alert(title=f"explain-callbacks: {alert.rule}"[:64], text=alert.message, level=level)
        except Exception:  # a failed notification must not lose the check
            logger.warning("W&B alert for %s could not be sent", alert.key, exc_info=True)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is not None:
            self._update_summary(summary)
