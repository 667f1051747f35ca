"""Continuous (in-flight) batching for causal-LM generation.

Static batching runs a batch to its longest row, so a request that arrives meanwhile
waits for the whole batch. `ContinuousBatcher` keeps one running batch with a KV cache
instead, and at every scheduler step:

1. drops rows whose caller cancelled or whose deadline passed (the others go on);
2. admits waiting requests up to `max_batch` rows: the newcomers are prefilled together
   (left padded, like the static path), each samples its first token, and their KV
   cache is left padded to the running batch's width and appended to it;
3. runs one decode step for every running row (one forward pass, per-row sampling);
4. retires finished rows (EOS or max_new_tokens) at once, shrinking the cache, and
   trims cache columns that only padding still uses.

Per-request sampling: each row keeps its own `Sampling` and, when it has a seed, its own
`torch.Generator` seeded once when it joins and drawn once per token, as in the static
`backend.generate_batch`; the sampler is the caller's (`backend` passes its
`sample_tokens`), so the two paths sample the same way. What is guaranteed:

* a request served alone (nothing else running) runs exactly the static path's
  operations, so its output equals `PolicyEngine.generate` for greedy and seeded
  sampling alike;
* in a batch, each row's logits are those of the solo run up to float rounding (the
  padded positions get zero attention weight; the matmuls run with another batch shape).
  Greedy output equals the solo output (tested); a seeded row draws the same random
  numbers as alone, so its text differs only where rounding moves a sampling boundary
  across a draw — the same guarantee the static batched path gives.

This file needs only torch (and a transformers cache class), because the Triton Python
backend copies it beside `model.py` as `rlhf_continuous.py`.
"""

from __future__ import annotations

import collections
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

TokensCallback = Callable[[list[int]], None]
DoneCallback = Callable[["Generation"], None]
SampleTokens = Callable[[torch.Tensor, list[Any], list[Any]], torch.Tensor]
"""(logits [B, V], each row's sampling, each row's generator or None) -> tokens [B]."""


class GenerationCancelled(RuntimeError):
    """The caller cancelled the request (or its client went away)."""


class GenerationTimeout(TimeoutError):
    """The request's deadline passed before it finished."""


class Generation:
    """One submitted request: its tokens so far, a stream of them, and the result.

    The scheduler thread appends tokens and finishes it; any thread may read, stream,
    wait or cancel.
    """

    def __init__(
        self,
        request_id: int,
        prompt_ids: list[int],
        sampling: Any,
        on_tokens: TokensCallback | None,
        on_done: DoneCallback | None,
        is_cancelled: Callable[[], bool] | None,
        deadline: float | None,
    ) -> None:
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.tokens: list[int] = []
        self.error: BaseException | None = None
        self.batch_rows = 0  # rows in the running batch at this request's last step
        self.on_tokens = on_tokens
        self.on_done = on_done
        self.is_cancelled = is_cancelled
        self.deadline = deadline
        self.generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed else None
        self._cancelled = False
        self._done = threading.Event()
        self._stream: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    # --- caller side
    def cancel(self) -> None:
        """Ask the scheduler to drop this request at its next step."""
        self._cancelled = True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> list[int]:
        """The generated token ids (EOS left out); raises the request's error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request_id} still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return list(self.tokens)

    def stream(self, timeout: float | None = None) -> Iterator[int]:
        """Token ids in order as they are generated; raises the error at the end, if any."""
        while True:
            token = self._stream.get(timeout=timeout)
            if token is None:
                break
            yield token
        if self.error is not None:
            raise self.error

    # --- scheduler side
    def _stop_reason(self, now: float) -> BaseException | None:
        if self._cancelled or (self.is_cancelled is not None and self.is_cancelled()):
            return GenerationCancelled(f"request {self.request_id} was cancelled")
        if self.deadline is not None and now > self.deadline:
            return GenerationTimeout(f"request {self.request_id} passed its deadline")
        return None

    def _add(self, token: int, eos_id: int | None) -> bool:
        """Record one sampled token; True when the request is now finished."""
        finished = token == eos_id or len(self.tokens) + 1 >= self.sampling.max_new_tokens
        if token != eos_id:
            self.tokens.append(token)
            self._stream.put(token)
        if self.on_tokens is not None:
            self.on_tokens(self.tokens)
        return finished

    def _finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self._stream.put(None)
        self._done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # a reply to a caller already gone must not stop the loop
                log.exception("on_done of request %s failed", self.request_id)


@dataclass
class StepRecord:
    """What one scheduler step did (request ids), for tests and debugging."""

    index: int
    joined: list[int]
    decoded: list[int]
    retired: list[int]


@dataclass
class _Batch:
    """The running batch: rows, their KV cache, attention mask and next inputs."""

    rows: list[Generation] = field(default_factory=list)
    cache: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    attention: torch.Tensor | None = None  # (rows, width), 0 = left padding
    positions: torch.Tensor | None = None  # (rows, 1): position of the pending token
    pending: torch.Tensor | None = None  # (rows,): sampled, not yet fed to the model


# ------------------------------------------------------------------------ KV cache
def cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a transformers cache, (batch, heads, seq, dim) each."""
    if hasattr(cache, "layers"):  # transformers 5
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # transformers 4.x DynamicCache
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]  # legacy tuples


