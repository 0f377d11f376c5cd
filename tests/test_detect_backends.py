"""Phase 1 through vLLM or an OpenAI-compatible server (`versatune detect --backend vllm|openai`), on CPU, offline.

The OpenAI path runs end to end against a fake server (stdlib `http.server` on 127.0.0.1) that records the requests,
samples deterministic texts and judges them by a keyword. The vLLM path runs only against a fake `vllm` module
(`LLM`, `SamplingParams`) injected into `sys.modules`: it checks what would be asked of vLLM and what is done with its
answers, not vLLM itself, which has not been run here.
"""

import json
import logging
import math
import socket
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from versatune_hf.cli import main
from versatune_hf.demo.tiny import train_tiny_tokenizer
from versatune_hf.detection import backends
from versatune_hf.detection.backends import EndpointError
from versatune_hf.detection.detect import DetectArguments, run_detect
from versatune_hf.detection.labelling import (
    ANSWER_PREFIX,
    DEFAULT_DOMAINS,
    JUDGE_TOPIC_NAMES,
    judge_prompt,
    topic_first_token_ids,
)

WORDS = ["court", "patient", "stock", "python", "weather"]
"""Each sample starts with one of these; the fake judge answers from it."""
ANSWERS = {
    "court": ("Law.", "law"),
    "patient": ("Medical & Health Care", "medicine"),
    "stock": ("finance", "finance"),
    "python": ("Programming", "code"),
    "weather": ("I cannot tell.", None),
}
PAPER_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.1}


def sample_text(seed: int) -> str:
    """What the fakes sample with this seed."""
    return f"{WORDS[seed % len(WORDS)]} sample seed {seed}"


def keyword(text: str) -> str:
    return next(word for word in WORDS if word in text)


def expected_samples(num_samples: int, seed: int = 0) -> list[dict]:
    """Sample i is drawn with seed `seed * 10**9 + i`."""
    return [{"index": i, "text": sample_text(seed * 10**9 + i)} for i in range(num_samples)]


def expected_shares(samples: list[dict]) -> dict[str, float]:
    labels = [ANSWERS[keyword(sample["text"])][1] for sample in samples]
    labelled = [label for label in labels if label is not None]
    return {d: labelled.count(d) / len(labelled) for d in DEFAULT_DOMAINS}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to the fake server must not go through a proxy the environment may name."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer([sample_text(s) for s in range(25)] * 4, vocab_size=300)


@pytest.fixture(scope="module")
def tokenizer_dir(tokenizer, tmp_path_factory):
    """The 'served model's tokenizer', from which the openai backend reads the BOS id."""
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return str(path)


class FakeServer:
    """What the fake OpenAI-compatible server serves and saw; `failures[path]` are statuses answered first."""

    def __init__(self) -> None:
        self.models = ["org/base-7b", "org/judge-72b"]
        self.requests: list[tuple[str, dict, dict]] = []
        self.failures: dict[str, list[int]] = {}
        self.api_key: str | None = None
        self.lock = threading.Lock()
        self.url = ""

    def bodies(self, path: str) -> list[dict]:
        return [body for p, body, _ in self.requests if p == path]


class FakeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refused(self, fake: FakeServer) -> bool:
        if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self.send(401, {"error": {"message": "invalid api key"}})
            return True
        return False

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.refused(fake):
            return
        if self.path == "/v1/models":
            self.send(200, {"object": "list", "data": [{"id": model, "object": "model"} for model in fake.models]})
        else:
            self.send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append((self.path, body, dict(self.headers)))
            queued = fake.failures.get(self.path)
            status = queued.pop(0) if queued else None
        if self.refused(fake):
            return
        if status:
            self.send(status, {"error": {"message": f"fake failure {status}"}})
        elif self.path == "/v1/completions":
            # As vLLM (V1) does: the k-th of n samples of a request seeded s has seed s + k.
            choices = [{"index": k, "text": sample_text(body["seed"] + k)} for k in range(body.get("n", 1))]
            self.send(200, {"object": "text_completion", "choices": choices})
        elif self.path == "/v1/chat/completions":
            text = body["messages"][0]["content"].split("Text:\n", 1)[1]
            answer = ANSWERS[keyword(text)][0]
            self.send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": f" {answer}\n"}}]})
        else:
            self.send(404, {"error": {"message": f"no route {self.path}"}})


