"""Benchmark: activation compression on the stream, bytes per step and the effect on the loss.

Trains the default job (smollm2-135m on Shakespeare, 8 clients, 3 rounds of 4 local steps, batch
4 x 32 tokens, the `fp` allocator) once per wire format of the stream data plane: float32,
float16, bfloat16 and int8 (absmax per token, `edgesplit.framing.quantise`), in one process over
the in-process grid with concurrent clients, every mode with the same seeds. Per mode it reports

- bytes per step measured on the wire (`TrainOutcome.bytes_up` / `bytes_down`): the data plane's
  frames alone (the round's head adapters, sent once per round in fp32 Flower records whatever
  the mode, taken out), and everything a client sent and received per step;
- the final round's training loss (the server's tail on the activations as received) and the
  held-out perplexity of the final global adapter (unsplit, never quantised), both relative to
  float32;
- the bits per value the allocator's system model charged, and the splits it chose (they may
  move with the bits, which is the point of charging them; oracle 2 makes the fp32 loss
  independent of the splits).

Writes ``OUT/summary.csv``, ``OUT/rounds.csv`` and ``OUT/bench_compression.png``.

    python -m experiments.bench_compression [--quick] [--modes float32 int8] [--out DIR]

The full run takes minutes per mode on 2 CPU cores; ``--quick`` trains tiny-llama on the
synthetic corpus for a fast check of the pipeline (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

from experiments.plotting import write_csv

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from edgesplit.framing import WIRE_DTYPES  # noqa: E402
from edgesplit.records import to_record  # noqa: E402
from edgesplit.settings import Settings  # noqa: E402
from fl_app.client_app import app as client_app  # noqa: E402
from fl_app.run_config import parse  # noqa: E402
from fl_app.server_app import build_strategy  # noqa: E402
from harness.inprocess import InProcessGrid  # noqa: E402
from strategies.transport import TailStep, TrainJob, TrainOutcome, Transport  # noqa: E402

NUM_CLIENTS = 8  # the default federation's num-supernodes
QUICK = {"model.name": "tiny-llama", "data.corpus": "synthetic", "train.rounds": 2,
         "allocation.fixed-split": 3}


class CountingTransport:
    """A transport that records, per client and round, the data plane's bytes (the head
    adapters that travel in Flower records taken out) and the steps they paid for."""

    def __init__(self, inner: Transport) -> None:
        self.inner, self.rows = inner, []

    def train_round(self, jobs: list[TrainJob], tail_step: TailStep) -> dict[int, TrainOutcome]:
        outcomes = self.inner.train_round(jobs, tail_step)
        for job in jobs:
            out = outcomes[job.node_id]
            if out.failure is None:
                self.rows.append({
                    "round": job.task.server_round, "steps": out.steps_done,
                    "frames_up": out.bytes_up - to_record(out.head_lora).count_bytes(),
                    "frames_down": out.bytes_down - to_record(job.head_lora).count_bytes(),
                    "wire_up": out.bytes_up, "wire_down": out.bytes_down})
        return outcomes


def train(mode: str, overrides: dict, folder: Path) -> tuple[list[dict], dict]:
    """One training run with `stream.dtype = mode`: its metrics rows and its summary row."""
    config = {**Settings().as_dict(), **overrides, "stream.transport": "stream",
              "stream.dtype": mode,
              "run.output-dir": str(folder), "run.name": mode}
    settings = parse(config)
    grid = InProcessGrid(client_app, config, NUM_CLIENTS, concurrent=True)
    strategy = build_strategy(settings, grid)
    counter = CountingTransport(strategy.transport)
    strategy.transport = counter
    started = time.perf_counter()
    strategy.run(grid)
    wall_s = time.perf_counter() - started
    rows = strategy.recorder.rows
    steps = sum(r["steps"] for r in counter.rows)
    per_step = {k: sum(r[k] for r in counter.rows) / steps
                for k in ("frames_up", "frames_down", "wire_up", "wire_down")}
    last = rows[-1]
    return rows, {
        "mode": mode, "model": settings.model_name, "client_steps": steps,
        "modelled_bits_per_value": strategy.costs.activation_bits,
        "frame_bytes_up_per_step": per_step["frames_up"],
        "frame_bytes_down_per_step": per_step["frames_down"],
        "frame_bytes_per_step": per_step["frames_up"] + per_step["frames_down"],
        "wire_bytes_per_step": per_step["wire_up"] + per_step["wire_down"],
        "final_train_loss": float(last["train_loss"]),
        "final_heldout_ppl": float(last["heldout_ppl"]),
        "final_val_ppl": float(last["val_ppl"]),
        "splits": " / ".join(str(sorted(c["split"] for c in r["clients"])) for r in rows),
        "wall_s": wall_s}


def relative_to_fp32(summary: list[dict]) -> None:
    """Add each mode's ratios to float32's (bytes) and relative changes in % (loss, ppl)."""
    base = next(r for r in summary if r["mode"] == "float32")
    for r in summary:
        r["frame_bytes_ratio"] = base["frame_bytes_per_step"] / r["frame_bytes_per_step"]
        r["wire_bytes_ratio"] = base["wire_bytes_per_step"] / r["wire_bytes_per_step"]
        for key in ("final_train_loss", "final_heldout_ppl", "final_val_ppl"):
            r[f"{key}_change_pct"] = 100 * (r[key] / base[key] - 1)


def plot(summary: list[dict], rounds: list[dict], path: Path) -> None:
    modes = [r["mode"] for r in summary]
    fig, (ax_bytes, ax_loss, ax_ppl) = plt.subplots(1, 3, figsize=(11, 3.4))
    ax_bytes.bar(modes, [r["frame_bytes_per_step"] / 1024 for r in summary])
    for i, r in enumerate(summary):
        ax_bytes.annotate(f"{r['frame_bytes_ratio']:.2f}x", (i, r["frame_bytes_per_step"] / 1024),
                          ha="center", va="bottom")
    ax_bytes.set(title="data-plane bytes per step (up + down)", ylabel="KiB")
    ax_bytes.margins(y=0.15)
    for mode in modes:
        mine = [r for r in rounds if r["mode"] == mode]
        ax_loss.plot([r["round"] for r in mine], [r["train_loss"] for r in mine], marker="o",
                     label=mode)
    ax_loss.set(title="training loss per round", xlabel="round", ylabel="loss",
                xticks=sorted({r["round"] for r in rounds}))
    ax_loss.legend()
    ax_ppl.bar(modes, [r["final_heldout_ppl_change_pct"] for r in summary], label="held-out ppl")
    ax_ppl.plot(modes, [r["final_train_loss_change_pct"] for r in summary], "ko",
                label="train loss")
    ax_ppl.axhline(0, color="grey", linewidth=0.8)
    ax_ppl.set(title="final round vs float32", ylabel="change (%)")
    ax_ppl.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=list(WIRE_DTYPES), choices=list(WIRE_DTYPES))
    parser.add_argument("--quick", action="store_true", help="tiny-llama, synthetic, 2 rounds")
    parser.add_argument("--out", type=Path, default=Path("results/bench_compression"))
    args = parser.parse_args(argv)
    modes = ["float32", *(m for m in args.modes if m != "float32")]  # the reference first
    torch.set_num_threads(1)  # as the ClientApp does, for every mode alike
    overrides = QUICK if args.quick else {}
    summary, rounds = [], []
    with tempfile.TemporaryDirectory() as runs:  # checkpoints and adapters are not kept
        for mode in modes:
            print(f"{mode}: training ...", flush=True)
            rows, row = train(mode, overrides, Path(runs))
            summary.append(row)
            rounds += [{"mode": mode, "round": r["round"], "train_loss": r["train_loss"],
                        "heldout_ppl": r["heldout_ppl"], "val_ppl": r["val_ppl"],
                        "bytes_up": r["bytes_up"], "bytes_down": r["bytes_down"]} for r in rows]
            print(f"{mode}: loss {row['final_train_loss']:.4f}, held-out ppl "
                  f"{row['final_heldout_ppl']:.3f}, {row['frame_bytes_per_step']:.0f} frame "
                  f"bytes/step, {row['wall_s']:.0f} s", flush=True)
    relative_to_fp32(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, table in (("summary.csv", summary), ("rounds.csv", rounds)):
        write_csv(table, args.out / name)
    plot(summary, rounds, args.out / "bench_compression.png")
    print(f"wrote {args.out}/summary.csv, rounds.csv, bench_compression.png")
    print(f"{'mode':>9} {'bits':>6} {'frame B/step':>12} {'ratio':>6} {'wire B/step':>11} "
          f"{'ratio':>6} {'loss':>7} {'d loss %':>8} {'ho ppl':>8} {'d ppl %':>8}")
    for r in summary:
        print(f"{r['mode']:>9} {r['modelled_bits_per_value']:>6.2f} "
              f"{r['frame_bytes_per_step']:>12.0f} {r['frame_bytes_ratio']:>6.2f} "
              f"{r['wire_bytes_per_step']:>11.0f} {r['wire_bytes_ratio']:>6.2f} "
              f"{r['final_train_loss']:>7.4f} {r['final_train_loss_change_pct']:>+8.3f} "
              f"{r['final_heldout_ppl']:>8.3f} {r['final_heldout_ppl_change_pct']:>+8.3f}")
    return summary


if __name__ == "__main__":
    main()
