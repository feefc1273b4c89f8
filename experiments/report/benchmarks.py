"""The benchmark table, and the split step on a GPU."""

from __future__ import annotations

import re
from pathlib import Path

from .stats import column, fmt_ci, median, rows, table


def split_step(results: Path) -> list[str]:
    summary = {r["variant"]: r for r in rows(results / "bench_split_step.csv")}
    r = summary["split"]
    steps_file = results / "bench_split_step_steps.csv"
    if steps_file.exists():  # every timed step: a paired ratio per step, with its interval
        steps = rows(steps_file)
        unsplit = column(steps, "seconds", variant="unsplit")
        ratio = {v: fmt_ci([s / u for s, u in zip(column(steps, "seconds", variant=v), unsplit,
                                                  strict=True)], 3, "x")
                 for v in ("split", "split_recompute")}
    else:
        ratio = {v: f"{float(summary[v]['ratio_to_unsplit']):.3f}x (single run, medians of "
                    f"{summary[v]['steps']} steps)" for v in ("split", "split_recompute")}
    if "max_adapter_diff_vs_unsplit" in r:
        diff = float(r["max_adapter_diff_vs_unsplit"])
        adapters = (f"; adapters after {r['trained_steps']} steps "
                    + ("identical" if diff == 0 else f"differ by {diff:.1e}"))
    else:
        adapters = "; the adapters' equality is not in this file (the current script records it)"
    return [f"split vs unsplit LoRA step, {r['model']}, batch {r['batch']} x {r['tokens']}, "
            f"split {r['split']} (`bench_split_step`)",
            f"split / unsplit, interleaved: {ratio['split']} (medians "
            f"{1000 * float(summary['split']['median_s']):.0f} vs "
            f"{1000 * float(summary['unsplit']['median_s']):.0f} ms); with the device "
            f"recomputing its forward as the message path does {ratio['split_recompute']}"
            + adapters, "<= 1.15x"]


def transport(results: Path) -> list[str]:
    steps = rows(results / "bench_transport_steps.csv")
    repeats = sorted({r["repeat"] for r in steps})

    def overhead(variant: str) -> list[float]:
        return [1000 * (median(column(steps, "interval_s", variant=variant, repeat=k))
                        - median(column(steps, "interval_s", variant="inprocess", repeat=k)))
                for k in repeats]

    base = median(column(steps, "interval_s", variant="inprocess"))
    return ["per-step overhead over the in-process step, tiny-llama (`bench_transport`)",
            f"per repeat, median step less the in-process one's ({len(repeats)} repeats of "
            f"{len(column(steps, 'interval_s', variant='inprocess', repeat=repeats[0]))} steps; "
            f"in-process {1000 * base:.1f} ms): stream {fmt_ci(overhead('stream'), 1, ' ms')}, "
            f"stream fp16 {fmt_ci(overhead('stream-fp16'), 1, ' ms')}, Flower messages "
            f"in-process {fmt_ci(overhead('flower'), 1, ' ms')}", "<= 5 ms (stream)"]


def deployment(results: Path) -> list[str]:
    summary = {r["transport"]: r for r in rows(results / "bench_transport_deployment_summary.csv")}
    stream, flower = summary["stream"], summary["flower"]
    ratio = float(flower["deployment_s_per_step"]) / float(stream["deployment_s_per_step"])
    return ["per-step cost in deployment, SuperLink + SuperNode on loopback "
            "(`bench_transport_deployment`)",
            f"stream {float(stream['deployment_s_per_step']):.3f} s per step (slope between "
            f"rounds of {stream['steps'].replace('->', ' and ')} steps), Flower messages "
            f"{float(flower['deployment_s_per_step']):.2f} s per step (rounds of "
            f"{flower['steps'].replace('->', ' and ')} steps): {ratio:.0f}x; tiny-llama, one "
            "SuperNode; one run of each round length (single run)", ""]


def tails(results: Path) -> list[str]:
    data = rows(results / "bench_tails" / "bench_tails.csv")
    models = list(dict.fromkeys(r["model"] for r in data))
    parts = []
    for m in models:
        group = [r for r in data if r["model"] == m]
        parts.append(f"{m} " + " / ".join(f"{float(r['ratio']):.2f}x" for r in group)
                     + f" at {' / '.join(r['clients'] for r in group)} clients (medians of "
                     + "/".join(r["repeats"] for r in group) + " steps)")
    identical = all(float(r["max_adapter_diff"]) == 0 for r in data)
    return ["batched vs sequential server tails (`bench_tails`)",
            "batched / sequential: " + "; ".join(parts)
            + ("; adapters identical" if identical else "; adapters differ"),
            "faster from 4 clients"]


def compression(results: Path) -> list[str]:
    int8 = next(r for r in rows(results / "bench_compression" / "summary.csv")
                if r["mode"] == "int8")
    f32 = next(r for r in rows(results / "bench_compression" / "summary.csv")
               if r["mode"] == "float32")
    return ["activation compression, default job (`bench_compression`)",
            f"int8 (one fp32 scale per token): {float(int8['frame_bytes_ratio']):.2f}x fewer "
            f"stream bytes per step ({float(f32['frame_bytes_per_step']) / 1e3:.0f} -> "
            f"{float(int8['frame_bytes_per_step']) / 1e3:.0f} kB; "
            f"{float(int8['wire_bytes_ratio']):.2f}x counting the fp32 adapters), final train "
            f"loss {float(int8['final_train_loss_change_pct']):+.2f}%, held-out ppl "
            f"{float(int8['final_heldout_ppl_change_pct']):+.2f}% (single run each)",
            "~4x bytes, loss within 1%"]


