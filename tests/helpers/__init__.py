"""Builders shared by the tests and benchmarks: tiny models and tokenizers, run directories, records."""
