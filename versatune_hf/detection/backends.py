"""Phase 1 at the paper's scale: sample and judge through vLLM in this process, or through an OpenAI-compatible
server that is already running (`vllm serve MODEL`, or any server with `/v1/completions` and `/v1/chat/completions`).

* `--backend vllm` loads `--model` (then `--judge`) with `vllm.LLM` (`pip install "versatune-hf[vllm]"`, a CUDA GPU).
* `--backend openai --api_base URL` sends HTTP requests with the standard library only (no `openai` package);
  `--model` and `--judge` are then the names the server serves. `--judge_api_base URL` asks the judge on another
  server, whatever the sampling backend.

Both keep what the Transformers path does (`detect.generate_samples`): a BOS-only prompt (EOS where the model has no
BOS), temperature 1.0, top_p 1.0, no top-k, repetition penalty 1.1, `max_new_tokens`; samples stream to
`samples.rank0.jsonl` and are merged into `samples.jsonl`, so an interrupted run continues where it stopped (and a
run whose samples are all there loads no sampling model at all). The judge asks `labelling.judge_prompt` greedily
(temperature 0) and parses the answer with `labelling.parse_topic`; an answer naming no topic is labelled `None`
(unparseable) and counted, as with the Transformers judge.

Seeds: sample `i` is one request of its own with seed `sample_seed(seed, i) = seed * 10**9 + i`, so it depends on
neither `batch_size` nor `num_samples` nor what ran beside it (vLLM seeds each request's own generator; vLLM batches
the requests itself, so `--batch_size` is not used here). Not one request of `n` samples per batch, as the
Transformers path batches: vLLM (V1) gives the k-th of `n` samples of a request seeded `s` the seed `s + k`, so
batches seeded `seed + b` would repeat each other's samples. The stride keeps `--seed 0` and `--seed 1` apart (with
`seed + i` they would share all samples but one). Up to vLLM's batch-dependent numerics a restarted run gives the
samples of an uninterrupted one.

Tested here: the OpenAI path end to end against a fake HTTP server (requests, resume, retries, errors), the vLLM path
only against a fake `vllm` module (tests/test_detect_backends.py); neither has been run against a real vLLM.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from ..utils.jsonlines import JsonLinesFile
from ..utils.logs import get_logger
from .detect import SAMPLES_FILE, DetectArguments, bos_prompt_id, collect_samples
from .labelling import ANSWER_PREFIX, JUDGE_TOPIC_NAMES, Labelled, judge_prompt, parse_topic, topic_first_token_ids

logger = get_logger(__name__)

SAMPLING_PARAMS = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.1}
"""Phase 1's sampling. `top_k=-1` is "off" in every vLLM since 0.6 (newer ones also take 0); `top_k` and
`repetition_penalty` are vLLM extensions of the OpenAI request, which vLLM's server accepts."""
JUDGE_MAX_TOKENS = 16
"""Length of a judge's answer, as for the Transformers judge (`JudgeLabeller.max_new_tokens`)."""
JUDGE_LOGPROBS = 20
"""vLLM judge with `--soft`: how many most likely first tokens are scored (vLLM's default `max_logprobs`)."""
SAMPLES_PER_CALL = 2048
"""vLLM: samples per `LLM.generate` call; each call's samples are saved before the next call starts."""
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
RETRIES = 5
BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
TIMEOUT_S = 600.0
SEED_STRIDE = 10**9
VLLM_INSTALL = 'pip install "versatune-hf[vllm]"'
RANK_FILE = re.compile(r"samples\.rank\d+\.jsonl$")


# The samples file: the same layout as `detect.generate_samples`, written by one process.


