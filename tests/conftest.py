"""Session-wide fixtures: one tokenizer trained on the toy corpus's vocabulary; VersaTune's log messages."""

import logging

import pytest

from versatune_hf.demo.tiny import TOY_VOCAB, toy_corpus, train_tiny_tokenizer


@pytest.fixture(scope="session")
def toy_tokenizer():
    return train_tiny_tokenizer(toy_corpus({d: 100 for d in TOY_VOCAB}, unique=True)["text"], vocab_size=400)


@pytest.fixture
def versatune_messages(caplog):
    """A function that returns the text of VersaTune's log records at `level` or above so far. The package logger
    does not propagate to the root logger (like transformers'), so pytest's capture handler is attached to it."""
    package = logging.getLogger("versatune_hf")
    package.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="versatune_hf")
    yield lambda level=logging.INFO: "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("versatune_hf") and record.levelno >= level
    )
    package.removeHandler(caplog.handler)
