"""The server's tails, shared by every stream of a round: one worker thread runs them all.

A stream thread with a request queues it and waits. The worker, whenever it is idle, takes every
request queued by then and answers them in one `tail_step` call (the strategy may batch those of
one split), while later arrivals wait for the next call. No waiting window: a lone client never
waits for company.

The worker lives as long as the queue (across rounds) so that every tensor of every tail step is
allocated by one thread: glibc gives each thread its own malloc arena, and when the steps ran on
whichever stream thread found the queue idle (new threads every round), each of those arenas
kept a step's worth of freed memory and the ServerApp's RSS grew round after round
(`edgesplit.memory`).
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
    """Serialises a round's calls to `tail_step` on one worker thread; `close` ends the round
    before its state is read (a stream thread still running can no longer step a tail), and
    `shutdown` stops the worker."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards everything below
        self._queue: list[TailRequest] = []  # requests waiting for the next tail_step call
        self._serving = False  # the worker is inside a tail_step call
        self._tail_step: TailStep | None = None  # None: no round open, requests are refused
        self._worker: threading.Thread | None = None
        self._stopping = False

    def open(self, tail_step: TailStep) -> None:
        with self._cond:
            self._tail_step, self._stopping = tail_step, False
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="tail-worker",
                                                daemon=True)
                self._worker.start()

    def close(self) -> None:
        """End the round: wait for a tail step in progress; refuse later requests; drop the
        round's `tail_step` (it holds the round's tail sessions)."""
        with self._cond:
            while self._serving:
                self._cond.wait()
            self._tail_step = None

    def shutdown(self) -> None:
        """Stop the worker (it answers what is queued first, refusing it if no round is open)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.join()

    def answer(self, session: StreamSession, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The server's answer to one frame (raised if it is an error)."""
        request = TailRequest(session, tensors)
        with self._cond:
            if self._worker is None:
                raise Refused("the server's tails are shut down")
            self._queue.append(request)
            self._cond.notify_all()
            while request.answer is None:
                self._cond.wait()
        if isinstance(request.answer, Exception):
            raise request.answer
        return request.answer

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue, self._serving = self._queue, [], True
                tail_step = self._tail_step
            try:
                self._serve(batch, tail_step)
            finally:
                with self._cond:
                    for request in batch:  # whatever _serve could not answer
                        if request.answer is None:
                            request.answer = RuntimeError("the server gave no answer")
                    self._serving = False
                    self._cond.notify_all()

    @staticmethod
    def _serve(batch: list[TailRequest], tail_step: TailStep | None) -> None:
        live = []
        for request in batch:
            if tail_step is None or request.session.state != "streaming":
                request.answer = Refused("the round is over for this client")
            else:
                live.append(request)
        if not live:
            return
        started = time.perf_counter()
        try:
            answers = tail_step({r.session.job.node_id: r.tensors for r in live})
        except Exception as exc:  # the strategy's fault, not a client's: fail them all
            answers = {r.session.job.node_id: exc for r in live}
        share = (time.perf_counter() - started) / len(live)  # per client step
        for request in live:
            request.answer = answers.get(request.session.job.node_id,
                                         RuntimeError("the server gave no answer"))
            request.session.outcome.step_times.append(share)