def _rank_files(output_dir: str) -> list[str]:
    return sorted(os.path.join(output_dir, name) for name in os.listdir(output_dir) if RANK_FILE.fullmatch(name))


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` (see the module's docstring)."""
    return seed * SEED_STRIDE + index


def pending_samples(output_dir: str, num_samples: int) -> tuple[JsonLinesFile, list[int]]:
    """The file new samples go to and the indices below `num_samples` that no earlier run (one process or several,
    any backend) wrote."""
    os.makedirs(output_dir, exist_ok=True)
    writer = JsonLinesFile(os.path.join(output_dir, "samples.rank0.jsonl"))
    writer.repair()
    done = {record["index"] for path in _rank_files(output_dir) for record in JsonLinesFile(path).read()}
    return writer, [i for i in range(num_samples) if i not in done]


def merge_samples(output_dir: str, num_samples: int) -> list[dict]:
    """All samples below `num_samples`, in order, also written to `<output_dir>/samples.jsonl`."""
    merged = collect_samples(_rank_files(output_dir), num_samples)
    JsonLinesFile(os.path.join(output_dir, SAMPLES_FILE)).rewrite(merged)
    return merged


# vLLM in this process.


def import_vllm():
    """The `vllm` module, or an ImportError that says how to install it (or what to do without it)."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            f"--backend vllm needs vLLM, which is not installed here: {VLLM_INSTALL} (Linux with an NVIDIA GPU; see "
            "https://docs.vllm.ai). Without it, serve the model where vLLM runs (`vllm serve MODEL`) and use "
            "--backend openai --api_base http://HOST:8000/v1, or keep the default --backend transformers."
        ) from error
    return vllm


def load_vllm(model: str, seed: int, options: dict[str, Any]):
    vllm = import_vllm()
    logger.info(f"Loading {model} with vLLM ({options or 'default options'})")
    return vllm, vllm.LLM(model=model, seed=seed, **options)


def release_vllm() -> None:
    """Free the GPU memory of a `vllm.LLM` the caller has deleted, so that the next model (the judge) fits; best
    effort, as vLLM has no public way to unload a model. Where the judge still does not fit, run `versatune detect`
    again: all samples are then on disk and only the judge is loaded."""
    gc.collect()
    with contextlib.suppress(Exception):  # the helper moved between vLLM versions; a missing one is no error
        from vllm.distributed import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
        return
    with contextlib.suppress(Exception):
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sample_with_vllm(
    model: str,
    output_dir: str,
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    options: dict[str, Any] | None = None,
) -> list[dict]:
    """`detect.generate_samples` with vLLM: sample `i` is one request with seed `sample_seed(seed, i)`; the missing
    samples go to vLLM `SAMPLES_PER_CALL` at a time, and each call's are saved before the next starts."""
    writer, missing = pending_samples(output_dir, num_samples)
    if missing:
        vllm, llm = load_vllm(model, seed, options or {})
        prompt = bos_prompt_id(llm.get_tokenizer())
        with tqdm(total=len(missing), desc="Sampling (vLLM)") as bar:
            for start in range(0, len(missing), SAMPLES_PER_CALL):
                chunk = missing[start : start + SAMPLES_PER_CALL]
                params = [
                    vllm.SamplingParams(max_tokens=max_new_tokens, seed=sample_seed(seed, i), **SAMPLING_PARAMS)
                    for i in chunk
                ]
                outputs = llm.generate([{"prompt_token_ids": [prompt]} for _ in chunk], params, use_tqdm=False)
                for index, output in zip(chunk, outputs, strict=True):
                    writer.append({"index": index, "text": output.outputs[0].text})
                bar.update(len(chunk))
        del llm
        release_vllm()
    return merge_samples(output_dir, num_samples)


class VLLMJudge:
    """`labelling.JudgeLabeller` with vLLM: the same chat-templated prompt primed with `ANSWER_PREFIX`, greedy.

    With `probabilities=True` a topic's probability is that of its name's first tokens at the first answer token,
    read from vLLM's `JUDGE_LOGPROBS` most likely tokens and normalised over the topics; a text whose top tokens
    include no topic gets `{}` (it adds nothing to soft shares) and is counted in a warning.
    """

    def __init__(
        self,
        model: str,
        domains: Sequence[str],
        seed: int = 0,
        options: dict[str, Any] | None = None,
        probabilities: bool = False,
        max_new_tokens: int = JUDGE_MAX_TOKENS,
    ) -> None:
        self.vllm, self.llm = load_vllm(model, seed, options or {})
        self.tokenizer = self.llm.get_tokenizer()
        self.domains, self.probabilities, self.max_new_tokens = list(domains), probabilities, max_new_tokens
        self._first_tokens = [topic_first_token_ids(self.tokenizer, JUDGE_TOPIC_NAMES.get(d, d)) for d in domains]

    def prompt_ids(self, text: str) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": judge_prompt(text, self.domains)}], tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(prompt + ANSWER_PREFIX, add_special_tokens=False)["input_ids"]

    def __call__(self, texts: Sequence[str]) -> Labelled:
        params = self.vllm.SamplingParams(
            temperature=0.0,
            max_tokens=self.max_new_tokens,
            logprobs=JUDGE_LOGPROBS if self.probabilities else None,
        )
        prompts = [{"prompt_token_ids": self.prompt_ids(text)} for text in tqdm(texts, desc="Judge prompts")]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        answers = [output.outputs[0].text.strip() for output in outputs]
        labels = [parse_topic(answer, self.domains) for answer in answers]
        if not self.probabilities:
            return Labelled(labels, None, answers)
        probabilities = [self._topic_probabilities(output.outputs[0].logprobs) for output in outputs]
        missing = sum(not p for p in probabilities)
        if missing:
            logger.warning(
                f"{missing} of {len(texts)} judge answers had no topic among their {JUDGE_LOGPROBS} most likely first "
                "tokens; they add nothing to the soft shares."
            )
        return Labelled(labels, probabilities, answers)

    def _topic_probabilities(self, logprobs) -> dict[str, float]:
        first = logprobs[0] if logprobs else {}
        scores = [sum(math.exp(first[t].logprob) for t in ids if t in first) for ids in self._first_tokens]
        total = sum(scores)
        return {d: s / total for d, s in zip(self.domains, scores)} if total > 0 else {}


# An OpenAI-compatible server, through the standard library.


class EndpointError(RuntimeError):
    """A request to an OpenAI-compatible server failed; the message says which URL, why, and what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OpenAIClient:
    """JSON requests to an OpenAI-compatible server; 408, 429 and 5xx answers and dropped connections are retried
    `RETRIES` times with exponential backoff (honouring `Retry-After`), other errors raise `EndpointError` at once."""

    def __init__(self, api_base: str, api_key_env: str | None = "OPENAI_API_KEY", timeout: float = TIMEOUT_S) -> None:
        self.api_base, self.api_key_env, self.timeout = api_base.rstrip("/"), api_key_env, timeout
        self.api_key = os.environ.get(api_key_env) if api_key_env else None

    def request(self, method: str, path: str, body: dict | None = None, retries: int | None = None) -> dict:
        url = self.api_base + path
        retries = RETRIES if retries is None else retries
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in range(retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    content = response.read()
                try:
                    return json.loads(content)
                except json.JSONDecodeError:
                    raise EndpointError(
                        f"{url} answered with something that is not JSON: {content[:200]!r}. Is --api_base the "
                        "OpenAI-compatible base URL (ending in /v1)?"
                    ) from None
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")[:1000]
                if error.code in RETRY_STATUS and attempt < retries:
                    self._wait(attempt, url, f"HTTP {error.code}", error.headers.get("Retry-After"))
                    continue
                raise EndpointError(self._http_message(url, error.code, detail), error.code) from None
            except OSError as error:  # refused, reset, timed out, name not resolved (URLError is an OSError)
                reason = getattr(error, "reason", error)
                if attempt < retries:
                    self._wait(attempt, url, str(reason), None)
                    continue
                raise EndpointError(
                    f"Could not reach {url} ({reason}). Is the server running? Start one with `vllm serve MODEL` "
                    "(it listens on http://localhost:8000/v1) and pass its base URL as --api_base (or "
                    "--judge_api_base)."
                ) from error
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, url: str, why: str, retry_after: str | None) -> None:
        delay = min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S)
        with contextlib.suppress(TypeError, ValueError):
            delay = min(max(delay, float(retry_after)), MAX_BACKOFF_S)
        logger.warning(f"{url}: {why}; retrying in {delay:.1f}s (attempt {attempt + 2} of {RETRIES + 1})")
        time.sleep(delay)

    def _http_message(self, url: str, status: int, detail: str) -> str:
        said = f" The server said: {detail}" if detail else ""
        if status in (401, 403):
            where = f"${self.api_key_env}" if self.api_key_env else "an environment variable named by --api_key_env"
            state = "is not set" if not self.api_key else "was refused"
            return f"{url} answered {status} (not authorised): the API key in {where} {state}.{said}"
        if status == 404:
            return (
                f"{url} answered 404 Not Found: check that --api_base is the server's OpenAI-compatible base URL, "
                f"ending in /v1 (e.g. http://localhost:8000/v1), and that the model name is one it serves.{said}"
            )
        if status == 400:
            return (
                f"{url} refused the request (400).{said} Phase 1 sends top_k and repetition_penalty, which vLLM's "
                "server accepts; another server may not."
            )
        return f"{url} answered HTTP {status}.{said}"

    def check_model(self, model: str, flag: str) -> None:
        """Fail fast, with no retries, when the server is down or does not serve `model` (`/models` lists what it
        serves; a server without that route is trusted)."""
        try:
            listing = self.request("GET", "/models", retries=0)
        except EndpointError as error:
            if error.status == 404:
                logger.warning(f"{self.api_base}/models is not there; not checking that {model!r} is served.")
                return
            raise
        served = [entry.get("id") for entry in listing.get("data", []) if isinstance(entry, dict)]
        if served and model not in served:
            raise EndpointError(
                f"{self.api_base} does not serve {model!r}; it serves {served}. Pass {flag} with one of these names "
                "(the name given to `vllm serve`, or its --served-model-name)."
            )


def _choices(response: dict, url: str, count: int) -> list[dict]:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or len(choices) != count:
        got = "none" if not isinstance(choices, list) else len(choices)
        raise EndpointError(f"{url} answered with {got} choices where {count} were asked for: {str(response)[:300]}")
    return sorted(choices, key=lambda choice: choice.get("index", 0))


class _NotSent(Exception):
    """A call skipped because an earlier one failed."""


def _concurrently(
    function: Callable[[Any], Any], items: Iterable, concurrency: int, desc: str
) -> Iterator[tuple[Any, Any]]:
    """`(item, function(item))` as the calls finish, `concurrency` at a time, with a progress bar; the first error
    cancels the calls not yet started and is raised."""
    failed = threading.Event()

    def call(item: Any) -> Any:
        # A worker takes the next queued call as soon as one fails, before the caller can cancel the queue: the flag
        # stops it from sending another request.
        if failed.is_set():
            raise _NotSent
        try:
            return function(item)
        except BaseException:
            failed.set()
            raise

    executor = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = {executor.submit(call, item): item for item in items}
        with tqdm(total=len(futures), desc=desc) as bar:
            for future in as_completed(futures):
                if isinstance(future.exception(), _NotSent):
                    continue  # the call that failed first is still to come (it is marked done after the flag)
                yield futures[future], future.result()
                bar.update()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def served_prompt_id(tokenizer_name: str) -> int:
    """The BOS (else EOS) token id of the served model, read from its tokenizer (a Hub id or a local path)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--backend openai prompts with the served model's BOS token id, read from its tokenizer, but "
            f"{tokenizer_name!r} could not be loaded as a tokenizer ({error}). Pass --tokenizer with the served "
            "model's Hub id or local path."
        ) from error
    return bos_prompt_id(tokenizer)


def sample_with_openai(
    client: OpenAIClient,
    model: str,
    tokenizer: str,
    output_dir: str,
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    concurrency: int = 16,
) -> list[dict]:
    """`detect.generate_samples` through `POST {api_base}/completions`: sample `i` is one request with seed
    `sample_seed(seed, i)`, `concurrency` in flight. The prompt is the token-id list `[BOS]` (OpenAI's completions
    API takes token ids; vLLM uses them as they are, adding no special token), read from `tokenizer`."""
    writer, missing = pending_samples(output_dir, num_samples)
    if missing:
        client.check_model(model, "--model")
        prompt = [served_prompt_id(tokenizer)]
        url = client.api_base + "/completions"

        def request(index: int) -> str:
            body = {
                "model": model,
                "prompt": prompt,
                "max_tokens": max_new_tokens,
                "seed": sample_seed(seed, index),
                **SAMPLING_PARAMS,
            }
            (choice,) = _choices(client.request("POST", "/completions", body), url, 1)
            return choice.get("text") or ""

        for index, text in _concurrently(request, missing, concurrency, "Sampling (server)"):
            writer.append({"index": index, "text": text})
    return merge_samples(output_dir, num_samples)


class OpenAIJudge:
    """Labels texts by asking a served instruct model the topic question through `POST {api_base}/chat/completions`
    (the server applies the chat template; greedy). Unlike the local judges, the answer is not primed with
    `ANSWER_PREFIX`, which the chat API has no standard way to do; `parse_topic` reads the answer as it comes (extra
    words are fine when it names one topic). Hard labels only: soft shares need the judge's logits (`--backend vllm`
    or `transformers`)."""

    def __init__(
        self,
        client: OpenAIClient,
        model: str,
        domains: Sequence[str],
        concurrency: int = 16,
        max_new_tokens: int = JUDGE_MAX_TOKENS,
    ) -> None:
        self.client, self.model, self.domains = client, model, list(domains)
        self.concurrency, self.max_new_tokens = concurrency, max_new_tokens

    def ask(self, text: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": judge_prompt(text, self.domains)}],
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }
        (choice,) = _choices(self.client.request("POST", "/chat/completions", body), self.url, 1)
        return ((choice.get("message") or {}).get("content") or "").strip()

    @property
    def url(self) -> str:
        return self.client.api_base + "/chat/completions"

    def __call__(self, texts: Sequence[str]) -> Labelled:
        answers = [""] * len(texts)
        if texts:
            self.client.check_model(self.model, "--judge")
            for index, answer in _concurrently(
                lambda i: self.ask(texts[i]), range(len(texts)), self.concurrency, "Judging topics"
            ):
                answers[index] = answer
        return Labelled([parse_topic(answer, self.domains) for answer in answers], None, answers)


# What `run_detect` calls.


def backend_samples(args: DetectArguments) -> list[dict]:
    """The samples of `args`, drawn with `args.backend` (vllm or openai)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            f"--backend {args.backend} runs as one process: start it with `versatune detect`, not `accelerate "
            "launch` (vLLM spreads a model over GPUs itself: --vllm_kwargs '{\"tensor_parallel_size\": N}')."
        )
    common = dict(
        output_dir=args.output_dir, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    if args.backend == "vllm":
        return sample_with_vllm(args.model, options=args.vllm_options, **common)
    client = OpenAIClient(args.api_base, args.api_key_env)
    return sample_with_openai(client, args.model, args.tokenizer or args.model, concurrency=args.concurrency, **common)


def backend_judge(args: DetectArguments, domains: Sequence[str]) -> Callable[[Sequence[str]], Labelled]:
    """The judge of `args` on `args.judge_backend` (vllm or openai)."""
    if args.judge_backend == "vllm":
        return VLLMJudge(args.judge, domains, args.seed, args.judge_vllm_options, probabilities=args.soft)
    client = OpenAIClient(args.judge_api_base or args.api_base, args.api_key_env)
    return OpenAIJudge(client, args.judge, domains, args.concurrency)
