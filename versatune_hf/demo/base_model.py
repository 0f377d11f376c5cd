"""A tiny pretrained base model with a known knowledge distribution: pretraining it, caching it, measuring it.

A base model is what VersaTune's Phase 1 reads ("how much of each domain does this model know?") and what its Phase 2
fine-tunes. A randomly initialised model knows nothing, so neither phase can act on it. `pretrain_base` trains the
demo's tiny LLaMA on raw domain text (`pretraining_corpus`) in a chosen mixture, e.g. the shape that the paper detected
for Qwen2.5-7B, so that which domains the base knows well is known exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

from ..utils.logs import get_logger
from .corpus import DEMO_DOMAINS
from .pretraining_corpus import DomainDocuments
from .tiny import tiny_llama, train_tiny_tokenizer

logger = get_logger(__name__)

PAPER_QWEN2_5_7B_MIXTURE = {
    "law": 0.034,
    "medicine": 0.055,
    "finance": 0.040,
    "science": 0.083,
    "code": 0.565,
    "other": 0.222,
}
"""The domain distribution that the paper's Phase 1 detected in Qwen2.5-7B (method.md): code and other large."""
UNIFORM_MIXTURE = dict.fromkeys(DEMO_DOMAINS, 1 / len(DEMO_DOMAINS))
TOKENIZER_CHARS_PER_DOMAIN = 400_000
HELD_OUT_FILE = "held_out_pieces.json"
"""Saved next to a base: token ids of each domain's held-out raw text, to measure forgetting without the sources."""
REFERENCE_LOSSES_FILE = "reference_losses.json"
"""Saved next to a base by `benchmarks/mixture_quality.py --base`: eval losses of a 3x longer uniform fine-tune."""
BUNDLED_BASE = Path(__file__).parents[1] / "data" / "base"
"""The pretrained base shipped with the package (built by `benchmarks/pretrained_base.py`, paper's skewed mixture)."""


@dataclass
class BaseModelSpec:
    """Everything that determines a pretrained base; its hash names the cache folder."""

    mixture: dict[str, float] = field(default_factory=lambda: dict(PAPER_QWEN2_5_7B_MIXTURE))
    total_tokens: int = 4_096_000
    piece_length: int = 256
    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 2
    batch_size: int = 16
    learning_rate: float = 2e-3
    held_out_pieces_per_domain: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        total = sum(self.mixture.values())
        if set(self.mixture) != set(DEMO_DOMAINS) or not math.isclose(total, 1.0, abs_tol=0.01):
            raise ValueError(
                f"The pretraining mixture needs a share for each of {DEMO_DOMAINS}, summing to 1; got {self.mixture}."
            )
        self.mixture = {domain: self.mixture[domain] / total for domain in DEMO_DOMAINS}

    @property
    def steps(self) -> int:
        return self.total_tokens // (self.piece_length * self.batch_size)

    def key(self, corpus_fingerprint: str) -> str:
        text = json.dumps({**dataclasses.asdict(self), "corpus": corpus_fingerprint}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def corpus_fingerprint(documents: dict[str, DomainDocuments]) -> str:
    digest = hashlib.sha256()
    for domain in sorted(documents):
        for text in documents[domain].train + ["\0held-out\0"] + documents[domain].held_out:
            digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:16]


def shuffled(texts: list[str], seed: int) -> list[str]:
    order = list(texts)
    random.Random(seed).shuffle(order)
    return order


def token_stream(tokenizer, texts: list[str]) -> list[int]:
    """The texts' tokens, each followed by EOS."""
    stream: list[int] = []
    for start in range(0, len(texts), 64):
        for ids in tokenizer(texts[start : start + 64], add_special_tokens=False)["input_ids"]:
            stream.extend(ids + [tokenizer.eos_token_id])
    return stream


def pieces(stream: list[int], count: int, length: int, bos: int) -> list[list[int]]:
    """`count` BOS-prefixed pieces of `length` tokens read in order from `stream`, wrapping around when it runs out."""
    body = length - 1
    result = []
    for index in range(count):
        start = (index * body) % max(len(stream) - body, 1)
        result.append([bos] + stream[start : start + body])
    return result


def held_out_pieces(
    tokenizer, documents: dict[str, DomainDocuments], spec: BaseModelSpec
) -> dict[str, list[list[int]]]:
    """Per domain, `held_out_pieces_per_domain` pieces of held-out raw text (never pretrained on, never in SFT)."""
    result = {}
    for domain in DEMO_DOMAINS:
        stream = token_stream(tokenizer, documents[domain].held_out)
        available = len(stream) // (spec.piece_length - 1)
        if available < spec.held_out_pieces_per_domain:
            raise ValueError(f"Only {available} held-out pieces of {domain}; lower held_out_pieces_per_domain.")
        result[domain] = pieces(stream, spec.held_out_pieces_per_domain, spec.piece_length, tokenizer.bos_token_id)
    return result


