"""The Flower-message data plane: every local step is one Flower message exchange.

Fine in Ray simulation (about 0.2 s per step), far too slow across machines (seconds per
message; see the stream transport). Kept as the reference the stream must match bit for bit.
"""

from __future__ import annotations

import time

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from edgesplit.protocol import ACTIVATIONS, CONFIG, GRADIENT, LORA, TRAIN_START, TRAIN_STEP
from edgesplit.records import PayloadError, Spec, client_error, from_record, to_record
from strategies.transport import TailStep, TrainJob, TrainOutcome, answer_one, read_final_reply


class FlowerTransport:
    """Every step is a Flower message exchange (fused: a reply to the gradient of step s carries
    the activations of step s+1). Clients progress independently: the server answers whichever
    client replied, so it never waits in lockstep for the slowest one.

    Parameters
    ----------
    grid : Grid
    activation_spec : Spec
        What activations must look like (validated before the tail sees them).
    step_timeout_s : float
        A client silent for longer than this on one exchange is dropped.
    poll_s, max_poll_s : float (default: 0.005, 0.25)
        First and longest wait between polls while no reply arrives (doubling in between).
    """

    def __init__(self, grid: Grid, activation_spec: Spec, step_timeout_s: float,
                 poll_s: float = 0.005, max_poll_s: float = 0.25) -> None:
        self.grid, self.spec = grid, activation_spec
        self.step_timeout_s, self.poll_s, self.max_poll_s = step_timeout_s, poll_s, max_poll_s

    def _push(self, job: TrainJob, outcome: TrainOutcome, content: RecordDict,
              message_type: str) -> str:
        msg = Message(content, dst_node_id=job.node_id, message_type=message_type,
                      ttl=self.step_timeout_s)
        outcome.bytes_down += sum(r.count_bytes() for r in content.array_records.values())
        (message_id,) = self.grid.push_messages([msg])
        return message_id

    def train_round(self, jobs: list[TrainJob], tail_step: TailStep) -> dict[int, TrainOutcome]:
        outcomes = {job.node_id: TrainOutcome(job.node_id) for job in jobs}
        in_flight: dict[str, tuple[TrainJob, int, float]] = {}  # id -> (job, step, sent at)
        started = time.monotonic()
        for job in jobs:
            content = RecordDict({CONFIG: job.task.to_record(), LORA: to_record(job.head_lora)})
            mid = self._push(job, outcomes[job.node_id], content, TRAIN_START)
            in_flight[mid] = (job, 0, time.monotonic())

        idle = 0.0
        while in_flight:
            replies = list(self.grid.pull_messages(list(in_flight)))
            for reply in replies:
                job, step, sent = in_flight.pop(reply.metadata.reply_to_message_id)
                outcome = outcomes[job.node_id]
                outcome.transport_s += time.monotonic() - sent
                try:
                    next_content = self._handle(reply, job, step, outcome, tail_step)
                except Exception as exc:  # any client fault, or a tail failure on its data
                    outcome.failure = f"step {step}: {type(exc).__name__}: {exc}"
                    continue
                if next_content is not None:
                    mid = self._push(job, outcome, next_content, TRAIN_STEP)
                    in_flight[mid] = (job, step + 1, time.monotonic())
                else:
                    outcome.round_s = time.monotonic() - started
            now = time.monotonic()
            for mid, (job, step, sent) in list(in_flight.items()):
                if now - sent > self.step_timeout_s:
                    del in_flight[mid]
                    outcomes[job.node_id].failure = (
                        f"step {step}: no reply within {self.step_timeout_s:.0f} s")
            # Back off while nothing arrives: each pull is a request to the SuperLink, and in
            # deployment replies take seconds anyway.
            idle = 0.0 if replies else min(self.max_poll_s, max(self.poll_s, 2 * idle))
            time.sleep(idle)
        return outcomes

    def _handle(self, reply: Message, job: TrainJob, step: int, outcome: TrainOutcome,
                tail_step: TailStep) -> RecordDict | None:
        """Process one reply; return the next message's content, or None when the job is done."""
        if reply.has_error():
            raise PayloadError(client_error(reply))
        content = reply.content
        outcome.bytes_up += sum(r.count_bytes() for r in content.array_records.values())
        if step < job.task.local_steps:
            if ACTIVATIONS not in content.array_records:
                raise PayloadError("reply lacks activations")
            activations = from_record(content[ACTIVATIONS], self.spec)
            if activations["hidden"].shape[0] != job.task.batch_size:
                raise PayloadError(f"batch of {activations['hidden'].shape[0]} rows, expected "
                                   f"{job.task.batch_size}")
            started = time.perf_counter()
            grad = answer_one(tail_step, job.node_id, activations)
            outcome.step_times.append(time.perf_counter() - started)
            return RecordDict({CONFIG: ConfigRecord({"step": step}),
                               GRADIENT: to_record({"hidden": grad})})
        (outcome.head_lora, outcome.num_examples, outcome.device_losses,
         outcome.device_compute_s) = read_final_reply(content, job)
        outcome.steps_done = job.task.local_steps
        return None
