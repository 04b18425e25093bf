"""explain-callbacks: watch what a text classifier learns while it trains."""

__version__ = "0.2.0"

from explain_callbacks.attribution.adapters import (
    AdapterError,
    ForwardFunctionAdapter,
    HuggingFaceAdapter,
    ModelAdapter,
)
from explain_callbacks.attribution.engine import AttributionEngine, NonFiniteOutputError
from explain_callbacks.attribution.probes import Probe, ProbeError, ProbeSet
from explain_callbacks.attribution.records import Alert, CheckResult, ProbeAttribution, Snapshot
from explain_callbacks.detection.alerts import AlertRules
from explain_callbacks.detection.drift import DriftTracker
from explain_callbacks.monitor import AttributionAlertError, AttributionMonitor

__all__ = [
    "__version__",
    "AdapterError",
    "Alert",
    "AlertRules",
    "AttributionAlertError",
    "AttributionEngine",
    "AttributionMonitor",
    "CheckResult",
    "DriftTracker",
    "ForwardFunctionAdapter",
    "HuggingFaceAdapter",
    "ModelAdapter",
    "NonFiniteOutputError",
    "Probe",
    "ProbeAttribution",
    "ProbeError",
    "ProbeSet",
    "Snapshot",
]
