"""Recipes on a user's own data: one dataset with a domain column (with or without its own test split), repeated
`--dataset_override`, every VersaTune option on the command line, and `--smoke` as a new user runs it."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict

from versatune_hf import VersaTuneArguments, VersaTuneConfig
from versatune_hf.recipes.runner import RecipeArguments, mixture_of, parse
from versatune_hf.recipes.sft_data import apply_overrides, build_mixture

from utils import SUBPROCESS_TIMEOUT

BASE_ARGS = ["--output_dir", "out", "--use_cpu", "True", "--bf16", "False"]


def rows(domains_and_counts, tag):
    return [
        {"instruction": f"{tag} question {domain} {i}", "output": f"answer {i}", "topic": domain}
        for domain, count in domains_and_counts.items()
        for i in range(count)
    ]


@pytest.fixture
def user_dataset(tmp_path):
    """A folder with train.jsonl and test.jsonl, each row labelled in a `topic` column."""
    folder = tmp_path / "my_data"
    folder.mkdir()
    for split, counts in (("train", {"law": 30, "code": 20}), ("test", {"law": 4, "code": 3})):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows(counts, split)))
    return folder


def recipe_data(argv):
    recipe, versatune, training_args, _ = parse("qwen2_5_7b", [*BASE_ARGS, *argv])
    config = versatune.to_config()
    mixture = mixture_of(recipe, config.domain_column, training_args.output_dir)
    return build_mixture(
        mixture, recipe.eval_rows_per_domain, recipe.max_train_rows_per_domain, training_args.seed, "topic"
    )


def test_one_dataset_with_its_own_test_split(user_dataset):
    train, evals = recipe_data(["--dataset_name", str(user_dataset), "--versatune_domain_column", "topic"])
    assert sorted(train["topic"]) == ["code"] * 20 + ["law"] * 30
    assert {name: len(rows) for name, rows in evals.items()} == {"code": 3, "law": 4}
    assert all(m[0]["content"].startswith("test") for rows in evals.values() for m in rows["messages"])


def test_one_file_without_a_test_split_holds_out_eval_rows(user_dataset):
    argv = ["--dataset_name", str(user_dataset / "train.jsonl"), "--versatune_domain_column", "topic"]
    train, evals = recipe_data([*argv, "--eval_rows_per_domain", "5", "--max_train_rows_per_domain", "10"])
    assert {name: len(rows) for name, rows in evals.items()} == {"code": 5, "law": 5}
    assert sorted(train["topic"]) == ["code"] * 10 + ["law"] * 10
    held_out = {m[0]["content"] for rows in evals.values() for m in rows["messages"]}
    assert not held_out & {m[0]["content"] for m in train["messages"]}


def test_a_saved_dataset_dict_and_a_missing_domain_column(tmp_path):
    DatasetDict(train=Dataset.from_list(rows({"law": 12, "code": 12}, "t"))).save_to_disk(tmp_path / "saved")
    argv = ["--dataset_name", str(tmp_path / "saved"), "--eval_rows_per_domain", "2"]
    train, evals = recipe_data([*argv, "--versatune_domain_column", "topic"])
    assert sorted(train["topic"]) == ["code"] * 10 + ["law"] * 10 and sorted(evals) == ["code", "law"]
    with pytest.raises(ValueError, match=r"no 'domain' column.*--versatune_domain_column"):
        recipe_data(argv)


def test_repeated_dataset_override_keeps_every_domain(tmp_path):
    """recipes/README.md says to repeat the flag; argparse used to keep only the last one."""
    argv = ["--dataset_override", "law=/data/law.jsonl", "--dataset_override", "code=/data/code.jsonl"]
    recipe, *_ = parse("qwen2_5_7b", [*BASE_ARGS, *argv, "--dataset_override", "tax=a.jsonl", "vat=b.jsonl"])
    assert recipe.dataset_override == ["law=/data/law.jsonl", "code=/data/code.jsonl", "tax=a.jsonl", "vat=b.jsonl"]
    mixture = mixture_of(recipe, "domain", str(tmp_path))
    assert mixture["law"] == {"source": "/data/law.jsonl"} and mixture["code"] == {"source": "/data/code.jsonl"}
    assert mixture["tax"] == {"source": "a.jsonl"}
    with pytest.raises(ValueError, match=r"names domain 'law' twice"):
        apply_overrides({}, ["law=a.jsonl", "law=b.jsonl"])


def test_every_config_field_is_a_command_line_flag(tmp_path):
    """Each VersaTuneConfig field, set to a non-default value on the command line, reaches the config."""
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"reference_losses": {"law": 1.5, "code": 0.5}}))
    values = {
        "domain_column": "topic",
        "strategy": "expansion",
        "eta": 0.5,
        "forgetting_weight": 0.3,
        "initial_weights": {"law": 0.25, "code": 0.75},
        "reference_losses": {"law": 1.5, "code": 0.5},
        "reference_model": "some/model",
        "target_domain": "law",
        "target_max_weight": 0.7,
        "progress_worst_lift": 0.02,
        "odm_smoothing": 0.5,
        "odm_update_steps": 4,
        "min_weight": 0.05,
        "max_weight_change": 0.2,
        "smoothing": 0.1,
        "divergence_factor": 5.0,
        "seed": 11,
        "switch_delay_steps": 2,
        "history_file": "mixture.jsonl",
    }
    assert sorted(values) == sorted(field.name for field in dataclasses.fields(VersaTuneConfig))
    default = VersaTuneConfig()
    assert all(getattr(default, name) != value for name, value in values.items())
    argv = []
    for name, value in values.items():
        text = str(refs) if name == "reference_losses" else json.dumps(value) if isinstance(value, dict) else value
        argv += [f"--versatune_{name}", str(text)]
    _, versatune, training_args, _ = parse("qwen2_5_7b", [*BASE_ARGS, "--seed", "3", *argv])
    assert dataclasses.asdict(versatune.to_config()) == values
    assert training_args.seed == 3  # no collision with TrainingArguments.seed


def test_versatune_arguments_in_a_yaml_config_and_bad_values(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"versatune_reference_losses": {"law": 1.0}, "versatune_strategy": "dbl"}))
    _, versatune, _, _ = parse("qwen2_5_7b", [*BASE_ARGS, "--config", str(config)])
    assert versatune.to_config().reference_losses == {"law": 1.0} and versatune.to_config().strategy == "dbl"
    with pytest.raises(SystemExit):  # argparse: invalid choice, with the list of strategies
        parse("qwen2_5_7b", [*BASE_ARGS, "--versatune_strategy", "VersaTune"])
    with pytest.raises(ValueError, match=r"neither a JSON object nor an existing JSON file"):
        VersaTuneArguments(versatune_reference_losses="missing.json").to_config()


def test_smoke_sizes_are_defaults_under_the_users_values(tmp_path):
    recipe, _, args, _ = parse("qwen2_5_7b", ["--output_dir", "out", "--smoke", "--max_steps", "6"])
    assert args.max_steps == 6 and args.eval_steps == 10 and not args.bf16
    assert args.use_cpu == (not torch.cuda.is_available()) and recipe.max_train_rows_per_domain == 40
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump({"smoke": True, "eval_steps": 4}))
    recipe, _, args, _ = parse("qwen2_5_7b", ["--output_dir", "out", "--config", str(config)])
    assert recipe.smoke and args.eval_steps == 4 and args.max_steps == 20


def test_smoke_never_replaces_the_users_mixture(tmp_path):
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"law": "my/law", "code": "my/code"}))
    recipe = RecipeArguments(mixture=str(tmp_path / "mix.yaml"), smoke=True)
    assert mixture_of(recipe, "domain", str(tmp_path)) == {"law": {"source": "my/law"}, "code": {"source": "my/code"}}
    bundled = mixture_of(RecipeArguments(smoke=True), "domain", str(tmp_path))
    assert len(bundled) == 6 and all(spec["source"].startswith(str(tmp_path)) for spec in bundled.values())


def test_python_m_recipes_lists_the_models():
    result = subprocess.run(
        [sys.executable, "-m", "versatune_hf.recipes", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "qwen2_5_7b" in result.stdout and "llama3_8b" in result.stdout


@pytest.mark.slow
def test_smoke_runs_as_is_from_the_installed_package_on_the_users_data(tmp_path, user_dataset):
    """A new user on a CPU-only machine: no --use_cpu, no model, only their dataset and --smoke."""
    command = [sys.executable, "-m", "versatune_hf.recipes", "qwen2_5_7b", "--smoke", "--output_dir", str(tmp_path)]
    command += ["--dataset_name", str(user_dataset), "--versatune_domain_column", "topic", "--max_steps", "6"]
    command += ["--eval_steps", "3", "--save_steps", "3"]
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    with open(tmp_path / "versatune_history.jsonl") as handle:
        history = [json.loads(line) for line in handle]
    assert [record["step"] for record in history] == [3, 6]
    assert sorted(history[0]["weights_after"]) == ["code", "law"]
    assert (tmp_path / "smoke_model" / "config.json").exists() and "Final VersaTune weights" in result.stdout


@pytest.mark.slow
def test_accelerate_launch_runs_the_installed_recipe_module_on_two_processes(tmp_path, user_dataset):
    """`accelerate launch -m versatune_hf.recipes <model>`: the multi-process entry point without a checkout."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1"]
    command += ["--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", "29581", "-m", "versatune_hf.recipes", "qwen2_5_7b", "--smoke"]
    command += [
        "--output_dir",
        str(tmp_path),
        "--dataset_name",
        str(user_dataset),
        "--versatune_domain_column",
        "topic",
    ]
    command += ["--max_steps", "6", "--eval_steps", "3", "--save_steps", "3"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    with open(tmp_path / "versatune_history.jsonl") as handle:
        assert [json.loads(line)["step"] for line in handle] == [3, 6]
