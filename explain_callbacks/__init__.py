"""explain-callbacks: watch what a text classifier learns while it trains."""

from .adapters import AdapterError, ForwardFunctionAdapter, HuggingFaceAdapter, ModelAdapter
from .alerts import AlertRules
from .drift import DriftTracker
from .engine import AttributionEngine, NonFiniteOutputError
from .monitor import AttributionAlertError, AttributionMonitor
from .probes import Probe, ProbeError, ProbeSet
from .records import Alert, CheckResult, ProbeAttribution, Snapshot

__all__ = [
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
