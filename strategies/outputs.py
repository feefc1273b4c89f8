"""The run folder: config snapshot, run status, per-round metrics (JSONL + CSV) and figures,
sample generations, checkpoints, final adapter.

The figures are redrawn after a round once `FIGURES_EVERY_S` have passed since the last drawing,
and when the run ends: drawing them costs about half a second of CPU, which after every round of
a fast run (tests, tiny models, simulations of many short rounds) would cost more than the
round itself.

Every file is written atomically (temporary file + rename), so an interrupted run never leaves a
half-written checkpoint or metrics file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Mapping
from logging import WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.common.logger import log

from strategies.run_figures import draw_all

FIGURES_EVERY_S = 30.0


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


class RunRecorder:
    """Writes a run's outputs under `output_dir/run_name` (run_name defaults to a timestamp)."""

    def __init__(self, output_dir: str | Path, run_name: str, config: Mapping[str, Any],
                 figures_every_s: float = FIGURES_EVERY_S) -> None:
        name = run_name or time.strftime("%Y%m%d-%H%M%S")
        self.folder = Path(output_dir) / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.config = dict(config)
        self._status: dict[str, Any] = {}
        self.figures_every_s = figures_every_s
        self._drawn_at, self._drawn_rows = time.monotonic(), 0
        atomic_write(self.folder / "config.json", json.dumps(self.config, indent=2).encode())

    def status(self, state: str, **details: Any) -> None:
        """Record where the run stands in status.json: ``state`` ("running", "completed" or
        "failed") with the time, and ``details`` (kept from earlier calls unless replaced)."""
        if state != "running" and len(self.rows) > self._drawn_rows:  # the run ended
            self.draw_figures()
        self._status.update(details, status=state, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write(self.folder / "status.json", json.dumps(self._status, indent=2).encode())

    def log_round(self, row: Mapping[str, Any]) -> None:
        """Append one round's metrics to metrics.jsonl, rewrite metrics.csv, and redraw the
        figures if `figures_every_s` have passed since they were last drawn."""
        self.rows.append(dict(row))
        self._write_metrics()
        if time.monotonic() - self._drawn_at >= self.figures_every_s:
            self.draw_figures()

    def log_samples(self, server_round: int, samples: Mapping[str, str]) -> None:
        """Append one round's generations (prompt -> text) to generations.jsonl."""
        self.samples += [{"round": server_round, "prompt": prompt, "generation": text}
                         for prompt, text in samples.items()]
        atomic_write(self.folder / "generations.jsonl", _jsonl(self.samples))

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Start from the metrics of the run being resumed."""
        self.rows = [dict(r) for r in rows]
        self._write_metrics()

    def _write_metrics(self) -> None:
        atomic_write(self.folder / "metrics.jsonl", _jsonl(self.rows))
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v
                             for k, v in r.items()})
        atomic_write(self.folder / "metrics.csv", buffer.getvalue().encode())

    def draw_figures(self) -> None:
        """Redraw figures/ from the rounds recorded so far."""
        self._drawn_at = time.monotonic()
        try:
            for name, png in draw_all(self.rows).items():
                atomic_write(self.folder / "figures" / name, png)
        except Exception as exc:  # a figure is a convenience: never let it stop the training
            log(WARNING, "run figures not drawn: %s: %s", type(exc).__name__, exc)
            return
        self._drawn_rows = len(self.rows)

    def checkpoint(self, server_round: int, global_lora: Mapping[str, torch.Tensor]) -> Path:
        """Save everything a resumed run needs after `server_round`: the global adapter, the
        metrics so far and the run config. No RNG or allocator state is needed: every random
        draw of a round (sampling, fading, batches) is derived from (seed, round)."""
        buffer = io.BytesIO()
        # The rows as metrics.jsonl holds them: plain Python values (a numpy scalar in a row
        # would make the checkpoint unreadable to torch.load(weights_only=True)).
        rows = json.loads(json.dumps(self.rows))
        torch.save({"round": server_round, "lora": dict(global_lora), "metrics": rows,
                    "config": self.config}, buffer)
        path = self.folder / "checkpoints" / f"round-{server_round:04d}.pt"
        atomic_write(path, buffer.getvalue())
        return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file, or the latest one of a run folder, with a clear error if absent."""
    path = Path(path)
    if path.is_dir():
        found = sorted((path / "checkpoints").glob("round-*.pt")) or sorted(path.glob("round-*.pt"))
        if not found:
            raise ValueError(f"no checkpoints in {str(path)!r}")
        path = found[-1]
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {str(path)!r} is unreadable ({exc})") from exc
    if not {"round", "lora", "metrics"} <= set(checkpoint):
        raise ValueError(f"checkpoint {str(path)!r} lacks round, lora or metrics")
    return checkpoint
