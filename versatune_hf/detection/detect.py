"""Phase 1, domain knowledge detection (`versatune detect`): what the base model writes when given nothing.

Unconditional continuations of a BOS-only prompt (EOS where the model has no BOS) are sampled with temperature 1.0,
top_p 1.0, no top-k and repetition penalty 1.1, labelled with a domain, and the share of each domain becomes the
starting mixture: `VersaTuneCallback(initial_weights="<output_dir>/detect.json")`.

Backends (`--backend`): `transformers` (the default) samples with `model.generate`, batched, also split over the
processes of `accelerate launch`, and judges with `labelling.JudgeLabeller`. For the paper's scale (10,000 samples of
a 7B model, a 72B judge) `vllm` samples and judges with vLLM in this process (the optional extra
`pip install "versatune-hf[vllm]"`; the reference code judged with vLLM; `--vllm_kwargs`/`--judge_vllm_kwargs` pass
e.g. `tensor_parallel_size` to `vllm.LLM`), and `openai` sends requests to an OpenAI-compatible server already running
(`vllm serve MODEL`; `--api_base http://localhost:8000/v1`, `--model`/`--judge` are the served names, `--tokenizer`
gives the BOS id where `--model` is no Hub id or path). `--judge_api_base URL` asks the judge on a server with any
backend. All keep the same sampling parameters, BOS-only prompt and resumable `samples.jsonl`; see `backends` for
what differs (a seed per sample, not per batch, as vLLM derives the seeds of a request's samples; no primed answer
and no `--soft` for a served judge) and for what was tested: the vLLM path only against a fake `vllm` module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..utils.jsonlines import JsonLinesFile
from ..utils.plots import plot_shares, pyplot
from .labelling import DEFAULT_DOMAINS, JudgeLabeller, Labelled, LocalClassifier, conversation_text, shares

SAMPLES_FILE = "samples.jsonl"
RESULT_FILE = "detect.json"
BACKENDS = ("transformers", "vllm", "openai")
MODEL_ALIASES = ("base", "tiny", "smollm2")


@dataclass
class DetectArguments:
    """Options of `versatune detect`; each field is a `--flag` of the command."""

    model: str = field(
        metadata={
            "help": "Base model to sample from: a local path, a Hub id, 'smollm2', 'base' (the demo's pretrained "
            "base) or 'tiny' (untrained)."
        }
    )
    output_dir: str = field(default="versatune-detect", metadata={"help": "Where samples and results go."})
    num_samples: int = field(default=1000, metadata={"help": "Unconditional samples to draw (the paper: 10,000)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Length of each sample in tokens."})
    batch_size: int = field(
        default=16,
        metadata={"help": "Samples generated per forward batch (--backend transformers; vLLM batches by itself)."},
    )
    judge: str | None = field(
        default=None, metadata={"help": "Instruct model that labels each sample (path, Hub id or 'smollm2')."}
    )
    classifier: str | None = field(
        default=None,
        metadata={
            "help": "'local' (a word classifier trained on the bundled corpus) or a JSON-lines file with 'text' or "
            "'messages' and 'domain' columns to train it on. Used when --judge is not given."
        },
    )
    soft: bool = field(
        default=False, metadata={"help": "Average per-text domain probabilities instead of counting hard labels."}
    )
    smoothing: float = field(default=0.0, metadata={"help": "Pseudo-count added to every domain's share."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (sample i is reproducible)."})
    domains: str = field(default=",".join(DEFAULT_DOMAINS), metadata={"help": "Comma-separated domain names."})
    backend: str = field(
        default="transformers",
        metadata={
            "help": "What samples (and judges): 'transformers' (the default), 'vllm' (in this process; needs the "
            "extra versatune-hf[vllm]) or 'openai' (an OpenAI-compatible server that is running, see --api_base).",
            "choices": list(BACKENDS),
        },
    )
    api_base: str | None = field(
        default=None,
        metadata={
            "help": "--backend openai: the server's base URL, e.g. http://localhost:8000/v1 for `vllm serve MODEL`; "
            "--model and --judge are then the names it serves."
        },
    )
    judge_api_base: str | None = field(
        default=None,
        metadata={
            "help": "Base URL of an OpenAI-compatible server that serves --judge, when that is not --api_base; with "
            "it the judge is asked there whatever --backend samples."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable with the servers' API key, sent when set (`vllm serve --api-key`)."},
    )
    concurrency: int = field(
        default=16, metadata={"help": "Requests in flight at once to an OpenAI-compatible server."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "--backend openai: Hub id or path of the served model's tokenizer, to read its BOS token id; "
            "needed when --model is not one."
        },
    )
    vllm_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "--backend vllm: JSON object of extra vllm.LLM arguments for --model, e.g. "
            '\'{"tensor_parallel_size": 2, "max_model_len": 4096}\'.'
        },
    )
    judge_vllm_kwargs: str | None = field(
        default=None,
        metadata={"help": "--backend vllm: JSON object of extra vllm.LLM arguments for --judge."},
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend {self.backend!r} is not one of: {', '.join(BACKENDS)}.")
        if self.backend == "openai" and not self.api_base:
            raise ValueError(
                "--backend openai needs --api_base, the base URL of the OpenAI-compatible server that serves --model "
                "(for `vllm serve MODEL`: --api_base http://localhost:8000/v1)."
            )
        if self.api_base and self.backend != "openai":
            raise ValueError(
                "--api_base is for --backend openai; to ask only the judge on a server, use --judge_api_base."
            )
        if self.judge_api_base and not self.judge:
            raise ValueError("--judge_api_base needs --judge, the name the server serves the judge under.")
        if self.tokenizer and self.backend != "openai":
            raise ValueError("--tokenizer is for --backend openai (the other backends load --model's tokenizer).")
        if self.soft and self.judge and self.judge_backend == "openai":
            raise ValueError(
                "--soft with --judge needs the judge's topic probabilities, which are read from its logits; a judge "
                "on an OpenAI-compatible server gives hard labels only. Drop --soft, or judge with --backend vllm "
                "or transformers."
            )
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, not {self.concurrency}.")
        if self.backend == "vllm":
            for flag, name in (("--model", self.model), ("--judge", self.judge)):
                if name in MODEL_ALIASES:
                    raise ValueError(
                        f"{flag} {name} is a built-in of --backend transformers; vLLM needs a Hub id or a local path."
                    )
        for flag, value, backend in (
            ("--vllm_kwargs", self.vllm_kwargs, self.backend),
            ("--judge_vllm_kwargs", self.judge_vllm_kwargs, self.judge_backend if self.judge else None),
        ):
            if value is not None and backend != "vllm":
                raise ValueError(f"{flag} is for a model that vLLM loads (--backend vllm).")
            if value is not None:
                _json_object(flag, value)

    @property
    def judge_backend(self) -> str:
        """Where the judge runs: a server when --judge_api_base is given, else like the samples."""
        return "openai" if self.judge_api_base else self.backend

    @property
    def vllm_options(self) -> dict:
        return _json_object("--vllm_kwargs", self.vllm_kwargs) if self.vllm_kwargs else {}

    @property
    def judge_vllm_options(self) -> dict:
        return _json_object("--judge_vllm_kwargs", self.judge_vllm_kwargs) if self.judge_vllm_kwargs else {}


def _json_object(flag: str, value: str) -> dict:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} must be a JSON object such as '{{\"tensor_parallel_size\": 2}}': {error}.") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{flag} must be a JSON object such as '{{\"tensor_parallel_size\": 2}}', not {value!r}.")
    return parsed


def process_state() -> PartialState:
    """accelerate's process state; CPU-only machines need `cpu=True` for `accelerate launch` to start gloo."""
    return PartialState(cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()))