def scale(results: Path) -> list[str]:
    after = rows(results / "bench_scale" / "bench_scale_after.csv")
    big = [r for r in after if r["registered"] == "1000"]
    return ["server memory vs registered clients, 10 and 20 sampled (`bench_scale`)",
            "SmolLM2, 1000 vs 100 registered, Ray simulation: server peak RSS "
            + " and ".join(f"{float(r['server_peak_rss_mb_vs_fewest']):.3f}x ({r['sampled']} per "
                           "round)" for r in big)
            + "; client-actor peak RSS "
            + " and ".join(f"{float(r['actor_peak_rss_mb_vs_fewest']):.3f}x" for r in big)
            + " (single run each; round time below)", "1000 within 5% of 100"]


def bad_inputs(results: Path) -> list[str]:
    data = rows(results / "bad_inputs.csv")
    planes = {p: sum(r["plane"] == p for r in data) for p in dict.fromkeys(r["plane"]
                                                                            for r in data)}
    header = (results / "bad_inputs.md").read_text().splitlines()[0]
    tried, handled, crashed = map(int, re.findall(
        r"(\d+) kinds tried, (\d+) handled, (\d+) crashes", header)[0])
    if tried != len(data):
        raise ValueError(f"bad_inputs.md counts {tried} kinds, bad_inputs.csv {len(data)}")
    return ["malformed payloads and configurations (`bad_inputs`)",
            f"{len(data)} kinds ("
            + ", ".join(f"{n} {p}" for p, n in planes.items())
            + f"), {handled} handled with their reason, {crashed} crashes: "
            "[results/bad_inputs.md](../results/bad_inputs.md)", ">= 20 kinds, 0 crashes"]


def gpu(results: Path) -> str:
    body = []
    for name, title in (("bench_gpu_smollm2.csv", "SmolLM2-135M shape, 30 layers"),
                        ("bench_gpu_1b.csv", "Llama shape, hidden 2048, 16 layers")):
        data = rows(results / "gpu" / name)
        for i, batch in enumerate(dict.fromkeys(r["batch"] for r in data)):
            pair = {r["variant"]: r for r in data if r["batch"] == batch}
            split = pair["split"]
            gap = float(split["adapter_gap"])
            body.append([f"{title} (split {split['split']})" if i == 0 else "", batch,
                         f"{float(pair['unsplit']['tokens_per_s']):,.0f}",
                         f"{float(split['tokens_per_s']):,.0f}",
                         f"{float(split['ratio_to_unsplit']):.3f}",
                         "NaN in both" if gap != gap else
                         ("identical" if gap == 0 else f"{gap:.1e}")])
    versions = (results / "gpu" / "versions.txt").read_text().splitlines()[0]
    steps = rows(results / "gpu" / "bench_gpu_1b.csv")[0]["steps"]
    ratios = [float(r["ratio_to_unsplit"]) for name in ("bench_gpu_smollm2.csv",
                                                         "bench_gpu_1b.csv")
              for r in rows(results / "gpu" / name) if r["variant"] == "split"]
    return f"""### On a GPU: the split step costs what the unsplit step costs

One NVIDIA H200 ({versions}: the machine's own packages), bfloat16 base, float32 LoRA and AdamW,
128 tokens per row, warm-up and {steps} timed steps per variant interleaved in one process, a
CUDA synchronise closing every step (`python -m experiments.bench_gpu --random-weights --model
<folder with SmolLM2's config and tokenizer> --corpus synthetic [--config ...]`; the weights are
random because the GPU machine has no copy of them, which does not change the time of a step).
Files: `results/gpu/`. Medians of one run per row.

{table(["model (split)", "batch", "unsplit tok/s", "split tok/s", "split / unsplit time",
        "adapters after the timed steps"], body)}
The split step (head, detached activations, tail forward and backward, head backward from the
activations' gradient) runs within {min(ratios):.2f}-{max(ratios):.2f}x of transformers' own step
on the GPU (single runs), and with the same bfloat16 base it trains the same adapters on the
larger shape. With SmolLM2's config and *random* bfloat16 weights both variants' gradients turn
NaN alike after a few steps, so that model's adapter comparison says nothing; its times stand.
The small model's step is bound by kernel launches and Python: on a GPU server the tails of many
small clients should be batched (`compute.batch-tails`), which this benchmark does not measure. Not
measured on the GPU: a Flower run with `compute.server-device = "cuda"`.
"""


def render(results: Path) -> str:
    table_rows = [split_step(results), transport(results), deployment(results), tails(results),
                  compression(results), scale(results), bad_inputs(results)]
    return f"""### Benchmarks

Each ratio is measured side by side in one invocation; "±" is a 95% interval over the repeats
named, and a figure without one is a single run.

{table(["benchmark (command)", "measured", "goal"], table_rows)}
![tails](../results/bench_tails/bench_tails.png)
![compression](../results/bench_compression/bench_compression.png)

{gpu(results)}"""
