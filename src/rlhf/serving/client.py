"""tritonclient (gRPC) wrappers with deadlines and typed errors.

Every call takes a timeout (the caller's remaining gRPC deadline), so a Triton outage
turns into `TritonUnavailable` instead of a hang. Errors the model returns for one
request ("INVALID_ARGUMENT: ...") become `ModelInputError`.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from rlhf.serving.backend import INVALID, Sampling


class ServingError(RuntimeError):
    """Base class of serving failures."""


class TritonUnavailable(ServingError):
    """Triton is down, overloaded or did not answer before the deadline; retry later."""


class ModelInputError(ServingError):
    """The model rejected this request (e.g. prompt longer than the context)."""


class ModelNotLoaded(ServingError):
    """Triton does not know the model or it is not ready."""


def _translate(exc: InferenceServerException) -> ServingError:
    message = exc.message() or str(exc)
    status = str(exc.status() or "")
    if INVALID.strip() in message:
        return ModelInputError(message.split(INVALID, 1)[-1])
    if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status or "Deadline" in message:
        return TritonUnavailable(message)
    if "unknown model" in message or "is not ready" in message or "NOT_FOUND" in status:
        return ModelNotLoaded(message)
    if "CANCELLED" in status or "connect" in message.lower():
        return TritonUnavailable(message)
    return ServingError(message)


def _translate_rpc(exc: grpc.RpcError) -> ServingError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return TritonUnavailable(details or str(code))
    return ServingError(f"{code}: {details}")


@dataclass
class ClassifyOutput:
    label: str
    score: float
    reward: float


@dataclass
class GenerationEvent:
    """One streamed piece: a delta for row 0 of a streaming request, or the final texts."""

    delta: str = ""
    texts: list[str] | None = None
    batch_size: int = 0

    @property
    def final(self) -> bool:
        return self.texts is not None


def _bytes(values: list[str]) -> np.ndarray:
    return np.array([[v.encode("utf-8")] for v in values], dtype=object)


def _input(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


class TritonClient:
    """Thread-safe access to one Triton server for the inference service."""

    def __init__(
        self, url: str, classifier_max_batch: int = 64, policy_max_batch: int = 32
    ) -> None:
        self.url = url
        self.classifier_max_batch = classifier_max_batch
        self.policy_max_batch = policy_max_batch
        self._client = grpcclient.InferenceServerClient(url)
        self._aio: dict[object, object] = {}
        self._streams: queue.LifoQueue[grpcclient.InferenceServerClient] = queue.LifoQueue()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()
        while not self._streams.empty():
            self._streams.get_nowait().close()

    # Health and model control --------------------------------------------------------
    def is_ready(self, timeout_s: float = 2.0) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=timeout_s))
        except InferenceServerException:
            return False

    def is_model_ready(self, name: str, timeout_s: float = 2.0) -> bool:
        try:
            return bool(self._client.is_model_ready(name, client_timeout=timeout_s))
        except InferenceServerException:
            return False

    def load_model(self, name: str, timeout_s: float = 600.0) -> None:
        """Ask Triton to load `name` from its repository; returns once it is ready."""
        try:
            self._client.load_model(name, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc) from exc
        if not self.is_model_ready(name):
            raise ModelNotLoaded(f"Triton loaded {name} but it is not ready")

    def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        try:
            self._client.unload_model(name, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc) from exc

    def loaded_models(self, timeout_s: float = 5.0) -> set[str]:
        """Names of the models this Triton has READY (its repository index)."""
        try:
            index = self._client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc) from exc
        return {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}

    def statistics(self, name: str = "") -> dict:
        """Triton's cumulative inference statistics (queue time, batch sizes) as a dict."""
        stats = self._client.get_inference_statistics(name, as_json=True, client_timeout=5.0)
        return stats if isinstance(stats, dict) else {}

    # Classifier ----------------------------------------------------------------------
    def _classify_chunks(
        self, texts: list[str], pairs: list[str] | None
    ) -> Iterator[list[grpcclient.InferInput]]:
        step = self.classifier_max_batch
        for start in range(0, len(texts), step):
            inputs = [_input("TEXT", _bytes(texts[start : start + step]), "BYTES")]
            if pairs is not None:
                inputs.append(_input("TEXT_PAIR", _bytes(pairs[start : start + step]), "BYTES"))
            yield inputs

    @staticmethod
    def _classify_outputs(reply: object, results: list[ClassifyOutput], batches: list[int]) -> None:
        labels = reply.as_numpy("LABEL").reshape(-1)
        scores = reply.as_numpy("SCORE").reshape(-1)
        rewards = reply.as_numpy("REWARD").reshape(-1)
        batches.append(int(reply.as_numpy("BATCH_SIZE").reshape(-1)[0]))
        for label, score, reward in zip(labels, scores, rewards, strict=True):
            text = label.decode() if isinstance(label, bytes) else str(label)
            results.append(ClassifyOutput(text, float(score), float(reward)))

    def classify(
        self, model: str, texts: list[str], pairs: list[str] | None = None, timeout_s: float = 30.0
    ) -> tuple[list[ClassifyOutput], list[int]]:
        """Labels/scores/rewards for `texts` (optionally paired); also the batch sizes seen."""
        results: list[ClassifyOutput] = []
        batches: list[int] = []
        for inputs in self._classify_chunks(texts, pairs):
            try:
                reply = self._client.infer(model, inputs, client_timeout=timeout_s)
            except InferenceServerException as exc:
                raise _translate(exc) from exc
            self._classify_outputs(reply, results, batches)
        return results, batches

    async def classify_async(
        self, model: str, texts: list[str], pairs: list[str] | None = None, timeout_s: float = 30.0
    ) -> tuple[list[ClassifyOutput], list[int]]:
        """`classify` on tritonclient's asyncio client: no thread per call, so a busy
        service spends its CPU on requests rather than on thread hand-offs."""
        client = self._aio_client()
        results: list[ClassifyOutput] = []
        batches: list[int] = []
        for inputs in self._classify_chunks(texts, pairs):
            try:
                reply = await client.infer(model, inputs, client_timeout=timeout_s)
            except InferenceServerException as exc:
                raise _translate(exc) from exc
            except grpc.RpcError as exc:
                raise _translate_rpc(exc) from exc
            self._classify_outputs(reply, results, batches)
        return results, batches

    def _aio_client(self) -> object:
        """One asyncio client per event loop (grpc.aio channels belong to their loop)."""
        import asyncio

        import tritonclient.grpc.aio as aioclient

        loop = asyncio.get_running_loop()
        client = self._aio.get(loop)
        if client is None:
            client = self._aio[loop] = aioclient.InferenceServerClient(self.url)
        return client

    # Policy --------------------------------------------------------------------------
    def _policy_inputs(
        self, prompts: list[str], sampling: Sampling, chat: bool, stream: bool
    ) -> list[grpcclient.InferInput]:
        if len(prompts) > self.policy_max_batch:
            raise ModelInputError(f"at most {self.policy_max_batch} prompts per request")
        n = len(prompts)
        col = np.ones((n, 1))
        return [
            _input("PROMPT", _bytes(prompts), "BYTES"),
            _input("IS_CHAT", np.full((n, 1), chat, dtype=bool), "BOOL"),
            _input("MAX_NEW_TOKENS", (col * sampling.max_new_tokens).astype(np.int32), "INT32"),
            _input("TEMPERATURE", (col * sampling.temperature).astype(np.float32), "FP32"),
            _input("TOP_P", (col * sampling.top_p).astype(np.float32), "FP32"),
            _input("TOP_K", (col * sampling.top_k).astype(np.int32), "INT32"),
            _input("SEED", (col * sampling.seed).astype(np.int64), "INT64"),
            _input("STREAM", np.full((n, 1), stream, dtype=bool), "BOOL"),
        ]

    @staticmethod
    def _generation_event(result: object) -> GenerationEvent:
        text = result.as_numpy("TEXT")
        sizes = result.as_numpy("BATCH_SIZE")
        final = result.as_numpy("FINAL")
        size = int(sizes.reshape(-1)[0]) if sizes is not None and sizes.size else 0
        decoded = [] if text is None else [t.decode("utf-8") for t in text.reshape(-1)]
        if final is None or not final.size or bool(final.reshape(-1)[0]):
            return GenerationEvent(texts=decoded, batch_size=size)
        return GenerationEvent(delta=decoded[0] if decoded else "", batch_size=size)

    async def generate_stream_async(
        self,
        model: str,
        prompts: list[str],
        sampling: Sampling,
        chat: bool = False,
        stream: bool = False,
        timeout_s: float = 60.0,
    ) -> AsyncIterator[GenerationEvent]:
        """`generate_stream` on tritonclient's asyncio client (one bidi stream per call)."""
        import asyncio

        client = self._aio_client()
        inputs = self._policy_inputs(prompts, sampling, chat, stream)

        async def one_request() -> AsyncIterator[dict]:
            yield {"model_name": model, "inputs": inputs}

        responses = client.stream_infer(one_request(), stream_timeout=timeout_s)
        try:
            while True:
                try:
                    result, error = await asyncio.wait_for(responses.__anext__(), timeout_s)
                except StopAsyncIteration:
                    raise ServingError(
                        "Triton closed the stream without a final response"
                    ) from None
                except TimeoutError:
                    raise TritonUnavailable(
                        f"no answer from Triton within {timeout_s:.1f}s"
                    ) from None
                except InferenceServerException as exc:
                    raise _translate(exc) from exc
                except grpc.RpcError as exc:  # the stream itself failed (Triton down)
                    raise _translate_rpc(exc) from exc
                if error is not None:
                    raise _translate(error)
                event = self._generation_event(result)
                yield event
                if event.final:
                    return
        finally:
            responses.cancel()

    def _stream_client(self) -> grpcclient.InferenceServerClient:
        try:
            return self._streams.get_nowait()
        except queue.Empty:
            return grpcclient.InferenceServerClient(self.url)

    def generate_stream(
        self,
        model: str,
        prompts: list[str],
        sampling: Sampling,
        chat: bool = False,
        stream: bool = False,
        timeout_s: float = 60.0,
    ) -> Iterator[GenerationEvent]:
        """Run the decoupled policy model; yields deltas (when `stream`) then the final texts.

        With `chat`, each prompt is a JSON list of {role, content} messages that the model
        renders with its own chat template.
        """
        if len(prompts) > self.policy_max_batch:
            raise ModelInputError(f"at most {self.policy_max_batch} prompts per request")
        inputs = self._policy_inputs(prompts, sampling, chat, stream)
        replies: queue.Queue[tuple[object, object]] = queue.Queue()
        client = self._stream_client()
        healthy = True
        try:
            client.start_stream(
                callback=lambda result, error: replies.put((result, error)),
                stream_timeout=timeout_s,
            )
            try:
                client.async_stream_infer(model, inputs, enable_empty_final_response=True)
            except InferenceServerException as exc:
                healthy = False
                try:  # the callback usually holds the real cause (e.g. connection refused)
                    _, error = replies.get(timeout=0.5)
                except queue.Empty:
                    error = None
                cause = error if isinstance(error, InferenceServerException) else exc
                raise TritonUnavailable(cause.message() or str(cause)) from exc
            while True:
                try:
                    result, error = replies.get(timeout=timeout_s)
                except queue.Empty:
                    healthy = False
                    raise TritonUnavailable(
                        f"no answer from Triton within {timeout_s:.1f}s"
                    ) from None
                if error is not None:
                    healthy = False
                    if isinstance(error, InferenceServerException):
                        raise _translate(error)
                    raise ServingError(str(error))
                response = result.get_response()
                final = response.parameters["triton_final_response"].bool_param
                text = result.as_numpy("TEXT")
                sizes = result.as_numpy("BATCH_SIZE")
                size = int(sizes.reshape(-1)[0]) if sizes is not None and sizes.size else 0
                decoded = [] if text is None else [t.decode("utf-8") for t in text.reshape(-1)]
                if final:
                    yield GenerationEvent(texts=decoded, batch_size=size)
                    return
                yield GenerationEvent(delta=decoded[0] if decoded else "", batch_size=size)
        except GeneratorExit:  # the caller went away: cancel instead of draining
            healthy = False
            raise
        finally:
            try:
                client.stop_stream(cancel_requests=not healthy)
            except Exception:  # noqa: BLE001 - the stream is dead anyway
                healthy = False
            if healthy:
                self._streams.put(client)
            else:
                client.close()

    def generate(
        self,
        model: str,
        prompts: list[str],
        sampling: Sampling,
        chat: bool = False,
        timeout_s: float = 60.0,
    ) -> tuple[list[str], int]:
        """Completions for all prompts (one batched Triton request) and the batch size."""
        for event in self.generate_stream(model, prompts, sampling, chat, False, timeout_s):
            if event.final:
                return event.texts or [], event.batch_size
        raise ServingError("Triton closed the stream without a final response")


def chat_payload(messages: list[dict[str, str]]) -> str:
    """How chat messages travel in the PROMPT tensor."""
    return json.dumps(messages, ensure_ascii=False)