def bos_prompt_id(tokenizer) -> int:
    """The BOS token id, or EOS where the model has no BOS (the reference code used EOS)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("The tokenizer has neither a BOS nor an EOS token to prompt unconditional generation with.")
    return token


@torch.no_grad()
def generate_samples(
    model, tokenizer, output_dir: str, num_samples: int, max_new_tokens: int, batch_size: int, seed: int
) -> list[dict]:
    """Sample `num_samples` unconditional texts into `<output_dir>/samples.jsonl`, continuing a previous run.

    Batch `b` holds samples `b·batch_size ...` and is generated with seed `seed + b`, so a sample is the same whether
    or not the run was interrupted. Under `accelerate launch`, process `r` generates the batches `b ≡ r (mod world)`
    into its own file; the main process merges them.
    """
    state = process_state()
    os.makedirs(output_dir, exist_ok=True)
    own = os.path.join(output_dir, f"samples.rank{state.process_index}.jsonl")
    writer = JsonLinesFile(own)
    writer.repair()
    done = {record["index"] for record in writer.read()}
    batches = [b for b in range(-(-num_samples // batch_size)) if b % state.num_processes == state.process_index]
    prompt = bos_prompt_id(tokenizer)
    model = model.to(state.device).eval()
    for batch in tqdm(batches, desc="Sampling", disable=not state.is_local_main_process):
        indices = [i for i in range(batch * batch_size, min((batch + 1) * batch_size, num_samples)) if i not in done]
        if not indices:
            continue
        # Always a full batch, so that batch b holds the same samples whatever num_samples is.
        torch.manual_seed(seed + batch)
        size = batch_size
        pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        output = model.generate(
            input_ids=torch.full((size, 1), prompt, device=state.device),
            attention_mask=torch.ones((size, 1), dtype=torch.long, device=state.device),
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            repetition_penalty=1.1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
        )
        texts = tokenizer.batch_decode(output[:, 1:], skip_special_tokens=True)
        for offset, text in enumerate(texts):
            index = batch * batch_size + offset
            if index in indices:
                writer.append({"index": index, "text": text})
    state.wait_for_everyone()
    ranks = [os.path.join(output_dir, f"samples.rank{rank}.jsonl") for rank in range(state.num_processes)]
    merged = collect_samples(ranks, num_samples)
    if state.is_main_process:
        JsonLinesFile(os.path.join(output_dir, SAMPLES_FILE)).rewrite(merged)
    state.wait_for_everyone()
    return merged


def collect_samples(paths: Sequence[str], num_samples: int) -> list[dict]:
    """The samples below `num_samples` found in the per-process files `paths`, in index order."""
    records = {record["index"]: record for path in paths for record in JsonLinesFile(path).read()}
    return [records[i] for i in sorted(records) if i < num_samples]


def local_classifier(spec: str) -> tuple[LocalClassifier, float]:
    """The local classifier and its held-out accuracy: on the bundled corpus's eval split, or on 10% of a user file."""
    if spec == "local":
        from ..demo.corpus import load_demo_corpus

        classifier = LocalClassifier.from_demo_corpus()
        _, eval_sets = load_demo_corpus()
        texts = [conversation_text(m) for d in eval_sets for m in eval_sets[d]["messages"]]
        labels = [d for d in eval_sets for _ in range(len(eval_sets[d]))]
        return classifier, classifier.accuracy(texts, labels)
    rows = JsonLinesFile(spec).read()
    texts = [row["text"] if "text" in row else conversation_text(row["messages"]) for row in rows]
    labels = [row["domain"] for row in rows]
    held_out = set(range(0, len(rows), 10))
    train = [i for i in range(len(rows)) if i not in held_out]
    classifier = LocalClassifier([texts[i] for i in train], [labels[i] for i in train])
    return classifier, classifier.accuracy([texts[i] for i in held_out], [labels[i] for i in held_out])


