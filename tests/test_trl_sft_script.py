"""TRL's own `trl/scripts/sft.py`, as installed, with exactly the README's two added lines, on 1 and 2 CPU processes
under TRL's own accelerate configs (`multi_gpu.yaml`, `zero3.yaml`, changed only to run on CPU)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import trl
import yaml
from datasets import Dataset

from versatune_hf import VersaTuneArguments
from versatune_hf.demo.corpus import DATA_DIR, first_rows_per_domain
from versatune_hf.demo.runner import conversation_texts
from versatune_hf.demo.tiny import tiny_llama, train_tiny_tokenizer

from utils import EXIT_BEFORE_FINALIZATION, SUBPROCESS_TIMEOUT

pytestmark = pytest.mark.slow

TRL_PACKAGE = pathlib.Path(trl.__file__).parent
README_IMPORT = "from versatune_hf import VersaTuneCallback"
README_CALLBACKS = "callbacks=[VersaTuneCallback(train_dataset=dataset[script_args.dataset_train_split])],"


def sft_script_with_the_readme_lines(folder: pathlib.Path) -> pathlib.Path:
    """Copy TRL's installed sft.py and add the README's import and `callbacks=` argument, nothing else."""
    source = (TRL_PACKAGE / "scripts" / "sft.py").read_text()
    trainer_import = "    from trl import SFTTrainer"
    trainer_end = "        peft_config=get_peft_config(model_args),\n    )"
    assert source.count(trainer_import) == 1 and source.count(trainer_end) == 1, "TRL's sft.py changed shape"
    source = source.replace(trainer_import, f"    {README_IMPORT}\n{trainer_import}")
    source = source.replace(trainer_end, trainer_end.replace("\n    )", f"\n        {README_CALLBACKS}\n    )"))
    script = folder / "sft.py"
    script.write_text(source)
    return script


def sft_script_with_versatune_options(folder: pathlib.Path) -> pathlib.Path:
    """TRL's sft.py with the README's edit for command-line options: `VersaTuneArguments` in the parser, the callback
    built from it."""
    script = sft_script_with_the_readme_lines(folder)
    source = script.read_text()
    edits = {
        "    dataclass_types = (ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig)": (
            "    from versatune_hf import VersaTuneArguments\n\n"
            "    dataclass_types = (ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig, VersaTuneArguments)"
        ),
        "script_args, training_args, model_args, dataset_args = parser": (
            "script_args, training_args, model_args, dataset_args, versatune_args = parser"
        ),
        "    main(script_args, training_args, model_args, dataset_args)\n": (
            "    main(script_args, training_args, model_args, dataset_args, versatune_args)\n"
        ),
        "def main(script_args, training_args, model_args, dataset_args):": (
            "def main(script_args, training_args, model_args, dataset_args, versatune_args):"
        ),
        README_CALLBACKS: README_CALLBACKS.replace("VersaTuneCallback(", "versatune_args.callback("),
    }
    for old, new in edits.items():
        assert source.count(old) == 1, f"TRL's sft.py changed shape: {old!r}"
        source = source.replace(old, new)
    script.write_text(source)
    return script


def trl_accelerate_config(name: str, folder: pathlib.Path) -> pathlib.Path:
    """TRL's shipped accelerate config with only `use_cpu`/`mixed_precision` changed for a CPU machine."""
    config = yaml.safe_load((TRL_PACKAGE / "accelerate_configs" / name).read_text())
    config.update(mixed_precision="no", use_cpu=config["distributed_type"] != "DEEPSPEED")
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """A tiny local model and a local dataset folder with `train`/`test` splits and a `domain` column, as a user's
    Hub dataset would have."""
    folder = tmp_path_factory.mktemp("sft_script")
    train = Dataset.from_json(str(DATA_DIR / "train.jsonl"))
    tokenizer = train_tiny_tokenizer(conversation_texts(train), vocab_size=1024)
    tiny_llama(tokenizer, hidden_size=64).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    first_rows_per_domain(train, 40).to_json(folder / "data" / "train.jsonl")
    first_rows_per_domain(Dataset.from_json(str(DATA_DIR / "eval.jsonl")), 8).to_json(folder / "data" / "test.jsonl")
    return folder / "model", folder / "data"


