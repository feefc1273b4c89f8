"""Calibration by measurement: what devices and the server really take per layer.

With `allocation.calibration = "measure"`, every device is asked once, in the profile query of the
first round it is sampled (a `calibration` request in `query.profile`, answered by
`clients.calibration`: no message of its own), to time a few of its own training steps,
and the server times its own tail steps the same way: tails of 1 and of L - 1 decoder layers
(LM head and loss included) on held-out text; the line through the two gives seconds per layer
and the split-independent rest. The server's sizes lie far apart because its fixed part, the LM
head over the whole vocabulary, outweighs several layers (SmolLM2: about 7), and a few layers'
difference drowns in the noise of a busy machine. With batched tails it also times 4 clients'
tails in one batched pass against one alone: how many clients it serves in the time of one. The
makespan model then uses these seconds instead of the catalogue's. A device that does not
answer, or answers nonsense, keeps its catalogue figures (the reason is recorded).

With `allocation.calibration = "track"` the speeds measured at the start are then rescaled after
every round by what the round's training itself took: each device's by its measured compute over the
compute the model predicted for it, the server's by the round's measured tail seconds over the
predicted ones (all clients together). A calibration is a few steps at one moment; on a shared
machine (the testbed's cgroups compete with whatever else runs) the speed during training can
differ several-fold, and the next round's allocation should follow the latest. Tracking also
keeps each device's start offset (from the round message to its first step: its ClientApp's
start-up), which a "fifo" server's model needs to know which clients' data planes overlap.

Measurements are recorded in the round's metrics (`calibration`; rescalings under `tracked`),
and a resumed run reads them back from its checkpoint's metrics rather than measuring again, so
the allocation of the resumed rounds follows the same numbers as the uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from flwr.app import ConfigRecord, RecordDict

from allocation.measurement import Measured, fit_measured, time_interleaved
from edgesplit.protocol import CALIBRATION, RoundTask
from edgesplit.split_model import SplitModel
from strategies.batched_tail import serve_requests
from strategies.tail import TailSession

#: Calibration modes a run may name (run config `calibration`).
CALIBRATIONS = ("measure", "track", "none")
#: Largest credible seconds per layer or per step (a day): anything above is nonsense.
_MAX_SECONDS = 86_400.0
#: Clients whose tails the server batches together to measure its concurrency.
_BATCHED = 4


def _seconds(record: ConfigRecord, key: str) -> float:
    value = record[key]
    if not isinstance(value, float) or not math.isfinite(value) or not 0 <= value < _MAX_SECONDS:
        raise ValueError(f"{key} = {value!r} is not a credible number of seconds")
    return value


class Calibrator:
    """Measures devices (once each) and the server (once), and remembers the answers.

    Parameters
    ----------
    layers : int
        The larger head the devices time (the smaller has 1 layer); at most L - 1.
    batch_size : int
    optimizer : str
    learning_rate : float
    steps : int
        Timed steps per size, after one warm-up.
    batch_tails : bool
        Also measure the server's concurrency with batched tails.
    """

    def __init__(self, layers: int, batch_size: int, optimizer: str, learning_rate: float,
                 steps: int, batch_tails: bool) -> None:
        self.layers, self.batch_size, self.optimizer = layers, batch_size, optimizer
        self.learning_rate, self.steps, self.batch_tails = learning_rate, steps, batch_tails
        self.devices: dict[int, Measured] = {}
        self.failed: set[int] = set()  # asked once, no credible answer: catalogue from now on
        self.server: Measured | None = None
        #: Each device's data-plane start offset in its last round (tracking).
        self.starts: dict[int, float] = {}

    # ---- devices ---------------------------------------------------------------------------
    def wanted(self, nodes: Sequence[int]) -> list[int]:
        """The nodes of `nodes` to measure: asked never before."""
        return [n for n in nodes if n not in self.devices and n not in self.failed]

    def request(self) -> ConfigRecord:
        """What a device times (the `calibration` record of its profile query)."""
        return ConfigRecord({"layers": self.layers, "batch-size": self.batch_size,
                             "optimizer": self.optimizer, "steps": self.steps})

    def learn(self, asked: Sequence[int], replies: Mapping[int, RecordDict | Exception]
              ) -> dict:
        """Take the devices' answers (each node asked: its reply content, or why there is
        none); returns what was learnt, for the metrics: ``{"devices": {node: {...}},
        "failures": {node: reason}}`` (empty when nobody was asked)."""
        if not asked:
            return {}
        learnt, failures = {}, {}
        for node in asked:
            try:
                reply = replies.get(node, TimeoutError("no profile reply"))
                if isinstance(reply, Exception):
                    raise reply
                record = reply[CALIBRATION]
                if "error" in record:
                    raise RuntimeError(str(record["error"]))
                measured = Measured(_seconds(record, "layer-s"), _seconds(record, "fixed-s"))
                if measured.layer_s <= 0:
                    raise ValueError("layer-s must be > 0")
            except Exception as exc:  # the device keeps its catalogue figures
                failures[str(node)] = f"calibration: {type(exc).__name__}: {exc}"
                self.failed.add(node)
                continue
            self.devices[node] = measured
            learnt[str(node)] = {"layer_s": measured.layer_s, "fixed_s": measured.fixed_s}
        return {"devices": learnt, "failures": failures}

    def measured(self, nodes: Sequence[int]) -> list[Measured | None]:
        """The measurements of `nodes`, in order (None where there is none)."""
        return [self.devices.get(n) for n in nodes]

    def start_offsets(self, nodes: Sequence[int]) -> list[float | None]:
        """Each of `nodes`' data-plane start offset in its last tracked round, in order (None
        where there is none)."""
        return [self.starts.get(n) for n in nodes]

    # ---- the server -----------------------------------------------------------------------
    def measure_server(self, model: SplitModel, batch: Mapping[str, torch.Tensor]) -> dict:
        """Time the server's tail once (see the module docstring); returns the metrics entry
        (empty after the first call)."""
        if self.server is not None:
            return {}
        # The stream transport runs tails on a worker thread of its own, and torch's intra-op
        # threading can differ between threads (in-process, the devices' 1-thread setting
        # reaches new threads but not this one): time the tail in a thread other than this too.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibrate") as pool:
            self.server = pool.submit(self._time_server, model, batch).result()
        return {"server": {"layer_s": self.server.layer_s, "fixed_s": self.server.fixed_s,
                           "concurrency": self.server.concurrency}}

    def _time_server(self, model: SplitModel, batch: Mapping[str, torch.Tensor]) -> Measured:
        sizes = (1, model.num_layers - 1)
        steps = [self._tail_step(model, batch, model.num_layers - k) for k in sizes]
        seconds = time_interleaved(steps, self.steps)
        concurrency = self._concurrency(model, batch) if self.batch_tails else 1.0
        return fit_measured(sizes, seconds, concurrency)

    def _sessions(self, model: SplitModel, split: int, count: int) -> list[TailSession]:
        task = RoundTask(server_round=1, split=split, local_steps=self.steps + 1,
                         batch_size=self.batch_size, learning_rate=self.learning_rate,
                         optimizer=self.optimizer, seed=0)
        lora = model.lora_state(range(split, model.num_layers))
        return [TailSession(model, lora, task) for _ in range(count)]

    @staticmethod
    def _activations(model: SplitModel, batch: Mapping[str, torch.Tensor],
                     split: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            hidden = model.head(batch["input_ids"], batch["attention_mask"], split)
        return {"hidden": hidden, "attention_mask": batch["attention_mask"],
                "labels": batch["labels"]}

    def _tail_step(self, model: SplitModel, batch: Mapping[str, torch.Tensor],
                   split: int) -> Callable[[], object]:
        (session,) = self._sessions(model, split, 1)
        acts = self._activations(model, batch, split)
        return lambda: session.step(acts)

    def _concurrency(self, model: SplitModel, batch: Mapping[str, torch.Tensor]) -> float:
        """How many clients' one-layer tails a batched pass serves in the time of one."""
        split = model.num_layers - 1
        acts = self._activations(model, batch, split)
        parts = dict(enumerate(self._sessions(model, split, _BATCHED)))
        alone, together = time_interleaved(
            [self._tail_step(model, batch, split),
             lambda: serve_requests(parts, dict.fromkeys(parts, acts))], self.steps)
        return _BATCHED * alone / together

    # ---- tracking ------------------------------------------------------------------------
    def track(self, clients: Sequence[Mapping]) -> dict:
        """Rescale the speeds by a finished round's measured against modelled seconds (its
        metrics' client entries); returns the new speeds, for the metrics (empty if none). Each
        client's start offset (`measured_start_s`) is kept too, for a "fifo" server's model."""
        devices = {}
        for c in clients:
            if c.get("measured_start_s") is not None:
                self.starts[int(c["node"])] = float(c["measured_start_s"])
            node, old = int(c["node"]), self.devices.get(int(c["node"]))
            measured, modelled = c.get("measured_device_s"), c.get("modelled_device_s")
            if old is None or not measured or not modelled:
                continue
            self.devices[node] = _scaled(old, measured / modelled)
            devices[str(node)] = {"layer_s": self.devices[node].layer_s,
                                  "fixed_s": self.devices[node].fixed_s}
        learnt: dict = {"devices": devices} if devices else {}
        pairs = [(c["measured_server_s"], c["modelled_server_s"]) for c in clients
                 if c.get("measured_server_s") and c.get("modelled_server_s")]
        if self.server is not None and pairs:
            ratio = sum(m for m, _ in pairs) / sum(p for _, p in pairs)
            self.server = _scaled(self.server, ratio)
            learnt["server"] = {"layer_s": self.server.layer_s, "fixed_s": self.server.fixed_s,
                                "concurrency": self.server.concurrency}
        return learnt

    # ---- resuming -------------------------------------------------------------------------
    def restore(self, rows: Sequence[Mapping]) -> None:
        """Take the measurements recorded in the metrics of the run being resumed."""
        entries = []
        for row in rows:
            entry = row.get("calibration") or {}
            entries += [entry, entry.get("tracked") or {}]
            if entry.get("tracked"):
                self.starts.update({int(c["node"]): float(c["measured_start_s"])
                                    for c in row.get("clients", [])
                                    if c.get("measured_start_s") is not None})
        for entry in entries:
            for node, m in entry.get("devices", {}).items():
                self.devices[int(node)] = Measured(m["layer_s"], m["fixed_s"])
            self.failed.update(int(node) for node in entry.get("failures", {}))
            if "server" in entry:
                m = entry["server"]
                self.server = Measured(m["layer_s"], m["fixed_s"], m["concurrency"])


def _scaled(measured: Measured, ratio: float) -> Measured:
    """The same speeds `ratio` times slower (ratios beyond 100x either way are cut: one odd
    round must not wreck the next allocation)."""
    ratio = min(100.0, max(0.01, ratio))
    return Measured(measured.layer_s * ratio, measured.fixed_s * ratio, measured.concurrency)
