"""Triton Python-backend model that serves a Hugging Face directory.

This file is copied verbatim as `<repository>/<model>/1/model.py` (see
`rlhf.serving.repository`), so a Triton Deployment needs only torch and transformers,
not this project. Two kinds, chosen by the `kind` parameter in config.pbtxt:

* `classifier`: any sequence-classification directory. Triton's dynamic batcher hands
  `execute` several requests; their texts run as one padded forward pass. Outputs the
  predicted label, its probability and a scalar reward (the raw logit for one-label
  reward models, else the log-odds of the last label, e.g. "positive").
* `policy`: any causal LM directory, served in decoupled mode. All prompts of all
  batched requests run through one left-padded decode loop with a KV cache and
  per-row sampling parameters; streaming requests get a text delta after every step,
  every request gets a final response with its full completions (output FINAL marks
  it, so clients need no Triton-specific response parameter). With the config.pbtxt
  parameter `continuous_batching: "true"` the prompts instead join the running batch of
  a `ContinuousBatcher` (rlhf.serving.continuous, copied beside this file as
  rlhf_continuous.py) between decode steps, and leave it as soon as they finish.

Errors caused by a request (prompt longer than the context) are sent back for that
request only, prefixed with "INVALID_ARGUMENT:" so the inference service can map them.

Compressed versions (int8, pruned; see docs/compression.md) load through
`rlhf.engine.compression.restore`, which the repository entry carries as
`rlhf_compression.py` beside this file.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

try:  # Only present inside the Triton stub process.
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - imported by tests and the baseline outside Triton
    pb_utils = None

INVALID = "INVALID_ARGUMENT: "


class RequestError(ValueError):
    """A request the model cannot serve; the message is returned to that caller only."""


RESTORE_FILE = "rlhf_compression.py"
CONTINUOUS_FILE = "rlhf_continuous.py"


def _module_beside(filename: str, name: str):
    """Load a helper module copied beside this file (a Triton server without the project)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), filename)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _restore_module():
    """`rlhf.engine.compression.restore`: the project's, else the copy beside this file."""
    try:
        from rlhf.engine.compression import restore

        return restore
    except ImportError:  # a Triton server without the project installed
        return _module_beside(RESTORE_FILE, "rlhf_compression")


def _continuous_module():
    """The copy of `rlhf.serving.continuous` beside this file inside Triton (it matches
    this model.py and skips importing the whole package), else the project's."""
    if os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), CONTINUOUS_FILE)):
        return _module_beside(CONTINUOUS_FILE, "rlhf_continuous")
    from rlhf.serving import continuous

    return continuous


def load_hf_model(auto_class: object, model_dir: str, dtype: str, device: str) -> torch.nn.Module:
    """`from_pretrained`, or for a compressed version (a `rlhf_compression` key in its
    config.json) the loader that rebuilds pruned shapes and re-applies quantisation."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        compressed = "rlhf_compression" in json.load(handle)
    if compressed:
        return _restore_module().load_model(auto_class, model_dir, dtype, device)
    return auto_class.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device)


# ----------------------------------------------------------------------------- policy
@dataclass
class Sampling:
    """Per-row sampling parameters (validated by the inference service)."""

    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    seed: int = 0  # 0 = no seed


def context_length(model: torch.nn.Module, tokenizer: object) -> int:
    """Positions the model can attend to (GPT-2: n_positions; Llama: max_position_embeddings)."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(getattr(tokenizer, "model_max_length", 2048))


