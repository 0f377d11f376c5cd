"""Recipes: defaults per model, data conversion, and the exact recipe code path on CPU under 2-process DDP and
DeepSpeed ZeRO-2/ZeRO-3 (with a ZeRO checkpoint resumed with the VersaTune state)."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml
from datasets import Dataset

from versatune_hf.demo.corpus import load_demo_corpus
from versatune_hf.demo.runner import conversation_texts
from versatune_hf.demo.tiny import tiny_llama, train_tiny_tokenizer
from versatune_hf.recipes.models import RECIPES as RECIPE_MODELS
from versatune_hf.recipes.runner import parse
from versatune_hf.recipes.sft_data import apply_overrides, build_mixture, read_mixture, to_messages

from utils import EXIT_BEFORE_FINALIZATION, SUBPROCESS_TIMEOUT

RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
MODELS = ["llama2_7b", "llama2_13b", "llama3_8b", "qwen2_7b", "qwen2_5_7b", "qwen2_5_14b", "qwen2_5_32b"]


@pytest.mark.parametrize("name", MODELS)
def test_recipe_defaults_follow_the_paper_and_parse(name):
    defaults = RECIPE_MODELS[name].defaults
    assert defaults["per_device_train_batch_size"] * defaults["gradient_accumulation_steps"] * 8 == 128
    assert f'main("{name}")' in (RECIPES / f"{name}.py").read_text()  # the checkout's script runs this recipe
    recipe, versatune, args, model = parse(name, ["--output_dir", "out", "--use_cpu", "--bf16", "False"])
    assert model.model_name_or_path == defaults["model_name_or_path"]
    assert (args.learning_rate, args.lr_scheduler_type.value, args.weight_decay) == (2e-5, "cosine", 0.0)
    assert args.warmup_steps == 0.03 and args.max_length == 512 and args.gradient_checkpointing
    assert versatune.versatune_strategy == "versatune" and recipe.mixture is None


def test_command_line_and_yaml_override_defaults(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"learning_rate": 1e-5, "versatune_strategy": "uniform", "output_dir": "o"}))
    argv = ["--config", str(config), "--use_cpu", "--bf16", "False", "--versatune_eta", "0.5"]
    _, versatune, args, _ = parse("qwen2_5_7b", [*argv, "--versatune_odm_update_steps", "5"])
    assert args.learning_rate == 1e-5 and versatune.versatune_strategy == "uniform" and versatune.versatune_eta == 0.5
    assert versatune.callback().config.odm_update_steps == 5


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"instruction": "Define tort.", "input": "", "output": "A civil wrong."}, ["Define tort.", "A civil wrong."]),
        ({"instruction": "Summarise", "input": "Text.", "output": "S."}, ["Summarise\n\nText.", "S."]),
        ({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}, ["Q", "A"]),
        ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}, ["Q", "A"]),
        ({"prompt": "Q", "completion": "A"}, ["Q", "A"]),
        ({"question": "Q", "answer": "A"}, ["Q", "A"]),
    ],
)
def test_every_common_schema_becomes_one_conversation(row, expected):
    messages = to_messages(row)
    assert [m["content"] for m in messages] == expected and [m["role"] for m in messages] == ["user", "assistant"]


def test_unknown_schema_is_a_clear_error():
    with pytest.raises(ValueError, match=r"columns \['body'\].*instruction/input/output"):
        to_messages({"body": "x"})


def test_mixture_yaml_local_sources_overrides_and_eval_split(tmp_path):
    law = tmp_path / "law.jsonl"
    law.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(30)))
    Dataset.from_list([{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(20)]).save_to_disk(tmp_path / "code")
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"law": str(law), "code": {"source": "hub/placeholder"}}))
    mixture = apply_overrides(read_mixture(str(tmp_path / "mix.yaml")), [f"code={tmp_path / 'code'}"])
    train, evals = build_mixture(mixture, eval_rows=5, max_train_rows=10, seed=0, column="domain")
    assert sorted(evals) == ["code", "law"] and all(len(e) == 5 for e in evals.values())
    assert sorted(train["domain"]) == ["code"] * 10 + ["law"] * 10
    held_out = {m[0]["content"] for e in evals.values() for m in e["messages"]}
    assert not held_out & {m[0]["content"] for m in train["messages"]}
    with pytest.raises(ValueError, match="law=/data/law.jsonl"):
        apply_overrides(mixture, ["law"])


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    tokenizer = train_tiny_tokenizer(conversation_texts(load_demo_corpus()[0]), vocab_size=1024)
    tiny_llama(tokenizer, hidden_size=64).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def launch(launcher, output_dir, model_dir, *extra, port):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher,
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(port),
        EXIT_BEFORE_FINALIZATION,
        str(RECIPES / "qwen2_5_7b.py"),
        "--model_name_or_path",
        str(model_dir),
        "--smoke",
        "--use_cpu",
        "--output_dir",
        str(output_dir),
        "--eval_rows_per_domain",
        "8",
        "--max_train_rows_per_domain",
        "40",
        *extra,
    ]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    with open(output_dir / "versatune_history.jsonl") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.slow
def test_recipe_under_two_process_ddp(tmp_path, tiny_model_dir):
    history = launch(
        ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"], tmp_path, tiny_model_dir, port=29561
    )
    assert [record["step"] for record in history] == [10, 20]
    assert (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
def test_recipe_under_deepspeed_zero2_json_config(tmp_path, tiny_model_dir):
    launcher = ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    history = launch(
        launcher, tmp_path, tiny_model_dir, "--deepspeed", str(RECIPES / "deepspeed" / "zero2.json"), port=29562
    )
    assert [record["step"] for record in history] == [10, 20]
    assert (tmp_path / "checkpoint-10" / "global_step10").is_dir()


@pytest.mark.slow
def test_recipe_under_deepspeed_zero3_resumes_with_the_versatune_state(tmp_path, tiny_model_dir):
    """ZeRO-3 via the shipped accelerate config; resuming from the ZeRO checkpoint reproduces the weight history."""
    launcher = ["--config_file", str(RECIPES / "accelerate_configs" / "zero3.yaml")]
    full = launch(launcher, tmp_path / "full", tiny_model_dir, port=29563)
    assert (tmp_path / "full" / "checkpoint-10" / "global_step10").is_dir()
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoint-20")
    checkpoint = tmp_path / "resumed" / "checkpoint-10"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["VersaTuneCallback"]
    assert saved["attributes"]["run_state"]["sampler"]["schedule"][-1][0] == full[0]["switch_position"]
    resumed = launch(
        launcher, tmp_path / "resumed", tiny_model_dir, "--resume_from_checkpoint", str(checkpoint), port=29564
    )
    assert resumed == full
    assert len(full) == 2 and full[1]["weights_before"] == full[0]["weights_after"]


@pytest.mark.slow
def test_recipe_reference_model_under_deepspeed_zero3(tmp_path, tiny_model_dir):
    """`--versatune_reference_model` under ZeRO-3: the reference model is loaded partitioned and evaluated through the
    Trainer's evaluation loop; with the initial weights as reference, ℓ_ref equals the step-0 eval losses."""
    launcher = ["--config_file", str(RECIPES / "accelerate_configs" / "zero3.yaml")]
    extra = ["--versatune_reference_model", str(tiny_model_dir), "--eval_on_start", "True"]
    history = launch(launcher, tmp_path, tiny_model_dir, *extra, port=29566)
    assert [record["step"] for record in history] == [0, 10, 20]
    assert history[0]["reference_losses"] == pytest.approx(history[0]["losses"], rel=1e-5)