def make_cache(tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A `DynamicCache` holding the given per-layer tensors."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(tensors):
        cache.update(keys, values, layer)
    return cache


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


# ---------------------------------------------------------------------- scheduler
class ContinuousBatcher:
    """A decode loop over a running batch that requests join and leave between steps.

    Drive it with `step()` (tests, a caller's own loop) or `start()` a background
    thread that steps while there is work. `submit` is thread-safe.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        sample_tokens: SampleTokens,
        max_batch: int = 32,
        max_new_tokens: int = 1024,
        log_steps: int = 1000,
    ) -> None:
        self.model = model
        self.max_new_tokens = max_new_tokens  # ceiling per request (the service's too)
        self.sample_tokens = sample_tokens
        self.max_batch = max_batch
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id
        # transformers 5 calls the KV cache argument `cache`, 4.x `past_key_values`.
        accepted = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        self._batch = _Batch()
        self._waiting: collections.deque[Generation] = collections.deque()
        self._lock = threading.Condition()
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps: collections.deque[StepRecord] = collections.deque(maxlen=log_steps)
        self.step_count = 0
        self.joined_running = 0  # requests admitted while other rows were decoding

    # --- API
    def submit(
        self,
        prompt_ids: list[int],
        sampling: Any,
        on_tokens: TokensCallback | None = None,
        on_done: DoneCallback | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        timeout_s: float | None = None,
    ) -> Generation:
        """Queue a request; it joins the running batch at the next step.

        `on_tokens(tokens so far)` runs on the scheduler thread after each token,
        `on_done(generation)` once at the end; `is_cancelled()` is polled every step.
        """
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: a request needs at least one token")
        if not 0 <= sampling.max_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"max_new_tokens must be in 0..{self.max_new_tokens} "
                f"(got {sampling.max_new_tokens})"
            )
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            self._next_id += 1
            generation = Generation(
                self._next_id, list(prompt_ids), sampling, on_tokens, on_done, is_cancelled,
                deadline,
            )  # fmt: skip
            self._waiting.append(generation)
            self._lock.notify()
        return generation

    @property
    def running(self) -> int:
        return len(self._batch.rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> ContinuousBatcher:
        """Step on a daemon thread while there is work; sleep when there is none."""
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="continuous-batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; requests still queued or running fail with cancellation."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        stopped = GenerationCancelled("the batcher stopped")
        for row in [*self._batch.rows, *self._waiting]:
            row._finish(stopped)
        self._batch, self._waiting = _Batch(), collections.deque()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._waiting and not self._batch.rows:
                    self._lock.wait()
                if self._stopping:
                    return
            self.step()

    # --- one step
    @torch.inference_mode()
    def step(self) -> bool:
        """One scheduler iteration (drop, admit, decode, retire); True if work remains."""
        record = StepRecord(self.step_count, [], [], [])
        self.step_count += 1
        self._drop_stopped(record)
        self._admit(record)
        if self._batch.rows:
            record.decoded = [row.request_id for row in self._batch.rows]
            try:
                logits = self._forward_pending()
            except Exception as exc:  # noqa: BLE001 - every running row gets the error
                self._fail_all(exc, record)
            else:
                self._batch = self._sample_and_retire(self._batch, logits, record)
        self.steps.append(record)
        return bool(self._batch.rows or self._waiting)

    def _drop_stopped(self, record: StepRecord) -> None:
        now = time.monotonic()
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
            for row in waiting:
                reason = row._stop_reason(now)
                if reason is None:
                    self._waiting.append(row)
                else:
                    record.retired.append(row.request_id)
                    row._finish(reason)
        reasons = [row._stop_reason(now) for row in self._batch.rows]
        stopped = [i for i, reason in enumerate(reasons) if reason is not None]
        self._batch = self._remove(self._batch, stopped, reasons, record)

    def _admit(self, record: StepRecord) -> None:
        """Prefill the newcomers together, sample their first token, append them."""
        with self._lock:
            room = self.max_batch - len(self._batch.rows)
            newcomers = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if not newcomers:
            return
        if self._batch.rows:
            self.joined_running += len(newcomers)
        record.joined = [row.request_id for row in newcomers]
        for row in newcomers:
            if row.sampling.max_new_tokens <= 0:
                record.retired.append(row.request_id)
                row._finish()
        newcomers = [row for row in newcomers if row.sampling.max_new_tokens > 0]
        if not newcomers:
            return
        try:
            joined, logits = self._prefill(newcomers)
        except Exception as exc:  # noqa: BLE001 - only the newcomers failed
            for row in newcomers:
                record.retired.append(row.request_id)
                row._finish(exc)
            return
        self._batch = self._append(self._batch, self._sample_and_retire(joined, logits, record))

    def _prefill(self, rows: list[Generation]) -> tuple[_Batch, torch.Tensor]:
        width = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention[i, width - len(row.prompt_ids) :] = 1
        attention = attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention,
            position_ids=positions,
            **self._keep_last,
        )
        cache = getattr(out, "cache", None)
        cache = cache if cache is not None else out.past_key_values
        batch = _Batch(rows, cache_tensors(cache), attention, positions[:, -1:])
        return batch, out.logits[:, -1, :].float()

    @staticmethod
    def _append(old: _Batch, new: _Batch) -> _Batch:
        """Left pad the narrower of two batches to a common width and stack them."""
        if not new.rows:
            return old
        if not old.rows:
            return new
        width = max(old.attention.shape[1], new.attention.shape[1])
        return _Batch(
            old.rows + new.rows,
            [
                (
                    torch.cat([_left_pad(ok, width, 2), _left_pad(nk, width, 2)]),
                    torch.cat([_left_pad(ov, width, 2), _left_pad(nv, width, 2)]),
                )
                for (ok, ov), (nk, nv) in zip(old.cache, new.cache, strict=True)
            ],
            torch.cat([_left_pad(old.attention, width, 1), _left_pad(new.attention, width, 1)]),
            torch.cat([old.positions, new.positions]),
            torch.cat([old.pending, new.pending]),
        )

    def _forward_pending(self) -> torch.Tensor:
        """Feed every row's pending token; returns next-token logits (rows, vocab)."""
        batch = self._batch
        batch.attention = torch.cat(
            [batch.attention, batch.attention.new_ones((len(batch.rows), 1))], 1
        )
        batch.positions = batch.positions + 1
        out = self.model(
            input_ids=batch.pending[:, None].to(self.device),
            attention_mask=batch.attention,
            position_ids=batch.positions,
            **{self._cache_arg: make_cache(batch.cache)},
        )
        cache = getattr(out, "cache", None)
        batch.cache = cache_tensors(cache if cache is not None else out.past_key_values)
        return out.logits[:, -1, :].float()

    def _sample_and_retire(self, batch: _Batch, logits: torch.Tensor, record: StepRecord) -> _Batch:
        """Sample one token per row of `batch`; returns the batch without its finished rows."""
        tokens = self.sample_tokens(
            logits, [row.sampling for row in batch.rows], [row.generator for row in batch.rows]
        ).cpu()
        reasons: list[BaseException | None] = [None] * len(batch.rows)
        finished = []
        for i, row in enumerate(batch.rows):
            token = int(tokens[i])
            row.batch_rows = len(self._batch.rows) + (
                0 if batch is self._batch else len(batch.rows)
            )
            try:
                if row._add(token, self.eos_id):
                    finished.append(i)
            except Exception as exc:  # noqa: BLE001 - a failing callback ends its row only
                finished.append(i)
                reasons[i] = exc
        batch.pending = tokens
        return self._remove(batch, finished, reasons, record)

    def _remove(
        self,
        batch: _Batch,
        indices: list[int],
        reasons: list[BaseException | None],
        record: StepRecord,
    ) -> _Batch:
        """Finish rows `indices` (with their reason); returns the batch without them."""
        if not indices:
            return batch
        gone = set(indices)
        for i in indices:
            record.retired.append(batch.rows[i].request_id)
            batch.rows[i]._finish(reasons[i])
        keep = [i for i in range(len(batch.rows)) if i not in gone]
        if not keep:
            return _Batch()
        index = torch.tensor(keep, device=self.device)
        attention = batch.attention.index_select(0, index)
        start = int((attention.sum(0) > 0).int().argmax())  # columns before: padding only
        return _Batch(
            [batch.rows[i] for i in keep],
            [
                (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
                for k, v in batch.cache
            ],
            attention[:, start:],
            batch.positions.index_select(0, index),
            None if batch.pending is None else batch.pending.index_select(0, index.cpu()),
        )

    def _fail_all(self, exc: BaseException, record: StepRecord) -> None:
        for row in self._batch.rows:
            record.retired.append(row.request_id)
            row._finish(exc)
        self._batch = _Batch()
