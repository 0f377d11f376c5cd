"""Session-wide fixtures: one tokenizer trained on the toy corpus's vocabulary."""

import pytest

from versatune_hf.demo.tiny import TOY_VOCAB, toy_corpus, train_tiny_tokenizer


@pytest.fixture(scope="session")
def toy_tokenizer():
    return train_tiny_tokenizer(toy_corpus({d: 100 for d in TOY_VOCAB}, unique=True)["text"], vocab_size=400)
