"""``AttributionDriftCallback`` for ``lightning.pytorch`` (the ``lightning`` package).

For the older ``pytorch_lightning`` package use
``explain_callbacks.integrations.pytorch_lightning``; the two namespaces' classes do not mix.
"""

from __future__ import annotations

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'explain_callbacks.integrations.lightning needs lightning: pip install "explain-callbacks[lightning]"'
    ) from err

from explain_callbacks.integrations._lightning_callback import AttributionDriftLogic, LoggerSink


class AttributionDriftCallback(AttributionDriftLogic, pl.Callback):
    __doc__ = AttributionDriftLogic.__doc__
    _pl = pl


__all__ = ["AttributionDriftCallback", "LoggerSink"]
