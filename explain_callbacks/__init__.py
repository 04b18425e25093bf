"""explain-callbacks: watch what a text classifier learns while it trains."""

from .adapters import AdapterError, ForwardFunctionAdapter, HuggingFaceAdapter, ModelAdapter
from .engine import AttributionEngine
from .probes import Probe, ProbeError, ProbeSet
from .records import Alert, CheckResult, ProbeAttribution, Snapshot

__all__ = [
    "AdapterError",
    "Alert",
    "AttributionEngine",
    "CheckResult",
    "ForwardFunctionAdapter",
    "HuggingFaceAdapter",
    "ModelAdapter",
    "Probe",
    "ProbeAttribution",
    "ProbeError",
    "ProbeSet",
    "Snapshot",
]
