"""VersaTune's log messages follow transformers' verbosity (`set_verbosity_*`, `TrainingArguments.log_level`) and
print with their level."""

import pytest
from transformers.utils import logging as transformers_logging

from versatune_hf.demo.tiny import TOY_VOCAB, toy_corpus
from versatune_hf.utils.logs import get_logger

from utils import train_checkpointed_toy_run


@pytest.fixture(autouse=True)
def restore_verbosity():
    verbosity = transformers_logging.get_verbosity()
    yield
    transformers_logging.set_verbosity(verbosity)


def test_messages_follow_transformers_verbosity_and_show_their_level(capfd):
    logger = get_logger("versatune_hf.integrations.example")
    transformers_logging.set_verbosity_warning()
    logger.info("an info line")
    logger.warning("a warning line")
    transformers_logging.set_verbosity_info()
    logger.info("another info line")
    error = capfd.readouterr().err
    assert "an info line" not in error
    assert "[VersaTune WARNING] a warning line" in error
    assert "[VersaTune INFO] another info line" in error


@pytest.mark.slow
def test_training_arguments_log_level_shows_the_start_summary(tmp_path, toy_tokenizer, capfd):
    corpus = toy_corpus({domain: 20 for domain in TOY_VOCAB}, unique=True)
    transformers_logging.set_verbosity_warning()
    train_checkpointed_toy_run(tmp_path / "quiet", corpus, toy_tokenizer, dict(max_steps=2, save_strategy="no"))
    assert "VersaTune: strategy=" not in capfd.readouterr().err
    overrides = dict(max_steps=2, save_strategy="no", log_level="info")
    train_checkpointed_toy_run(tmp_path / "info", corpus, toy_tokenizer, overrides)
    assert "[VersaTune INFO] VersaTune: strategy=versatune" in capfd.readouterr().err