@pytest.fixture
def server():
    fake = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
    httpd.fake = fake
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield fake
    httpd.shutdown()
    httpd.server_close()


def openai_args(server, tokenizer_dir, output_dir, **overrides) -> DetectArguments:
    settings = dict(
        model="org/base-7b",
        judge="org/judge-72b",
        backend="openai",
        api_base=server.url,
        tokenizer=tokenizer_dir,
        output_dir=str(output_dir),
        num_samples=10,
        batch_size=4,
        max_new_tokens=8,
        concurrency=3,
    )
    return DetectArguments(**{**settings, **overrides})


def test_openai_backend_end_to_end(server, tokenizer, tokenizer_dir, tmp_path):
    """Samples with the paper's parameters from a BOS-only prompt, judges every text, shares as the answers imply."""
    result = run_detect(openai_args(server, tokenizer_dir, tmp_path, seed=3))
    samples = expected_samples(10, seed=3)
    assert [{"index": s["index"], "text": s["text"]} for s in result["samples"]] == samples
    assert result["shares"] == pytest.approx(expected_shares(samples))
    assert result["unparseable"] == sum(keyword(s["text"]) == "weather" for s in samples) > 0
    assert [s["label"] for s in result["samples"]] == [ANSWERS[keyword(s["text"])][1] for s in samples]
    assert [s["answer"] for s in result["samples"]] == [ANSWERS[keyword(s["text"])][0] for s in samples]
    assert result["backend"] == "openai" and result["judge_backend"] == "openai"
    assert result["labeller"] == "judge:org/judge-72b"
    assert json.loads((tmp_path / "detect.json").read_text())["shares"] == result["shares"]
    assert [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()] == samples

    completions = sorted(server.bodies("/v1/completions"), key=lambda body: body["seed"])
    assert [body["seed"] for body in completions] == [3 * 10**9 + i for i in range(10)]  # one request per sample
    for body in completions:
        assert body == {
            "model": "org/base-7b",
            "prompt": [tokenizer.bos_token_id],
            "max_tokens": 8,
            "seed": body["seed"],
            **PAPER_SAMPLING,
        }
    chats = server.bodies("/v1/chat/completions")
    assert sorted(body["messages"][0]["content"] for body in chats) == sorted(
        judge_prompt(s["text"], DEFAULT_DOMAINS) for s in samples
    )
    assert all(body["temperature"] == 0.0 and body["model"] == "org/judge-72b" for body in chats)
    assert all(len(body["messages"]) == 1 and body["messages"][0]["role"] == "user" for body in chats)


def test_openai_sampling_resumes_and_asks_only_for_missing_samples(server, tokenizer_dir, tmp_path):
    """A run cut short (a torn last line included) continues: only the missing samples are requested, and the
    samples are those of one uninterrupted run; with all samples there, no sample is requested."""
    run_detect(openai_args(server, tokenizer_dir, tmp_path, num_samples=6, judge=None, classifier="local"))
    own = tmp_path / "samples.rank0.jsonl"
    lines = own.read_text().splitlines()
    assert len(lines) == 6
    # the last sample written (requests run concurrently, so any index) was being written when the run died
    own.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
    kept = {json.loads(line)["index"] for line in lines[:5]}
    server.requests.clear()

    result = run_detect(openai_args(server, tokenizer_dir, tmp_path))
    assert sorted(body["seed"] for body in server.bodies("/v1/completions")) == sorted(set(range(10)) - kept)
    assert [{"index": s["index"], "text": s["text"]} for s in result["samples"]] == expected_samples(10)
    assert sorted(json.loads(line)["index"] for line in own.read_text().splitlines()) == list(range(10))

    server.requests.clear()
    run_detect(openai_args(server, tokenizer_dir, tmp_path, tokenizer="/no/such/tokenizer"))
    assert server.bodies("/v1/completions") == []  # nothing missing: no request, and no tokenizer needed