def chat_prompt(tokenizer: object, messages: list[dict[str, str]]) -> str:
    """The model's own chat template when it has one, else a plain `role: content` layout."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def _filter_logits(logits: torch.Tensor, rows: list[Sampling]) -> torch.Tensor:
    """Temperature, top-k and top-p per row; returns probabilities (greedy rows are one-hot)."""
    probs = torch.empty_like(logits)
    for i, row in enumerate(rows):
        if row.temperature <= 0:
            probs[i].zero_()
            probs[i, int(torch.argmax(logits[i]))] = 1.0
            continue
        scores = logits[i] / row.temperature
        if 0 < row.top_k < scores.numel():
            kth = torch.topk(scores, row.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if row.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            cumulative = torch.softmax(sorted_scores, -1).cumsum(-1)
            drop = cumulative - torch.softmax(sorted_scores, -1) >= row.top_p  # keeps the first
            scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
        probs[i] = torch.softmax(scores, -1)
    return probs


def sample_tokens(
    logits: torch.Tensor, rows: list[Sampling], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """One next token per row ([B, V] float logits -> [B] long on the CPU).

    Greedy rows take the argmax of the whole batch at once. Sampled rows are filtered
    (temperature, top-k, top-p) and drawn by inverse CDF: one uniform number from the
    row's own generator (the global one when unseeded) and a binary search in the
    cumulative probabilities. ``torch.multinomial`` cost ~1.6 ms per row on SmolLM2's
    49k vocabulary (7% of a 16-row continuous batch's time), and a greedy row needs
    no draw at all. The static and the continuous path both sample here, so a request
    gets the same tokens from either.
    """
    tokens = logits.argmax(-1).cpu()
    sampled = [i for i, row in enumerate(rows) if row.temperature > 0]
    if not sampled:
        return tokens
    probs = _filter_logits(logits[sampled], [rows[i] for i in sampled]).cpu()
    cdf = probs.cumsum(-1)
    u = torch.cat([torch.rand(1, generator=generators[i]) for i in sampled]) * cdf[:, -1]
    drawn = torch.searchsorted(cdf, u[:, None], right=True).squeeze(1)
    tokens[sampled] = drawn.clamp_(max=cdf.shape[1] - 1)
    return tokens


def _cache(output: object) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.inference_mode()
def generate_batch(
    model: torch.nn.Module,
    tokenizer: object,
    prompt_ids: list[list[int]],
    rows: list[Sampling],
    on_step: Callable[[list[list[int]], list[bool]], None] | None = None,
) -> list[list[int]]:
    """Decode all rows together: left padding, explicit position ids, one KV cache.

    Each row stops at its own EOS or max_new_tokens; finished rows keep being fed a pad
    token (their output is ignored) so the batch stays rectangular. `on_step` sees the
    tokens generated so far after every step (used for streaming).
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos_id = tokenizer.eos_token_id
    batch, width = len(prompt_ids), max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((batch, width), dtype=torch.long, device=device)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, device=device)
        attention[i, width - len(ids) :] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    generators = [torch.Generator().manual_seed(r.seed) if r.seed else None for r in rows]

    # transformers 5 calls the KV cache `cache`, 4.x `past_key_values`: support both so
    # this file runs in whatever Triton image a cluster uses.
    accepted = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in accepted else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}

    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, **extra)
    past, logits = _cache(out), out.logits[:, -1, :].float()
    generated: list[list[int]] = [[] for _ in range(batch)]
    done = [r.max_new_tokens <= 0 for r in rows]
    for _ in range(max(r.max_new_tokens for r in rows)):
        drawn = sample_tokens(logits, rows, generators)
        step = torch.full((batch,), pad_id, dtype=torch.long)
        for i in range(batch):
            if done[i]:
                continue
            token = int(drawn[i])
            step[i] = token
            generated[i].append(token)
            done[i] = token == eos_id or len(generated[i]) >= rows[i].max_new_tokens
        if on_step is not None:
            on_step(generated, done)
        if all(done):
            break
        attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=step[:, None].to(device),
            attention_mask=attention,
            position_ids=positions,
            **{cache_arg: past},
        )
        past, logits = _cache(out), out.logits[:, -1, :].float()
    return [[t for t in ids if t != eos_id] for ids in generated]


