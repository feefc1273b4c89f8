"""The server's tails, shared by every stream of a round: one caller at a time.

A stream thread with a request queues it; if nobody is serving, it takes every request queued by
then and answers them in one `tail_step` call (the strategy may batch those of one split), while
later arrivals wait for the next call. No waiting window: a lone client never waits for company.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from strategies.stream_sessions import Refused, StreamSession
from strategies.transport import TailStep


@dataclass
class TailRequest:
    """One client's frame waiting for the server's answer."""

    session: StreamSession
    tensors: dict[str, torch.Tensor]
    answer: torch.Tensor | Exception | None = None


class TailQueue:
    """Serialises a round's calls to `tail_step`; `close` stops it before the round's state is
    read (a stream thread still running can no longer step a tail)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards _queue and _serving
        self._queue: list[TailRequest] = []  # requests waiting for the next tail_step call
        self._serving = False
        self._model_lock = threading.Lock()  # the server model is shared by every tail
        self._tail_step: TailStep | None = None
        self._closed = True

    def open(self, tail_step: TailStep) -> None:
        with self._model_lock:
            self._tail_step, self._closed = tail_step, False

    def close(self) -> None:
        with self._model_lock:
            self._closed = True

    def answer(self, session: StreamSession, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The server's answer to one frame (raised if it is an error). If another thread is
        running `tail_step`, wait: whoever finds it idle next serves every request queued by
        then in one call."""
        request = TailRequest(session, tensors)
        with self._cond:
            self._queue.append(request)
            while request.answer is None and self._serving:
                self._cond.wait()
            batch = None
            if request.answer is None:
                batch, self._queue, self._serving = self._queue, [], True
        if batch is not None:
            try:
                self._serve(batch)
            finally:
                with self._cond:
                    self._serving = False
                    self._cond.notify_all()
        if isinstance(request.answer, Exception):
            raise request.answer
        return request.answer

    def _serve(self, batch: list[TailRequest]) -> None:
        with self._model_lock:
            live = []
            for request in batch:
                if self._closed or request.session.state != "streaming":
                    request.answer = Refused("the round is over for this client")
                else:
                    live.append(request)
            if not live:
                return
            started = time.perf_counter()
            try:
                answers = self._tail_step({r.session.job.node_id: r.tensors for r in live})
            except Exception as exc:  # the strategy's fault, not a client's: fail them all
                answers = {r.session.job.node_id: exc for r in live}
            share = (time.perf_counter() - started) / len(live)  # per client step
            for request in live:
                request.answer = answers.get(request.session.job.node_id,
                                             RuntimeError("the server gave no answer"))
                request.session.outcome.step_times.append(share)
