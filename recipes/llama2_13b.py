r"""VersaTune full fine-tuning of LLaMA2-13B on the paper's six-domain mixture.

    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \
        recipes/llama2_13b.py --output_dir out/llama2_13b

Global batch 128 = 2 per GPU × 8 GPUs × 8 gradient accumulation. Any option can be overridden on the command
line or in a YAML file (`--config my.yaml`); see recipes/README.md.
"""

from versatune_hf.recipes.runner import main

DEFAULTS = dict(
    model_name_or_path="meta-llama/Llama-2-13b-hf", per_device_train_batch_size=2, gradient_accumulation_steps=8
)

if __name__ == "__main__":
    main(**DEFAULTS)
