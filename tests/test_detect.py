"""Phase 1 detection: answer parsing, the local classifier, sampling with resume, labelling, results and plots."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from versatune_hf.demo.tiny import tiny_llama, train_tiny_tokenizer
from versatune_hf.detection.detect import (
    DetectArguments,
    DetectPlotArguments,
    detect_result,
    generate_samples,
    run_detect,
    run_detect_plot,
)
from versatune_hf.detection.labelling import DEFAULT_DOMAINS, JudgeLabeller, Labelled, as_labeller, parse_topic
from versatune_hf.mixing import resolve_initial_weights

from utils import SUBPROCESS_TIMEOUT

ANSWERS = [
    ("law", "law"),
    ("Law.", "law"),
    ("LEGAL", "law"),
    ("The topic is law, not medicine.", "law"),
    ("Not law, but medical & health care.", "medicine"),
    ("medical & health care", "medicine"),
    ("Healthcare", "medicine"),
    ("Topic: Finance", "finance"),
    ("This is about economics and banking.", "finance"),
    ("science (physics)", "science"),
    ("Programming / code", "code"),
    ("It is source code written in Python.", "code"),
    ("Other", "other"),
    ("none of the above", "other"),
    ('"Quarterly Earnings"', None),
    ("I cannot determine the topic.", None),
    ("", None),
    ("Law, Medical & Health Care, Finance, Science, Code, Other", None),
    ("lawn mowing", None),
]


@pytest.mark.parametrize("answer, expected", ANSWERS)
def test_parse_realistic_judge_answers(answer, expected):
    assert parse_topic(answer, DEFAULT_DOMAINS) == expected


def test_local_classifier_on_the_bundled_corpus():
    """Held-out accuracy on the bundled eval split (the number the README states)."""
    from versatune_hf.detection.detect import local_classifier

    classifier, accuracy = local_classifier("local")
    assert sorted(classifier.domains) == sorted(DEFAULT_DOMAINS)
    assert accuracy >= 0.8
    labelled = classifier(["The court granted the motion to dismiss the plaintiff's claim.", "def f(x): return x"])
    assert labelled.labels == ["law", "code"]
    assert sum(labelled.probabilities[0].values()) == pytest.approx(1.0)


def test_local_classifier_trained_on_a_user_file(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"text": f"apple banana fruit {i}", "domain": "fruit"} for i in range(20)]
    rows += [{"text": f"engine wheel car {i}", "domain": "cars"} for i in range(20)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from versatune_hf.detection.detect import local_classifier

    classifier, accuracy = local_classifier(str(path))
    assert classifier.domains == ["cars", "fruit"] and accuracy == 1.0


@pytest.fixture(scope="module")
def tiny_model():
    tokenizer = train_tiny_tokenizer(["the court held the contract void", "def f(x): return x"] * 20, vocab_size=300)
    return tiny_llama(tokenizer, seed=0), tokenizer


def test_sampling_resumes_after_an_interruption(tmp_path, tiny_model):
    """A run cut short (a torn last line included) continues where it stopped and ends with the same samples."""
    model, tokenizer = tiny_model
    reference = generate_samples(model, tokenizer, str(tmp_path / "full"), 12, 8, 4, seed=0)
    assert [s["index"] for s in reference] == list(range(12))
    assert len({s["text"] for s in reference}) > 1

    partial = tmp_path / "partial"
    generate_samples(model, tokenizer, str(partial), 6, 8, 4, seed=0)
    own = partial / "samples.rank0.jsonl"
    lines = own.read_text().splitlines()
    own.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    first_five = [json.loads(line) for line in lines[:5]]
    resumed = generate_samples(model, tokenizer, str(partial), 12, 8, 4, seed=0)
    assert resumed == reference
    assert resumed[:5] == first_five
    merged = [json.loads(line) for line in (partial / "samples.jsonl").read_text().splitlines()]
    assert merged == reference


def test_shares_counts_and_unparseable_from_a_callable_labeller(tmp_path):
    samples = [{"index": i, "text": text} for i, text in enumerate(["a", "b", "c", "d"])]
    labelled = as_labeller(lambda texts: ["law", "code", None, "law"])([s["text"] for s in samples])
    result = detect_result(samples, labelled, ["law", "code", "other"], soft=False, smoothing=0.0, model="m")
    assert result["counts"] == {"law": 2, "code": 1, "other": 0}
    assert result["unparseable"] == 1
    assert result["shares"] == pytest.approx({"law": 2 / 3, "code": 1 / 3, "other": 0.0})
    smoothed = detect_result(samples, labelled, ["law", "code", "other"], soft=False, smoothing=1.0)
    assert smoothed["shares"]["other"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="probabilities"):
        detect_result(samples, labelled, ["law", "code", "other"], soft=True, smoothing=0.0)
    soft = Labelled(["law", "code"], [{"law": 0.8, "code": 0.2}, {"law": 0.4, "code": 0.6}])
    assert detect_result(samples[:2], soft, ["law", "code"], True, 0.0)["shares"] == pytest.approx(
        {"law": 0.6, "code": 0.4}
    )


@pytest.mark.slow
def test_detect_end_to_end_with_the_local_classifier(tmp_path):
    """`versatune detect` on a tiny model: samples, labels, detect.json, detect.png, and the callback reads it."""
    args = DetectArguments(
        model="tiny", output_dir=str(tmp_path / "tiny"), num_samples=10, batch_size=4, max_new_tokens=24, soft=True
    )
    result = run_detect(args)
    saved = json.loads((tmp_path / "tiny" / "detect.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert sum(saved["counts"].values()) + saved["unparseable"] == saved["num_samples"] == 10
    assert saved["share_mode"] == "soft" and sum(saved["shares"].values()) == pytest.approx(1.0)
    assert sum(saved["shares_hard"].values()) == pytest.approx(1.0)
    assert saved["classifier_held_out_accuracy"] >= 0.8
    assert all(sample["label"] in DEFAULT_DOMAINS and "probabilities" in sample for sample in saved["samples"])
    with Image.open(tmp_path / "tiny" / "detect.png") as image:
        image.verify()
    weights = resolve_initial_weights(str(tmp_path / "tiny" / "detect.json"), dict.fromkeys(DEFAULT_DOMAINS, 1))
    assert weights == pytest.approx(saved["shares"])

    other = dict(saved, model="another-model", shares=dict.fromkeys(DEFAULT_DOMAINS, 1 / 6))
    (tmp_path / "other.json").write_text(json.dumps(other))
    plot = DetectPlotArguments(
        results=f"{tmp_path / 'tiny' / 'detect.json'},{tmp_path / 'other.json'}", output=str(tmp_path / "both.png")
    )
    assert run_detect_plot(plot) == 2
    with Image.open(tmp_path / "both.png") as image:
        image.verify()


@pytest.mark.slow
def test_judge_path_with_smollm2():
    """SmolLM2-135M-Instruct judges through its chat template; answers are kept, parsed or counted unparseable."""
    from versatune_hf.demo.runner import load_smollm2

    model, tokenizer = load_smollm2()
    judge = JudgeLabeller(model, tokenizer, probabilities=True, batch_size=2, max_new_tokens=12)
    texts = [
        "The defendant appealed the verdict, arguing the contract clause was unenforceable under state law.",
        "Quarterly earnings rose 12% as the bank's net interest margin widened and buybacks continued.",
        "def add(a, b):\n    return a + b",
    ]
    labelled = judge(texts)
    assert len(labelled.answers) == 3 and all(labelled.answers)
    assert all(label is None or label in DEFAULT_DOMAINS for label in labelled.labels)
    assert labelled.labels == [parse_topic(answer, DEFAULT_DOMAINS) for answer in labelled.answers]
    for probabilities in labelled.probabilities:
        assert sum(probabilities.values()) == pytest.approx(1.0)
    # A 135M judge is weak (it mislabels the code snippet), but its topic probabilities get the law and finance texts.
    assert [max(p, key=p.get) for p in labelled.probabilities[:2]] == ["law", "finance"]
    samples = [{"index": i, "text": t} for i, t in enumerate(texts)]
    result = detect_result(samples, labelled, DEFAULT_DOMAINS, soft=False, smoothing=0.0)
    assert result["unparseable"] == sum(label is None for label in labelled.labels)
    assert [s["answer"] for s in result["samples"]] == labelled.answers


@pytest.mark.slow
def test_sampling_is_split_across_processes_and_merged(tmp_path):
    """Under `accelerate launch` with 2 processes each rank samples its batches; the merge equals a 1-process run."""
    script = tmp_path / "sample.py"
    script.write_text(
        "import sys\n"
        "from versatune_hf.detection.detect import generate_samples\n"
        "from versatune_hf.demo.tiny import tiny_llama, train_tiny_tokenizer\n"
        "tokenizer = train_tiny_tokenizer(['the court held the contract void', 'def f(x): return x'] * 20, 300)\n"
        "generate_samples(tiny_llama(tokenizer, seed=0), tokenizer, sys.argv[1], 10, 8, 2, seed=0)\n"
    )
    launch = (
        f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 "
        "--mixed_precision no --dynamo_backend no --main_process_port 29544"
    ).split()
    subprocess.run(
        [*launch, str(script), str(tmp_path / "two")], check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT
    )
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one")],
        check=True,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    rank_files = [tmp_path / "two" / f"samples.rank{r}.jsonl" for r in (0, 1)]
    assert all(os.path.getsize(path) > 0 for path in rank_files)
    assert (tmp_path / "two" / "samples.jsonl").read_text() == (tmp_path / "one" / "samples.jsonl").read_text()