def run_sft(script, model_dir, data_dir, output_dir, *extra, launcher=(), port=None):
    arguments = [
        "--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--output_dir", str(output_dir),
        "--use_cpu", "True", "--bf16", "False", "--max_length", "128", "--report_to", "none",
        "--max_steps", "20", "--eval_strategy", "steps", "--eval_steps", "10", "--save_strategy", "steps",
        "--save_steps", "10", "--logging_steps", "5", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3",
        "--load_best_model_at_end", "True", "--metric_for_best_model", "eval_loss", *extra,
    ]  # fmt: skip
    if launcher:
        command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", "2"]
        command += ["--main_process_port", str(port), EXIT_BEFORE_FINALIZATION, str(script), *arguments]
    else:
        command = [sys.executable, str(script), *arguments]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return result


def check_reweighted_with_best_model(output_dir):
    with open(output_dir / "versatune_history.jsonl") as handle:
        history = [json.loads(line) for line in handle]
    assert [record["step"] for record in history] == [10, 20]
    assert history[0]["weights_after"] != history[0]["weights_before"]
    state = json.loads((output_dir / "checkpoint-20" / "trainer_state.json").read_text())
    overall = {entry["step"]: entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry}
    assert sorted(overall) == [10, 20]
    assert state["best_metric"] == pytest.approx(min(overall.values()))
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{min(overall, key=overall.get)}")


def test_trls_sft_script_with_the_readme_lines_on_one_process(tmp_path, model_and_data):
    script = sft_script_with_the_readme_lines(tmp_path)
    result = run_sft(script, *model_and_data, tmp_path / "out")
    check_reweighted_with_best_model(tmp_path / "out")
    assert "[VersaTune" in result.stderr  # its messages show, with their level
    # Killed after step 10 and resumed with sft.py's own --resume_from_checkpoint: the same updates, to the byte.
    shutil.copytree(tmp_path / "out", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoint-20")
    checkpoint = tmp_path / "resumed" / "checkpoint-10"
    run_sft(script, *model_and_data, tmp_path / "resumed", "--resume_from_checkpoint", str(checkpoint))
    history = "versatune_history.jsonl"
    assert (tmp_path / "resumed" / history).read_bytes() == (tmp_path / "out" / history).read_bytes()


@pytest.mark.parametrize(("config", "port"), [("multi_gpu.yaml", 29571), ("zero3.yaml", 29572)])
def test_trls_sft_script_with_the_readme_lines_on_two_processes(tmp_path, model_and_data, config, port):
    script = sft_script_with_the_readme_lines(tmp_path)
    launcher = ["--config_file", str(trl_accelerate_config(config, tmp_path))]
    run_sft(script, *model_and_data, tmp_path / "out", launcher=launcher, port=port)
    check_reweighted_with_best_model(tmp_path / "out")


def test_versatune_options_on_sft_scripts_command_line(tmp_path, model_and_data):
    script = sft_script_with_versatune_options(tmp_path)
    options = ["--versatune_strategy", "uniform", "--versatune_history_file", "mixture.jsonl"]
    run_sft(script, *model_and_data, tmp_path / "out", *options)
    with open(tmp_path / "out" / "mixture.jsonl") as handle:
        history = [json.loads(line) for line in handle]
    assert [record["strategy"] for record in history] == ["uniform", "uniform"]
    assert set(history[-1]["weights_after"].values()) == {1 / 6}
    # That uniform run is a proxy run: its history file gives the next run's reference losses on the command line.
    proxy = VersaTuneArguments(versatune_reference_losses=str(tmp_path / "out" / "mixture.jsonl")).to_config()
    assert proxy.reference_losses == history[-1]["losses"] and len(proxy.reference_losses) == 6