def save_held_out_pieces(folder: str, tokenizer, documents: dict[str, DomainDocuments], spec: BaseModelSpec) -> dict:
    """Write `HELD_OUT_FILE` into the base's folder and return its pieces."""
    held_out = held_out_pieces(tokenizer, documents, spec)
    with open(os.path.join(folder, HELD_OUT_FILE), "w", encoding="utf-8") as handle:
        json.dump(held_out, handle, separators=(",", ":"))
    return held_out


def load_held_out_pieces(folder: str | os.PathLike) -> dict[str, list[list[int]]]:
    """The held-out raw-text pieces saved with a base (see `HELD_OUT_FILE`)."""
    with open(os.path.join(folder, HELD_OUT_FILE), encoding="utf-8") as handle:
        return json.load(handle)


@torch.no_grad()
def raw_text_losses(model, pieces_by_domain: dict[str, list[list[int]]], batch_size: int = 16) -> dict[str, float]:
    """Each domain's mean next-token cross-entropy on its raw-text pieces (all of equal length)."""
    model.eval()
    device = next(model.parameters()).device
    losses = {}
    for domain, domain_pieces in pieces_by_domain.items():
        total = 0.0
        for start in range(0, len(domain_pieces), batch_size):
            ids = torch.tensor(domain_pieces[start : start + batch_size], device=device)
            total += model(input_ids=ids, labels=ids).loss.item() * len(ids)
        losses[domain] = total / len(domain_pieces)
    return losses


def build_tokenizer(documents: dict[str, DomainDocuments], spec: BaseModelSpec):
    """A byte-level BPE trained on an equal amount of each domain's pretraining text (the mixture does not leak in)."""
    sample = []
    for domain in DEMO_DOMAINS:
        taken = 0
        for text in shuffled(documents[domain].train, spec.seed):
            sample.append(text)
            taken += len(text)
            if taken >= TOKENIZER_CHARS_PER_DOMAIN:
                break
    return train_tiny_tokenizer(sample, vocab_size=spec.vocab_size)


def pretrain_base(spec: BaseModelSpec, documents: dict[str, DomainDocuments], output_dir: str) -> dict:
    """Pretrain a tiny LLaMA on `spec.mixture` of the documents; save model, tokenizer and `base_model.json`.

    Each domain contributes `share × total_tokens` tokens as BOS-prefixed single-domain pieces read from its shuffled
    documents (a domain with less text is repeated: `epochs` in the report says how often).
    """
    started = time.time()
    tokenizer = build_tokenizer(documents, spec)
    total_pieces = spec.total_tokens // spec.piece_length
    rows, report = [], {}
    for domain in DEMO_DOMAINS:
        count = round(spec.mixture[domain] * total_pieces)
        stream = token_stream(tokenizer, shuffled(documents[domain].train, spec.seed))
        rows += [{"input_ids": ids} for ids in pieces(stream, count, spec.piece_length, tokenizer.bos_token_id)]
        report[domain] = {
            "pieces": count,
            "tokens_available": len(stream),
            "epochs": round(count * (spec.piece_length - 1) / len(stream), 3),
        }
    random.Random(spec.seed).shuffle(rows)
    model = tiny_llama(tokenizer, hidden_size=spec.hidden_size, num_layers=spec.num_layers, seed=spec.seed)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=os.path.join(output_dir, "trainer"),
            max_steps=len(rows) // spec.batch_size,
            per_device_train_batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.03,
            weight_decay=0.01,
            logging_steps=50,
            save_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            seed=spec.seed,
            data_seed=spec.seed,
        ),
        train_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    trainer.train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    info = {
        "spec": dataclasses.asdict(spec),
        "corpus": report,
        "held_out_loss": raw_text_losses(model, save_held_out_pieces(output_dir, tokenizer, documents, spec)),
        "train_loss_curve": [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e],
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(output_dir, "base_model.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1)
    return info


def cached_base(spec: BaseModelSpec, documents: dict[str, DomainDocuments], cache_dir: str) -> tuple[str, dict]:
    """The folder of the base for `spec` under `cache_dir` (pretrained on the first call) and its `base_model.json`."""
    folder = os.path.join(cache_dir, f"base-{spec.key(corpus_fingerprint(documents))}")
    report_path = os.path.join(folder, "base_model.json")
    if not os.path.exists(report_path):
        logger.warning(f"Pretraining a base model into {folder} ({spec.steps} steps; minutes on a CPU).")
        pretrain_base(spec, documents, folder)
    with open(report_path, encoding="utf-8") as handle:
        return folder, json.load(handle)


def load_base(folder: str):
    """Model and tokenizer of a base saved by `pretrain_base`."""
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
