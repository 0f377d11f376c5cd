"""Quickstart: VersaTune in an ordinary TRL SFTTrainer script, on CPU, in about half a minute.

    pip install -e . && python examples/quickstart.py

Trains a tiny LLaMA (built from a config, tokenizer trained on the fly: no Hub access) on a toy three-domain corpus
where `medicine` is random word order (hard to learn) and `law`/`code` follow a fixed cycle (easy). VersaTune moves
the mixture toward the domain with the most learnable potential left. The two VersaTune lines are marked.
"""

import json
import os
import tempfile

from trl import SFTConfig, SFTTrainer

from versatune_hf import VersaTuneCallback  # VersaTune line 1 of 2
from versatune_hf.demo.tiny import tiny_llama, toy_corpus, toy_eval_sets, train_tiny_tokenizer


def main() -> None:
    train_dataset = toy_corpus({"law": 400, "code": 400, "medicine": 400})  # has a "domain" column
    eval_dataset = toy_eval_sets(["law", "code", "medicine"])  # {domain: eval set}
    tokenizer = train_tiny_tokenizer(train_dataset["text"], vocab_size=400)
    output_dir = os.environ.get("OUTPUT_DIR") or tempfile.mkdtemp(prefix="versatune-quickstart-")

    trainer = SFTTrainer(
        model=tiny_llama(tokenizer),
        args=SFTConfig(
            output_dir=output_dir,
            max_steps=120,
            per_device_train_batch_size=8,
            learning_rate=3e-3,
            max_length=64,
            eval_strategy="steps",
            eval_steps=20,
            logging_steps=20,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
        ),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        # VersaTune line 2 of 2: reference losses are what a strong model reaches on each eval set.
        callbacks=[
            VersaTuneCallback(train_dataset=train_dataset, reference_losses={"law": 0.3, "code": 0.3, "medicine": 2.3})
        ],
    )
    trainer.train()

    print(f"\nVersaTune weight updates (full records in {output_dir}/versatune_history.jsonl):")
    print(f"{'step':>5}  " + "  ".join(f"{name:>18}" for name in ("law", "code", "medicine")))
    with open(os.path.join(output_dir, "versatune_history.jsonl")) as handle:
        for line in handle:
            record = json.loads(line)
            cells = [
                f"w={record['weights_after'][d]:.3f} ℓ={record['losses'][d]:.2f}" for d in ("law", "code", "medicine")
            ]
            print(f"{record['step']:>5}  " + "  ".join(f"{cell:>18}" for cell in cells))


if __name__ == "__main__":
    main()