@pytest.mark.slow
def test_recipe_odm_under_deepspeed_zero3_reads_both_ranks_losses(tmp_path, tiny_model_dir):
    """odm's forward hook works under the DeepSpeed engine: each round's token-weighted rewards, averaged over the
    5 steps of a logging interval, are the global training loss the Trainer logged (2 ranks, ZeRO-3)."""
    launcher = ["--config_file", str(RECIPES / "accelerate_configs" / "zero3.yaml")]
    history = launch(launcher, tmp_path, tiny_model_dir, "--versatune_strategy", "odm", port=29565)
    assert [record["step"] for record in history] == list(range(1, 21))
    step_loss = {
        record["step"]: sum(record["rewards"][d] * record["reward_tokens"][d] for d in record["rewards"])
        / sum(record["reward_tokens"].values())
        for record in history
    }
    log_history = json.loads((tmp_path / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    logged = {entry["step"]: entry["loss"] for entry in log_history if "loss" in entry}
    assert sorted(logged) == [5, 10, 15, 20]
    for step, loss in logged.items():
        assert sum(step_loss[s] for s in range(step - 4, step + 1)) / 5 == pytest.approx(loss, rel=1e-5)


def test_memory_estimates_use_the_published_parameter_counts():
    """The architectures behind the memory table reproduce each model's published size within 0.5%."""
    spec = importlib.util.spec_from_file_location("memory_estimates", RECIPES / "memory_estimates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.ARCHITECTURES) == sorted(MODELS)
    for config, published in module.ARCHITECTURES.values():
        total, largest = module.parameter_counts(config)
        assert total == pytest.approx(published, rel=0.005)
        assert largest == config.vocab_size * config.hidden_size
    plans = module.plans(*module.parameter_counts(module.ARCHITECTURES["qwen2_5_32b"][0]))
    assert plans["ZeRO-3"]["min_gpus"] == 16 and plans["ZeRO-3 + CPU offload"]["min_gpus"] == 8
    assert plans["ZeRO-3"]["total_8"] * 1e9 > module.HEADROOM * module.GPU_BYTES
