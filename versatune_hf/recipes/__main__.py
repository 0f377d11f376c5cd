"""`python -m versatune_hf.recipes <model> [flags]`: a recipe from an installed package, no checkout needed.

accelerate launch --config_file zero3.yaml -m versatune_hf.recipes qwen2_5_7b --output_dir out/qwen2_5_7b
"""

import sys

from .models import RECIPES


def usage() -> str:
    lines = ["usage: python -m versatune_hf.recipes <model> [flags]   (<model> --help lists the flags)", "", "models:"]
    lines += [
        f"  {name:<12} {recipe.model_name_or_path}, suggested accelerate config: {recipe.launch_config}"
        for name, recipe in RECIPES.items()
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in RECIPES:
        asked_for_help = len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help")
        print(usage(), file=sys.stdout if asked_for_help else sys.stderr)
        if len(sys.argv) > 1 and not asked_for_help:
            print(f"\nunknown model {sys.argv[1]!r}", file=sys.stderr)
        sys.exit(0 if asked_for_help else 2)
    from .runner import main

    main(sys.argv[1], sys.argv[2:])
