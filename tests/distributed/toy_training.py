"""Toy VersaTune training run for multi-process tests; launch with `accelerate launch`.

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        tests/distributed/toy_training.py OUTPUT_DIR [--resume_from_checkpoint CKPT] [--tag NAME] [--strategy NAME] \
        [SFTConfig flags]

Each process writes `<tag>-rank<N>.json` into OUTPUT_DIR: the rows it trained on, its sampler schedule and the
row labels, for the test to compare.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from versatune_hf.demo.tiny import TOY_VOCAB, toy_corpus, train_tiny_tokenizer  # noqa: E402

from utils import train_checkpointed_toy_run  # noqa: E402


def main() -> None:
    output_dir = sys.argv[1]
    parser = argparse.ArgumentParser()
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--rows_per_domain", type=int, default=100)
    parser.add_argument("--strategy", default="versatune")
    parser.add_argument("--dispatch_batches", action="store_true")
    known, rest = parser.parse_known_args(sys.argv[2:])
    overrides = {flag.lstrip("-"): int(value) for flag, value in zip(rest[::2], rest[1::2])}  # integer SFTConfig flags
    if known.dispatch_batches:
        overrides["accelerator_config"] = {"dispatch_batches": True}

    domains = sorted(TOY_VOCAB)
    corpus = toy_corpus({d: known.rows_per_domain for d in domains}, unique=True)
    tokenizer = train_tiny_tokenizer(corpus["text"], vocab_size=400)
    trainer, callback = train_checkpointed_toy_run(
        output_dir, corpus, tokenizer, overrides, resume_from=known.resume_from_checkpoint, strategy=known.strategy
    )
    rank = trainer.accelerator.process_index
    with open(os.path.join(output_dir, f"{known.tag}-rank{rank}.json"), "w") as handle:
        json.dump(
            {
                "world_size": trainer.accelerator.num_processes,
                "global_step": trainer.state.global_step,
                "trained_rows": trainer.trained_rows,
                "schedule": callback.sampler.schedule,
                "seed": callback.sampler.seed,
                "labels": list(trainer.train_dataset["domain"]),
                "row_tokens": [len(ids) for ids in trainer.train_dataset["input_ids"]],
                "per_device_batch": trainer.args.per_device_train_batch_size,
                "switch_delay": callback.run.switch_delay,
            },
            handle,
        )
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
