"""Shared builders for the tests: a synthetic multi-domain corpus, a tokenizer trained on it and tiny trainers."""

from __future__ import annotations

import random

from datasets import Dataset

VOCAB = {
    "law": "court statute plaintiff defendant contract clause liability appeal verdict tort".split(),
    "code": "def return import class lambda yield self print range list".split(),
    "medicine": "patient dose symptom diagnosis therapy clinic fever insulin tumor nurse".split(),
}


def domain_text(domain: str, rng: random.Random, length: int = 12) -> str:
    """A sentence of one domain's words; `medicine` is random order (hard), the others follow a cycle (easy)."""
    words = VOCAB[domain]
    if domain == "medicine":
        return " ".join(rng.choice(words) for _ in range(length))
    start = rng.randrange(len(words))
    return " ".join(words[(start + i) % len(words)] for i in range(length))


def make_corpus(rows_per_domain: dict[str, int], seed: int = 0, unique: bool = False) -> Dataset:
    """Rows `{"text", "domain"}`; with `unique=True` every text ends with its row number so rows are identifiable."""
    rng = random.Random(seed)
    rows = []
    for domain, count in rows_per_domain.items():
        for index in range(count):
            text = domain_text(domain, rng)
            rows.append({"text": f"{text} {domain}{index}" if unique else text, "domain": domain})
    rng.shuffle(rows)
    return Dataset.from_list(rows)


def make_eval_sets(domains: list[str], rows: int = 16, seed: int = 1) -> dict[str, Dataset]:
    """One eval set per domain, keyed by domain name."""
    rng = random.Random(seed)
    return {d: Dataset.from_list([{"text": domain_text(d, rng)} for _ in range(rows)]) for d in domains}


def sft_config(output_dir, **overrides):
    """A CPU SFTConfig for a few dozen steps of a tiny model, evaluating every 10 steps."""
    from trl import SFTConfig

    settings = dict(
        output_dir=str(output_dir),
        max_steps=30,
        eval_strategy="steps",
        eval_steps=10,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        logging_steps=10,
        learning_rate=3e-3,
        max_length=64,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return SFTConfig(**settings)


class CollatorSpy:
    """Wraps a data collator and records the rows of every batch it collates (train and eval), in order."""

    def __init__(self, collator):
        self.collator = collator
        self.batches = []

    def __call__(self, features):
        self.batches.append([tuple(feature["input_ids"]) for feature in features])
        return self.collator(features)