def test_every_sample_has_its_own_seed_across_seeds():
    """vLLM seeds the k-th of n samples of a request seeded s with s + k, so the backends ask one sample per request,
    with a seed that no other sample of this or a nearby --seed shares."""
    seeds = [backends.sample_seed(seed, i) for seed in range(3) for i in range(10_000)]
    assert len(set(seeds)) == len(seeds) and max(seeds) < 2**63


def test_a_server_that_is_not_running_is_a_clear_error(tokenizer_dir, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = types.SimpleNamespace(url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(EndpointError, match=rf"Could not reach http://127.0.0.1:{port}/v1/models .*server running"):
        run_detect(openai_args(fake, tokenizer_dir, tmp_path))
    assert not (tmp_path / "samples.jsonl").exists()


def test_server_errors_are_retried_and_client_errors_explained(
    server, tokenizer_dir, tmp_path, monkeypatch, versatune_messages
):
    monkeypatch.setattr(backends, "BACKOFF_S", 0.0)
    server.failures = {"/v1/completions": [500, 503], "/v1/chat/completions": [429]}
    result = run_detect(openai_args(server, tokenizer_dir, tmp_path / "retried", concurrency=1))
    assert result["shares"] == pytest.approx(expected_shares(expected_samples(10)))
    assert len(server.bodies("/v1/completions")) == 10 + 2 and len(server.bodies("/v1/chat/completions")) == 10 + 1
    assert "HTTP 500; retrying" in versatune_messages(logging.WARNING)

    server.failures = {"/v1/chat/completions": [400]}
    server.requests.clear()
    with pytest.raises(EndpointError, match=r"chat/completions refused the request \(400\).*fake failure 400"):
        run_detect(openai_args(server, tokenizer_dir, tmp_path / "retried", concurrency=1))
    assert len(server.bodies("/v1/chat/completions")) == 1  # a client error is not retried

    monkeypatch.setattr(backends, "RETRIES", 2)
    server.failures = {"/v1/completions": [502] * 3}
    with pytest.raises(EndpointError, match=r"completions answered HTTP 502"):
        run_detect(openai_args(server, tokenizer_dir, tmp_path / "gave_up", num_samples=4, concurrency=1))


def test_unserved_models_and_missing_keys_are_clear_errors(server, tokenizer_dir, tmp_path, monkeypatch):
    served = r"does not serve 'org/other'; it serves \['org/base-7b', 'org/judge-72b'\]"
    with pytest.raises(EndpointError, match=served):
        run_detect(openai_args(server, tokenizer_dir, tmp_path, model="org/other"))
    with pytest.raises(EndpointError, match=r"does not serve 'org/nope'.*--judge"):
        run_detect(openai_args(server, tokenizer_dir, tmp_path, judge="org/nope"))
    with pytest.raises(EndpointError, match=r"404 Not Found: check that --api_base .* ending in /v1"):
        run_detect(openai_args(server, tokenizer_dir, tmp_path, api_base=server.url + "/v1"))

    server.api_key = "secret"
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(EndpointError, match=r"401 \(not authorised\): the API key in \$MY_KEY is not set"):
        run_detect(openai_args(server, tokenizer_dir, tmp_path / "keyed", api_key_env="MY_KEY"))
    monkeypatch.setenv("MY_KEY", "secret")
    run_detect(openai_args(server, tokenizer_dir, tmp_path / "keyed", api_key_env="MY_KEY", num_samples=4))
    assert server.requests[-1][2]["Authorization"] == "Bearer secret"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(backend="tgi"), "not one of: transformers, vllm, openai"),
        (dict(backend="openai"), "needs --api_base"),
        (dict(api_base="http://localhost:8000/v1"), "--api_base is for --backend openai"),
        (dict(judge_api_base="http://localhost:8000/v1"), "--judge_api_base needs --judge"),
        (dict(backend="openai", api_base="http://x/v1", judge="j", soft=True), "--soft with --judge"),
        (dict(judge="j", judge_api_base="http://x/v1", soft=True), "hard labels only"),
        (dict(backend="vllm", model="tiny"), "vLLM needs a Hub id or a local path"),
        (dict(backend="vllm", vllm_kwargs="[1]"), "--vllm_kwargs must be a JSON object"),
        (dict(backend="vllm", judge="j", judge_vllm_kwargs="{tensor"), "--judge_vllm_kwargs must be a JSON object"),
        (dict(vllm_kwargs="{}"), "--vllm_kwargs is for a model that vLLM loads"),
        (dict(tokenizer="t"), "--tokenizer is for --backend openai"),
        (dict(backend="openai", api_base="http://x/v1", concurrency=0), "--concurrency must be at least 1"),
    ],
)
def test_inconsistent_backend_options_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        DetectArguments(**{"model": "m", **overrides})


