r"""VersaTune full fine-tuning of Qwen2.5-14B on the paper's six-domain mixture.

    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \
        recipes/qwen2_5_14b.py --output_dir out/qwen2_5_14b

Global batch 128 = 2 per GPU × 8 GPUs × 8 gradient accumulation. Any option can be overridden on the command
line or in a YAML file (`--config my.yaml`); see recipes/README.md. From an installed package:
`python -m versatune_hf.recipes qwen2_5_14b [flags]`.
"""

from versatune_hf.recipes.runner import main

if __name__ == "__main__":
    main("qwen2_5_14b")
