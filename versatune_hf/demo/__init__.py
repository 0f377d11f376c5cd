"""`versatune demo`: the bundled six-domain corpus, tiny local models and tokenizers, and the demo runner."""
