"""Per-GPU memory of model states for each recipe model and ZeRO stage, from DeepSpeed's own estimators.

    python recipes/memory_estimates.py > recipes/memory_estimates.md

Parameter counts come from instantiating each architecture on the meta device (no weights, no download), with the
hyperparameters of the model's published config.json. Activations are not included: with gradient checkpointing at
max length 512 they are a few GB per GPU, so a plan "fits" when model states stay under 80% of an 80 GB GPU.
"""

from __future__ import annotations

import torch
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

GPU_BYTES = 80e9
HEADROOM = 0.8
GPU_COUNTS = (8, 16, 32, 64)

QWEN2_7B = Qwen2Config(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    tie_word_embeddings=False,
)

ARCHITECTURES = {
    # recipe: (config, published parameter count)
    "llama2_7b": (
        LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32000,
        ),
        6.74e9,
    ),
    "llama2_13b": (
        LlamaConfig(
            hidden_size=5120,
            intermediate_size=13824,
            num_hidden_layers=40,
            num_attention_heads=40,
            num_key_value_heads=40,
            vocab_size=32000,
        ),
        13.02e9,
    ),
    "llama3_8b": (
        LlamaConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
        ),
        8.03e9,
    ),
    "qwen2_7b": (QWEN2_7B, 7.62e9),
    "qwen2_5_7b": (QWEN2_7B, 7.62e9),  # Qwen2.5-7B keeps the Qwen2-7B architecture
    "qwen2_5_14b": (
        Qwen2Config(
            hidden_size=5120,
            intermediate_size=13824,
            num_hidden_layers=48,
            num_attention_heads=40,
            num_key_value_heads=8,
            vocab_size=152064,
            tie_word_embeddings=False,
        ),
        14.77e9,
    ),
    "qwen2_5_32b": (
        Qwen2Config(
            hidden_size=5120,
            intermediate_size=27648,
            num_hidden_layers=64,
            num_attention_heads=40,
            num_key_value_heads=8,
            vocab_size=152064,
            tie_word_embeddings=False,
        ),
        32.76e9,
    ),
}


def parameter_counts(config) -> tuple[int, int]:
    """(total parameters, parameters of the largest single module) of an architecture, on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def plans(total: int, largest: int) -> dict[str, dict]:
    """Per-GPU GB on 8 GPUs (one node) for each plan, split with DeepSpeed's multipliers into parameters held on the
    GPU (ZeRO-2: all 16-bit weights; ZeRO-3: the largest module, gathered), gradients (2 + 4 bytes, partitioned) and
    optimizer states (4 fp32 master + 8 Adam, partitioned); the estimator's GPU and CPU totals; and the fewest 80 GB
    GPUs that fit."""

    def zero2(gpus):
        return estimate_zero2_model_states_mem_needs(total, gpus, 1, cpu_offload=False)[:2]

    def zero3(gpus):
        return estimate_zero3_model_states_mem_needs(total, largest, gpus, 1, cpu_offload=False)[:2]

    def zero3_offload(gpus):
        return estimate_zero3_model_states_mem_needs(total, largest, gpus, 1, cpu_offload=True)[:2]

    results = {}
    for name, estimate, params, grads, optimizer in (
        ("ZeRO-2", zero2, 2 * total, 6 * total / 8, 12 * total / 8),
        ("ZeRO-3", zero3, 4 * largest, 6 * total / 8, 12 * total / 8),
        ("ZeRO-3 + CPU offload", zero3_offload, 4 * largest, 0, 0),
    ):
        fits = [gpus for gpus in GPU_COUNTS if estimate(gpus)[1] <= HEADROOM * GPU_BYTES]
        cpu_8, gpu_8 = estimate(8)
        results[name] = {
            "params": params / 1e9,
            "grads": grads / 1e9,
            "optimizer": optimizer / 1e9,
            "total_8": gpu_8 / 1e9,
            "cpu_8": cpu_8 / 1e9,
            "min_gpus": fits[0] if fits else None,
        }
    return results


def markdown() -> str:
    lines = [
        "| model | parameters | plan | parameters on GPU | gradients | optimizer states | DeepSpeed estimate per GPU, "
        "8 GPUs | CPU RAM per node, 8 GPUs | fewest 80 GB GPUs (nodes of 8) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, (config, _) in ARCHITECTURES.items():
        total, largest = parameter_counts(config)
        for plan, row in plans(total, largest).items():
            fewest = row["min_gpus"] if row["min_gpus"] else f"> {GPU_COUNTS[-1]}"
            lines.append(
                f"| {recipe} | {total / 1e9:.2f} B | {plan} | {row['params']:.1f} GB | {row['grads']:.1f} GB | "
                f"{row['optimizer']:.1f} GB | {row['total_8']:.1f} GB | {row['cpu_8']:.0f} GB | {fewest} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
