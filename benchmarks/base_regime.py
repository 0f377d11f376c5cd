"""Shared by the benchmarks that fine-tune either from scratch or from a pretrained base: choosing it, forgetting."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile

from transformers import AutoModelForCausalLM, AutoTokenizer

from versatune_hf.demo.base_model import BUNDLED_BASE, REFERENCE_LOSSES_FILE, load_held_out_pieces, raw_text_losses
from versatune_hf.demo.corpus import load_demo_corpus
from versatune_hf.demo.runner import (
    BUNDLED_REFERENCE_LOSSES,
    TINY_MODEL,
    DemoArguments,
    conversation_texts,
    train_demo_reference_losses,
)


def add_base_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        default="none",
        help="'none': a tiny model from scratch (the first regime); 'bundled': the package's pretrained base "
        "(versatune_hf/data/base, built by benchmarks/pretrained_base.py); or the folder of another such base.",
    )


def base_model(value: str) -> str | None:
    """The base folder `--base` names, or None for from scratch."""
    if value == "none":
        return None
    folder = str(BUNDLED_BASE) if value == "bundled" else value
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"--base {value}: no model in {folder}; build one with benchmarks/pretrained_base.py.")
    return folder


def model_option(base: str | None) -> str:
    """`DemoArguments.model` for the regime."""
    return base if base else TINY_MODEL


REFERENCE_SEED = 100
"""Seed of the run that measures a base's reference losses: never one of the reported seeds (0, 1, 2)."""


def reference_losses(base: str | None, steps: int = 300, eval_steps: int = 50) -> str:
    """The reference-loss file of the regime: the one measured for the tiny model, or the one saved with the base
    (measured now, see `measured_reference_losses`, if the base has none)."""
    if base is None:
        return str(BUNDLED_REFERENCE_LOSSES)
    template = DemoArguments(model=base, max_steps=steps, eval_steps=eval_steps)
    train, eval_sets = load_demo_corpus()
    return measured_reference_losses(template, os.path.join(base, REFERENCE_LOSSES_FILE), train, eval_sets)


def measured_reference_losses(template: DemoArguments, path: str, train, eval_sets) -> str:
    """`path`, written first if missing: the final per-domain eval losses on `eval_sets` of a uniform fine-tune 3x
    `template.max_steps` long on `train` with `template`'s model and options on `REFERENCE_SEED`
    (`versatune demo --measure_reference_losses`)."""
    if not os.path.exists(path):
        with tempfile.TemporaryDirectory() as work:
            arguments = dataclasses.replace(template, seed=REFERENCE_SEED, output_dir=work, reference_losses="none")
            train_demo_reference_losses(arguments, train, eval_sets, conversation_texts(train))
            shutil.copy(os.path.join(work, "reference_losses.json"), path)
    return path


def raw_losses(model_dir: str, base: str) -> dict[str, float]:
    """A saved model's loss on each domain's held-out pretraining text of `base`."""
    return raw_text_losses(AutoModelForCausalLM.from_pretrained(model_dir), load_held_out_pieces(base))


def held_out_texts(base: str) -> dict[str, list[str]]:
    """The held-out pretraining text of `base` as text (its pieces decoded), for models with another tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    return {
        domain: tokenizer.batch_decode(pieces, skip_special_tokens=True)
        for domain, pieces in load_held_out_pieces(base).items()
    }


def text_losses(model, tokenizer, texts: dict[str, list[str]]) -> dict[str, float]:
    """A model's loss on each domain's texts, tokenized by its own tokenizer and cut to the domain's shortest."""
    pieces = {}
    for domain, domain_texts in texts.items():
        ids = tokenizer(domain_texts, add_special_tokens=False)["input_ids"]
        start = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        length = min(len(piece) for piece in ids)
        pieces[domain] = [start + piece[:length] for piece in ids]
    return raw_text_losses(model, pieces)


def forgetting(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per domain, the relative increase of held-out pretraining-text loss in % (positive = forgot)."""
    return {domain: 100 * (after[domain] - before[domain]) / before[domain] for domain in before}
