"""A run folder's own figures, drawn from its metrics as the run goes (when: `strategies.outputs`).

- `training.png`: training loss and perplexities (federated validation, server held-out) per
  round;
- `clients.png`: each client's split point, uplink bandwidth and bytes on the wire per round;
- `time.png`: each client's time on the data plane per round, modelled (the cost model's
  device + transfer + server + queue seconds of the plan, times the local steps) against
  measured (its device compute plus its wait on the stream), for the slowest client of each
  round and for every client; where the data plane is not measured apart (the Flower-message
  transport), the measured side is the client's round from its train message to its reply,
  which also holds Flower's control plane, and the figure says so.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, so no global backend is set in
the process hosting the ServerApp) and written atomically: a reader sees the old figure or the
new one.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Row = Mapping[str, Any]


def _series(rows: Sequence[Row], key: str) -> tuple[list[int], list[float]]:
    """(rounds, values) of the rows that have a value for ``key``."""
    kept = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
    return [k for k, _ in kept], [v for _, v in kept]


def _client_series(rows: Sequence[Row], value: Callable[[Row], float | None]
                   ) -> dict[int, tuple[list[int], list[float]]]:
    """Per node: (rounds, values) over the rounds it was allocated in."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    for r in rows:
        for client in r.get("clients", []):
            v = value(client)
            if v is not None:
                rounds, values = out.setdefault(client["node"], ([], []))
                rounds.append(r["round"])
                values.append(v)
    return out


def _node_label(node: int) -> str:
    # Deployment node ids are 64-bit: their last digits tell clients apart in a legend.
    return f"node {node}" if node < 10_000 else f"node ...{node % 10_000:04d}"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _figure(panels: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(3.6 * panels, 2.8), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, list(axes)


def _log_lines(ax, rows: Sequence[Row], lines: Sequence[tuple[str, str]], ylabel: str) -> None:
    """One line per (metric key, label) that has values, on a log y axis with a legend."""
    for key, label in lines:
        rounds, values = _series(rows, key)
        if rounds:
            ax.plot(rounds, values, marker="o", label=label)
    ax.set_ylabel(ylabel)
    if ax.lines:
        ax.set_yscale("log")
        ax.legend()


def training_figure(rows: Sequence[Row]) -> Figure:
    """Training loss, and validation and held-out perplexity, per round."""
    fig, (loss, ppl) = _figure(2)
    loss.plot(*_series(rows, "train_loss"), marker="o")
    loss.set_ylabel("training loss")
    _log_lines(ppl, rows, [("val_ppl", "federated validation"), ("heldout_ppl", "server held-out"),
                           ("val_ppl_clean", "validation, clean channel")], "perplexity")
    return fig


def clients_figure(rows: Sequence[Row]) -> Figure:
    """Each client's split point, bandwidth (MHz) and bytes sent both ways (MB) per round."""
    fig, axes = _figure(3)
    panels = [("split point (layers on the device)", lambda c: c.get("split")),
              ("bandwidth (MHz)", lambda c: c.get("bandwidth_hz") and c["bandwidth_hz"] / 1e6),
              ("bytes up + down (MB)", lambda c: None if c.get("bytes_up") is None
               else (c["bytes_up"] + c.get("bytes_down", 0)) / 1e6)]
    # One colour per client across the panels (some, like bandwidth, show only some clients).
    nodes = sorted(_client_series(rows, lambda c: c.get("split")))
    for ax, (label, value) in zip(axes, panels, strict=True):
        for node, (rounds, values) in sorted(_client_series(rows, value).items()):
            color = f"C{nodes.index(node) % 10}" if node in nodes else None
            ax.plot(rounds, values, marker="o", label=_node_label(node), color=color)
        ax.set_ylabel(label)
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0].get_legend_handles_labels()
    if 0 < len(labels) <= 12:  # more would hide the data
        fig.legend(handles, labels, loc="outside right upper")
    return fig


def _measured_key(rows: Sequence[Row]) -> tuple[str, str]:
    """The measured side of a client's modelled time: its data plane where measured apart."""
    if any(c.get("measured_dataplane_s") is not None for r in rows for c in r.get("clients", [])):
        return "measured_dataplane_s", "data plane"
    return "measured_s", "round, train message to reply (with Flower's control plane)"


def time_figure(rows: Sequence[Row]) -> Figure:
    """A client's round on the data plane, modelled and measured: per round the slowest
    client's of each (left), and every client-round with the line of equality (right)."""
    fig, (slowest, each) = _figure(2)
    key, what = _measured_key(rows)
    pairs = [(r["round"], c["modelled_s"], c[key]) for r in rows for c in r.get("clients", [])
             if c.get("modelled_s") is not None and c.get(key) is not None]
    rounds = sorted({p[0] for p in pairs})
    for index, label in ((1, "modelled"), (2, "measured")):
        slowest.plot(rounds, [max(p[index] for p in pairs if p[0] == k) for k in rounds],
                     marker="o", label=label)
    slowest.set_ylabel(f"slowest client's {what.split(',')[0]} (s)")
    for k in rounds:
        each.scatter([p[2] for p in pairs if p[0] == k], [p[1] for p in pairs if p[0] == k],
                     s=12, label=f"round {k}")
    if pairs:
        top = max(max(p[1], p[2]) for p in pairs)
        each.plot([0, top], [0, top], "k:", linewidth=1, label="modelled = measured")
        slowest.legend()
        each.legend(fontsize="small")
    each.set_xlabel(f"measured client {what} (s)")
    each.set_ylabel("modelled (s)")
    fig.suptitle("a client's time in the round: cost model against the clock", fontsize="medium")
    return fig


FIGURES = {"training.png": training_figure, "clients.png": clients_figure,
           "time.png": time_figure}


def draw_all(rows: Sequence[Row]) -> dict[str, bytes]:
    """Every figure of `FIGURES`, drawn from the metrics rows, as PNG bytes by file name."""
    return {name: _png(draw(rows)) for name, draw in FIGURES.items()}
