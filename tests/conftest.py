"""Shared fixtures. ``tests/`` is on ``sys.path`` (pytest's rootdir-relative import of this file), so
tests import their helpers as ``from helpers... import ...``; importing ``helpers`` puts
``examples/`` on the path too, where the tiny models (``tiny_models``) and the review generator
live. Job scripts run as subprocesses live in ``tests/jobs/`` and put ``tests/`` on their path
themselves."""

from __future__ import annotations

import helpers  # noqa: F401  (puts examples/ on sys.path)
import pytest
from tiny_models import bert_tokenizer


@pytest.fixture
def wide_terminal(monkeypatch):
    """250 columns for the CLI's rich tables: at 80 they fold long cells, and a test that looks
    for a whole message would not find it."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="session")
def bert_tok(tmp_path_factory):
    """The tiny WordPiece tokenizer of ``tiny_models`` (examples/) (read-only: tests that change a tokenizer build their own)."""
    return bert_tokenizer(tmp_path_factory.mktemp("bert_vocab"))
