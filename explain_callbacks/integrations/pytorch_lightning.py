"""``AttributionDriftCallback`` for ``pytorch_lightning`` (the ``pytorch-lightning`` package).

For the ``lightning`` package (``lightning.pytorch``) use
``explain_callbacks.integrations.lightning``; the two namespaces' classes do not mix.
"""

from __future__ import annotations

try:
    import pytorch_lightning as pl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "explain_callbacks.integrations.pytorch_lightning needs pytorch-lightning: "
        'pip install "explain-callbacks[pytorch-lightning]"'
    ) from err

from explain_callbacks.integrations._lightning_callback import AttributionDriftLogic, LoggerSink


class AttributionDriftCallback(AttributionDriftLogic, pl.Callback):
    __doc__ = AttributionDriftLogic.__doc__
    _pl = pl


__all__ = ["AttributionDriftCallback", "LoggerSink"]
