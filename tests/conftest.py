"""Shared fixtures. ``tests/`` is on ``sys.path`` (pytest's rootdir-relative import of this file), so
tests import their builders as ``from helpers._tiny import ...``; job scripts run as subprocesses
live in ``tests/jobs/`` and put ``tests/`` on their path themselves."""

from __future__ import annotations

import pytest

from helpers._tiny import bert_tokenizer


@pytest.fixture
def wide_terminal(monkeypatch):
    """250 columns for the CLI's rich tables: at 80 they fold long cells, and a test that looks
    for a whole message would not find it."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="session")
def bert_tok(tmp_path_factory):
    """The tiny WordPiece tokenizer of ``helpers._tiny`` (read-only: tests that change a tokenizer build their own)."""
    return bert_tokenizer(tmp_path_factory.mktemp("bert_vocab"))