class PolicyEngine:
    """A causal LM plus tokenizer, prepared for batched, padding-aware decoding."""

    def __init__(self, model_dir: str, dtype: str = "float32", device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = load_hf_model(AutoModelForCausalLM, model_dir, dtype, device)
        self.model.eval()
        self.context = context_length(self.model, self.tokenizer)

    def encode(self, prompt: str, sampling: Sampling) -> tuple[list[int], Sampling]:
        """Token ids of one prompt; max_new_tokens is clipped to what the context allows."""
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            ids = [self.tokenizer.bos_token_id or self.tokenizer.eos_token_id or 0]
        if len(ids) >= self.context:
            raise RequestError(
                f"prompt has {len(ids)} tokens; the context length is {self.context}"
            )
        room = self.context - len(ids)
        if sampling.max_new_tokens > room:
            sampling = Sampling(**{**sampling.__dict__, "max_new_tokens": room})
        return ids, sampling

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, prompts: list[str], rows: list[Sampling]) -> list[str]:
        """Convenience for callers outside Triton (baseline, tests)."""
        encoded = [self.encode(p, r) for p, r in zip(prompts, rows, strict=True)]
        ids = generate_batch(
            self.model, self.tokenizer, [e[0] for e in encoded], [e[1] for e in encoded]
        )
        return [self.decode(x) for x in ids]

    def batcher(self, max_batch: int = 32):  # noqa: ANN201 - ContinuousBatcher (lazy import)
        """A continuous batcher over this model, sampling exactly as `generate_batch` does.

        In process: `b = engine.batcher().start()`, then
        `b.submit(*engine.encode(prompt, sampling)).result()` from any thread.
        """
        module = _continuous_module()
        return module.ContinuousBatcher(self.model, self.tokenizer, sample_tokens, max_batch)