def test_command_line_backend_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", "--model", "m", "--backend", "tgi"])
    assert exit_info.value.code == 2 and "invalid choice: 'tgi'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", "--model", "m", "--backend", "openai"])
    assert exit_info.value.code == 2 and "needs --api_base" in capsys.readouterr().err


# vLLM, through a fake module.


class FakeVLLM(types.ModuleType):
    """`vllm.LLM` and `vllm.SamplingParams` as vLLM's offline API has them, answering like the fake server."""

    def __init__(self, tokenizer) -> None:
        super().__init__("vllm")
        self.models: list[dict] = []
        self.calls: list[tuple[list, object]] = []
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs) -> None:
                self.kwargs = kwargs

        class LLM:
            def __init__(self, **kwargs) -> None:
                fake.models.append(kwargs)

            def get_tokenizer(self):
                return tokenizer

            def generate(self, prompts, sampling_params, use_tqdm=True):
                fake.calls.append((prompts, sampling_params))
                per_prompt = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
                return [fake.answer(p["prompt_token_ids"], s.kwargs) for p, s in zip(prompts, per_prompt)]

        self.LLM, self.SamplingParams, self.tokenizer = LLM, SamplingParams, tokenizer

    def first_token(self, domain: str) -> int:
        """A token id that starts this topic's name and no other's."""

        def ids(name: str) -> set[int]:
            return set(topic_first_token_ids(self.tokenizer, JUDGE_TOPIC_NAMES.get(name, name)))

        return min(ids(domain) - set().union(*(ids(d) for d in DEFAULT_DOMAINS if d != domain)))

    def answer(self, prompt_ids: list[int], params: dict):
        def output(index: int, text: str, logprobs=None):
            return types.SimpleNamespace(index=index, text=text, logprobs=logprobs)

        if params["temperature"] > 0:
            outputs = [output(k, sample_text(params["seed"] + k)) for k in range(params.get("n", 1))]
            return types.SimpleNamespace(outputs=outputs)
        answer, domain = ANSWERS[keyword(self.tokenizer.decode(prompt_ids))]
        logprobs = None
        if params.get("logprobs"):
            scores = {99_999: 0.2}  # some token that starts no topic
            if domain:
                scores.update({self.first_token(domain): 0.6, self.first_token("science"): 0.2})
            logprobs = [{token: types.SimpleNamespace(logprob=math.log(p)) for token, p in scores.items()}]
        return types.SimpleNamespace(outputs=[output(0, " " + answer, logprobs)])


