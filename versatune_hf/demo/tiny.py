"""Tiny LLaMA models, tokenizers and a toy corpus built locally, for CPU smoke runs and tests without any Hub."""

from __future__ import annotations

import random
from collections.abc import Iterable

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, set_seed

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML with `{% generation %}` markers around assistant turns (so `assistant_only_loss=True` works)."""
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (seconds on a few MB) with BOS/EOS/PAD and a ChatML template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> LlamaForCausalLM:
    """A randomly initialised LLaMA sized for CPU (hidden 64 and 2 layers train at ~10 steps/s on 2 cores)."""
    set_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


TOY_VOCAB = {
    "law": "court statute plaintiff defendant contract clause liability appeal verdict tort".split(),
    "code": "def return import class lambda yield self print range list".split(),
    "medicine": "patient dose symptom diagnosis therapy clinic fever insulin tumor nurse".split(),
}


def toy_text(domain: str, rng: random.Random, length: int = 12) -> str:
    """A sentence of one domain's words; `medicine` is random order (hard), the others follow a cycle (easy)."""
    words = TOY_VOCAB[domain]
    if domain == "medicine":
        return " ".join(rng.choice(words) for _ in range(length))
    start = rng.randrange(len(words))
    return " ".join(words[(start + i) % len(words)] for i in range(length))


def toy_corpus(rows_per_domain: dict[str, int], seed: int = 0, unique: bool = False) -> Dataset:
    """A toy corpus of rows `{"text", "domain"}` for smoke runs.

    With `unique=True` every text ends with its domain and row number, so that rows are distinguishable.
    """
    rng = random.Random(seed)
    rows = []
    for domain, count in rows_per_domain.items():
        for index in range(count):
            text = toy_text(domain, rng)
            rows.append({"text": f"{text} {domain}{index}" if unique else text, "domain": domain})
    rng.shuffle(rows)
    return Dataset.from_list(rows)


def toy_eval_sets(domains: list[str], rows: int = 16, seed: int = 1) -> dict[str, Dataset]:
    """One eval set per domain, keyed by domain name."""
    rng = random.Random(seed)
    return {d: Dataset.from_list([{"text": toy_text(d, rng)} for _ in range(rows)]) for d in domains}