# ------------------------------------------------------------------------- classifier
class ClassifierEngine:
    """A sequence-classification model plus tokenizer; batched scoring."""

    def __init__(
        self, model_dir: str, dtype: str = "float32", device: str = "cpu", max_length: int = 256
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = load_hf_model(AutoModelForSequenceClassification, model_dir, dtype, device)
        self.model.eval()
        # Never past the model's positions: a small classifier may read only 48 tokens.
        self.max_length = min(max_length, context_length(self.model, self.tokenizer))
        labels = self.model.config.id2label or {}
        self.labels = [
            str(labels.get(i, labels.get(str(i), i))) for i in range(self.model.config.num_labels)
        ]

    @torch.inference_mode()
    def score(
        self, texts: list[str], pairs: list[str] | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(labels, probability of each label, reward) for every text; long texts truncate."""
        device = next(self.model.parameters()).device
        enc = self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(device)
        logits = self.model(**enc).logits.float()
        if logits.shape[-1] == 1:
            reward = logits[:, 0]
            prob = torch.sigmoid(reward)
            return [self.labels[0]] * len(texts), prob.cpu().numpy(), reward.cpu().numpy()
        probs = torch.softmax(logits, -1)
        best = probs.argmax(-1)
        log_probs = torch.log_softmax(logits, -1)
        rest = torch.logsumexp(logits[:, :-1], -1) - torch.logsumexp(logits, -1)
        reward = log_probs[:, -1] - rest  # log-odds of the last label against the others
        labels = [self.labels[int(i)] for i in best]
        top = probs.gather(1, best[:, None])[:, 0]
        return labels, top.cpu().numpy(), reward.cpu().numpy()


# ----------------------------------------------------------------------- Triton model
def _text(request: object, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [
        v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)
    ]


def _scalars(request: object, name: str, default: float) -> list[float]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return [default] if tensor is None else tensor.as_numpy().reshape(-1).tolist()


def _bytes(values: list[str]) -> np.ndarray:
    return np.array([[v.encode("utf-8")] for v in values], dtype=object)


class TritonPythonModel:
    """Entry point Triton's Python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.kind = params["kind"]
        self.version = params.get("version", "")
        model_dir = params["model_dir"]
        if not os.path.isabs(model_dir):  # relative to this version's folder
            model_dir = os.path.join(args["model_repository"], args["model_version"], model_dir)
        threads = int(params.get("torch_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        dtype = params.get("dtype", "float32")
        device = params.get("device", "cpu")
        if device == "cuda":  # KIND_GPU instance: the GPU Triton assigned to it
            device = f"cuda:{args.get('model_instance_device_id', '0')}"
        self.batcher = None  # the continuous batcher, when config.pbtxt turns it on
        if self.kind == "policy":
            self.engine: PolicyEngine | ClassifierEngine = PolicyEngine(model_dir, dtype, device)
            if params.get("continuous_batching", "false") == "true":
                self.batcher = self.engine.batcher(int(config["max_batch_size"])).start()
        elif self.kind == "classifier":
            self.engine = ClassifierEngine(
                model_dir, dtype, device, max_length=int(params.get("max_length", "256"))
            )
        else:
            raise ValueError(
                f"config.pbtxt parameter kind={self.kind!r}: expected policy or classifier"
            )

    def finalize(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()

    def execute(self, requests: list[object]) -> list[object] | None:
        if self.kind == "classifier":
            return self._classify(requests)
        self._generate(requests)
        return None

    # Classifier: one forward pass per group of requests that share the same inputs.
    def _classify(self, requests: list[object]) -> list[object]:
        engine: ClassifierEngine = self.engine  # type: ignore[assignment]
        responses: list[object] = [None] * len(requests)
        groups: dict[bool, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(bool(_text(request, "TEXT_PAIR")), []).append(i)
        for with_pair, members in groups.items():
            texts, pairs, spans = [], [], []
            for i in members:
                t = _text(requests[i], "TEXT")
                spans.append((len(texts), len(texts) + len(t)))
                texts += t
                if with_pair:
                    pairs += _text(requests[i], "TEXT_PAIR")
            try:
                labels, probs, rewards = engine.score(texts, pairs if with_pair else None)
            except Exception as exc:  # noqa: BLE001 - reported to every caller in the group
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            size = np.full((1, 1), len(texts), dtype=np.int32)
            for i, (a, b) in zip(members, spans, strict=True):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LABEL", _bytes(labels[a:b])),
                        pb_utils.Tensor("SCORE", probs[a:b].astype(np.float32)[:, None]),
                        pb_utils.Tensor("REWARD", rewards[a:b].astype(np.float32)[:, None]),
                        pb_utils.Tensor("BATCH_SIZE", np.repeat(size, b - a, axis=0)),
                    ]
                )
        return responses

    # Policy: decoupled responses; every prompt either joins the continuous batcher's
    # running batch or, without it, all prompts of this Triton batch run one decode loop.
    def _parse_policy(self, request: object) -> tuple[list[tuple[list[int], Sampling]], bool]:
        """(token ids, sampling) per prompt of one request, and whether it streams."""
        engine: PolicyEngine = self.engine  # type: ignore[assignment]
        prompts = _text(request, "PROMPT")
        is_chat = _scalars(request, "IS_CHAT", 0)
        maxes = _scalars(request, "MAX_NEW_TOKENS", 64)
        temps = _scalars(request, "TEMPERATURE", 1.0)
        top_ps = _scalars(request, "TOP_P", 1.0)
        top_ks = _scalars(request, "TOP_K", 0)
        seeds = _scalars(request, "SEED", 0)
        encoded = []
        for j, prompt in enumerate(prompts):
            text = chat_prompt(engine.tokenizer, json.loads(prompt)) if is_chat[j] else prompt
            sampling = Sampling(
                int(maxes[j]), float(temps[j]), float(top_ps[j]), int(top_ks[j]), int(seeds[j])
            )
            try:
                encoded.append(engine.encode(text, sampling))
            except RequestError as exc:
                raise RequestError(f"prompts[{j}]: {exc}") from None
        return encoded, bool(_scalars(request, "STREAM", 0)[0]) and len(prompts) == 1

    def _generate(self, requests: list[object]) -> None:
        parsed = []  # (request, sender, encoded rows, streaming)
        for request in requests:
            sender = request.get_response_sender()
            try:
                encoded, streaming = self._parse_policy(request)
            except (RequestError, ValueError, KeyError, TypeError) as exc:
                _send_error(sender, INVALID + str(exc))
                continue
            if not encoded:
                _send_final(sender, [], 0)
                continue
            parsed.append((request, sender, encoded, streaming))
        if self.batcher is not None:
            for request, sender, encoded, streaming in parsed:
                _Reply(self.engine, self.batcher, request, sender, encoded, streaming)
        elif parsed:
            self._generate_static(parsed)

    def _generate_static(self, parsed: list[tuple]) -> None:
        """All rows of this Triton batch in one decode loop that runs to its longest row."""
        engine: PolicyEngine = self.engine  # type: ignore[assignment]
        spans, prompt_ids, rows = [], [], []
        for _, _, encoded, _ in parsed:
            spans.append((len(rows), len(rows) + len(encoded)))
            prompt_ids += [ids for ids, _ in encoded]
            rows += [sampling for _, sampling in encoded]
        stream_rows = {
            a: sender
            for (_, sender, _, streaming), (a, _) in zip(parsed, spans, strict=True)
            if streaming
        }
        sent = dict.fromkeys(stream_rows, "")

        def on_step(generated: list[list[int]], done: list[bool]) -> None:
            for i, sender in stream_rows.items():
                sent[i] = _send_delta(sender, engine.decode(generated[i]), sent[i], len(rows))

        try:
            outputs = generate_batch(engine.model, engine.tokenizer, prompt_ids, rows, on_step)
        except Exception as exc:  # noqa: BLE001 - every caller in the batch gets the error
            for _, sender, _, _ in parsed:
                _send_error(sender, str(exc))
            return
        for (_, sender, _, _), (a, b) in zip(parsed, spans, strict=True):
            _send_final(sender, [engine.decode(ids) for ids in outputs[a:b]], len(rows))


def _send_delta(sender: object, text: str, sent: str, batch_size: int) -> str:
    """Stream what `text` adds to `sent` (nothing while it ends mid UTF-8); returns sent."""
    if text.endswith("\ufffd") or len(text) <= len(sent):
        return sent  # incomplete UTF-8 sequence or nothing new yet
    sender.send(
        pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TEXT", _bytes([text[len(sent) :]])),
                pb_utils.Tensor("BATCH_SIZE", np.full((1, 1), batch_size, dtype=np.int32)),
                pb_utils.Tensor("FINAL", np.zeros((1, 1), dtype=bool)),
            ]
        )
    )
    return text


def _send_final(sender: object, texts: list[str], batch_size: int) -> None:
    sender.send(
        pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TEXT", _bytes(texts).reshape(len(texts), 1)),
                pb_utils.Tensor("BATCH_SIZE", np.full((len(texts), 1), batch_size, np.int32)),
                pb_utils.Tensor("FINAL", np.ones((len(texts), 1), dtype=bool)),
            ]
        ),
        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    )