def test_vllm_backend_with_a_fake_vllm_module(tokenizer, tmp_path, monkeypatch, versatune_messages):
    """What is asked of vLLM (models, options, sampling parameters, BOS-only and chat-templated prompts) and what is
    made of its answers (samples, labels, soft shares from first-token log-probabilities). Not a run of vLLM."""
    vllm = FakeVLLM(tokenizer)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    args = DetectArguments(
        model="org/base-7b",
        judge="org/judge-72b",
        backend="vllm",
        vllm_kwargs='{"tensor_parallel_size": 2}',
        judge_vllm_kwargs='{"tensor_parallel_size": 8, "max_model_len": 4096}',
        output_dir=str(tmp_path),
        num_samples=10,
        batch_size=4,
        max_new_tokens=8,
        seed=5,
        soft=True,
    )
    result = run_detect(args)
    assert vllm.models == [
        {"model": "org/base-7b", "seed": 5, "tensor_parallel_size": 2},
        {"model": "org/judge-72b", "seed": 5, "tensor_parallel_size": 8, "max_model_len": 4096},
    ]
    (prompts, params), (judge_prompts, judge_params) = vllm.calls
    assert prompts == [{"prompt_token_ids": [tokenizer.bos_token_id]}] * 10
    seeds = [5 * 10**9 + i for i in range(10)]  # one request per sample
    assert [p.kwargs for p in params] == [{"max_tokens": 8, "seed": seed, **PAPER_SAMPLING} for seed in seeds]
    assert judge_params.kwargs == {"temperature": 0.0, "max_tokens": 16, "logprobs": 20}

    samples = expected_samples(10, seed=5)
    assert [{"index": s["index"], "text": s["text"]} for s in result["samples"]] == samples
    chat = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": judge_prompt(s["text"], DEFAULT_DOMAINS)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        + ANSWER_PREFIX
        for s in samples
    ]
    assert [tokenizer.decode(p["prompt_token_ids"]) for p in judge_prompts] == chat
    assert [s["label"] for s in result["samples"]] == [ANSWERS[keyword(s["text"])][1] for s in samples]
    assert result["shares_hard"] == pytest.approx(expected_shares(samples))
    domains = [ANSWERS[keyword(s["text"])][1] for s in samples]
    for sample, domain in zip(result["samples"], domains):
        expected = {**dict.fromkeys(DEFAULT_DOMAINS, 0.0), domain: 0.75, "science": 0.25} if domain else {}
        assert sample["probabilities"] == pytest.approx(expected)
    soft = {d: 0.75 * domains.count(d) + 0.25 * (d == "science") * sum(map(bool, domains)) for d in DEFAULT_DOMAINS}
    assert result["share_mode"] == "soft"
    assert result["shares"] == pytest.approx({d: v / sum(soft.values()) for d, v in soft.items()})
    assert f"{domains.count(None)} of 10 judge answers had no topic" in versatune_messages(logging.WARNING)
    assert result["backend"] == "vllm" and result["judge_backend"] == "vllm"

    vllm.models.clear()
    run_detect(args)
    assert [m["model"] for m in vllm.models] == ["org/judge-72b"]  # all samples on disk: only the judge is loaded


def test_vllm_sampling_with_a_judge_on_a_server(tokenizer, server, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", FakeVLLM(tokenizer))
    args = DetectArguments(
        model="org/base-7b",
        judge="org/judge-72b",
        backend="vllm",
        judge_api_base=server.url,
        output_dir=str(tmp_path),
        num_samples=6,
        batch_size=3,
        max_new_tokens=8,
    )
    result = run_detect(args)
    assert result["shares"] == pytest.approx(expected_shares(expected_samples(6)))
    assert len(server.bodies("/v1/chat/completions")) == 6 and not server.bodies("/v1/completions")
    assert result["judge_backend"] == "openai"


def test_without_vllm_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as where it is not installed
    args = DetectArguments(model="org/base-7b", backend="vllm", output_dir=str(tmp_path), num_samples=2)
    with pytest.raises(ImportError, match=r'pip install "versatune-hf\[vllm\]"'):
        run_detect(args)
