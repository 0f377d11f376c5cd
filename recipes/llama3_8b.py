r"""VersaTune full fine-tuning of LLaMA3-8B on the paper's six-domain mixture.

    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml \
        recipes/llama3_8b.py --output_dir out/llama3_8b

Global batch 128 = 4 per GPU × 8 GPUs × 4 gradient accumulation. Any option can be overridden on the command
line or in a YAML file (`--config my.yaml`); see recipes/README.md. From an installed package:
`python -m versatune_hf.recipes llama3_8b [flags]`.
"""

from versatune_hf.recipes.runner import main

if __name__ == "__main__":
    main("llama3_8b")