def detect_result(
    samples: Sequence[dict], labelled: Labelled, domains: Sequence[str], soft: bool, smoothing: float, **metadata
) -> dict:
    """The `detect.json` content: counts, shares (hard or soft), unparseable labels and the labelled samples."""
    counts = {d: sum(label == d for label in labelled.labels) for d in domains}
    result = {
        **metadata,
        "domains": list(domains),
        "num_samples": len(samples),
        "counts": counts,
        "unparseable": sum(label is None for label in labelled.labels),
        "share_mode": "soft" if soft else "hard",
        "shares": shares(labelled, domains, soft, smoothing),
        "shares_hard": shares(labelled, domains, False, smoothing),
        "samples": [
            {
                **sample,
                "label": labelled.labels[i],
                **({"answer": labelled.answers[i]} if labelled.answers else {}),
                **({"probabilities": labelled.probabilities[i]} if labelled.probabilities else {}),
            }
            for i, sample in enumerate(samples)
        ],
    }
    if labelled.probabilities is not None:
        result["shares_soft"] = shares(labelled, domains, True, smoothing)
    return result


def run_detect(args: DetectArguments) -> dict:
    """`versatune detect`: sample, label, write `detect.json` and `detect.png`; return the result."""
    from ..demo.corpus import load_demo_corpus
    from ..demo.runner import TINY_MODEL, conversation_texts, load_model_and_tokenizer

    pyplot()  # detect.png needs the optional matplotlib: say so before sampling, not after
    domains = [d.strip() for d in args.domains.split(",")]
    if args.backend == "transformers":
        texts = conversation_texts(load_demo_corpus()[0]) if args.model == TINY_MODEL else []
        model, tokenizer = load_model_and_tokenizer(args.model, texts, args.seed)
        samples = generate_samples(
            model, tokenizer, args.output_dir, args.num_samples, args.max_new_tokens, args.batch_size, args.seed
        )
        state = process_state()
        state.destroy_process_group()  # sampling was the only collective work: ranks may now leave without racing
        if not state.is_main_process:
            return {}
    else:
        from .backends import backend_samples

        samples = backend_samples(args)
    metadata = {"model": args.model}
    if args.backend != "transformers":
        metadata["backend"] = args.backend
    if args.judge:
        if args.judge_backend == "transformers":
            judge_model, judge_tokenizer = load_model_and_tokenizer(args.judge, [], args.seed)
            labeller = JudgeLabeller(judge_model, judge_tokenizer, domains, probabilities=args.soft)
        else:
            from .backends import backend_judge

            labeller = backend_judge(args, domains)
            metadata["judge_backend"] = args.judge_backend
        metadata["labeller"] = f"judge:{args.judge}"
    else:
        labeller, accuracy = local_classifier(args.classifier or "local")
        unknown = sorted(set(labeller.domains) - set(domains))
        if unknown:
            raise ValueError(f"The classifier's training data has domains {unknown} not in --domains {domains}.")
        metadata.update(labeller=f"classifier:{args.classifier or 'local'}", classifier_held_out_accuracy=accuracy)
        print(f"Local classifier held-out accuracy: {accuracy:.3f}")
    labelled = labeller([sample["text"] for sample in samples])
    result = detect_result(samples, labelled, domains, args.soft, args.smoothing, **metadata)
    with open(os.path.join(args.output_dir, RESULT_FILE), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, ensure_ascii=False)
    plot_shares({args.model: result["shares"]}, os.path.join(args.output_dir, "detect.png"))
    print(f"Shares ({result['share_mode']} labels): " + ", ".join(f"{d} {s:.3f}" for d, s in result["shares"].items()))
    print(f"Unparseable labels: {result['unparseable']} of {len(samples)}")
    print(f"Use it: VersaTuneCallback(initial_weights={os.path.join(args.output_dir, RESULT_FILE)!r})")
    return result


@dataclass
class DetectPlotArguments:
    """Options of `versatune detect-plot`: several detection results side by side, like the paper's stacked bars."""

    results: str = field(metadata={"help": "Comma-separated detect.json files."})
    output: str = field(default="detect.png", metadata={"help": "The PNG to write."})


def run_detect_plot(args: DetectPlotArguments) -> int:
    """Stacked share bars, one per result file; returns the number of bars."""
    bars = {}
    for path in args.results.split(","):
        with open(path, encoding="utf-8") as handle:
            result = json.load(handle)
        bars[result.get("model", path)] = result["shares"]
    plot_shares(bars, args.output)
    return len(bars)