def _send_error(sender: object, message: str) -> None:
    sender.send(
        pb_utils.InferenceResponse(error=pb_utils.TritonError(message)),
        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    )


class _Reply:
    """One Triton request served by the continuous batcher: submits its rows, streams
    row 0 when asked, and sends the final response (or the first error) once."""

    def __init__(
        self,
        engine: PolicyEngine,
        batcher: object,
        request: object,
        sender: object,
        encoded: list[tuple[list[int], Sampling]],
        streaming: bool,
    ) -> None:
        self.engine, self.batcher, self.request, self.sender = engine, batcher, request, sender
        self.texts: list[str | None] = [None] * len(encoded)
        self.sent, self.batch_size, self.closed = "", 0, False
        self.lock = threading.Lock()
        for i, (ids, sampling) in enumerate(encoded):
            try:
                batcher.submit(
                    ids,
                    sampling,
                    on_tokens=self._on_tokens if streaming and i == 0 else None,
                    on_done=lambda generation, i=i: self._on_done(i, generation),
                    is_cancelled=self._cancelled,
                )
            except ValueError as exc:  # rows already queued see `closed` and stop
                with self.lock:
                    self.closed = True
                    _send_error(sender, f"{INVALID}prompts[{i}]: {exc}")
                return

    def _cancelled(self) -> bool:
        """The client went away (Triton cancels the request), or a sibling row failed."""
        check = getattr(self.request, "is_cancelled", None)
        return self.closed or (check is not None and check())

    def _on_tokens(self, tokens: list[int]) -> None:
        if not self.closed:
            text = self.engine.decode(tokens)
            self.sent = _send_delta(self.sender, text, self.sent, self.batcher.running)

    def _on_done(self, index: int, generation: object) -> None:
        with self.lock:
            if self.closed:
                return
            if generation.error is not None:
                self.closed = True
                _send_error(self.sender, str(generation.error))
                return
            self.texts[index] = self.engine.decode(generation.tokens)
            self.batch_size = max(self.batch_size, generation.batch_rows)
            if all(text is not None for text in self.texts):
                self.closed = True
                _send_final(self.sender, self.texts, self.batch_size)
