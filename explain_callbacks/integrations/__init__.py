"""Adapters from training frameworks to AttributionMonitor; import each by its own name."""
