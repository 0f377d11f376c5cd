"""The seven models of the VersaTune paper, each with the batch layout of a global batch of 128 on 8 GPUs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """One model's defaults over the paper's training setup, and the accelerate config it is launched with."""

    model_name_or_path: str
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    launch_config: str
    """File in `recipes/accelerate_configs/` of a checkout (TRL ships `zero3.yaml` too)."""

    @property
    def defaults(self) -> dict[str, Any]:
        """The command-line defaults this recipe sets."""
        return {
            "model_name_or_path": self.model_name_or_path,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }


RECIPES = {
    "llama2_7b": Recipe("meta-llama/Llama-2-7b-hf", 4, 4, "zero3.yaml"),
    "llama2_13b": Recipe("meta-llama/Llama-2-13b-hf", 2, 8, "zero3.yaml"),
    "llama3_8b": Recipe("meta-llama/Meta-Llama-3-8B", 4, 4, "zero3.yaml"),
    "qwen2_7b": Recipe("Qwen/Qwen2-7B", 4, 4, "zero3.yaml"),
    "qwen2_5_7b": Recipe("Qwen/Qwen2.5-7B", 4, 4, "zero3.yaml"),
    "qwen2_5_14b": Recipe("Qwen/Qwen2.5-14B", 2, 8, "zero3.yaml"),
    "qwen2_5_32b": Recipe("Qwen/Qwen2.5-32B", 1, 16, "zero3_offload.yaml"),
}
