"""What the report's sections need to read numbers from results/: CSV rows, means with 95%
intervals, and consistent number formats."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from edgesplit.settings import new_keys


def rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts of strings (FileNotFoundError names the missing file)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def run_config(folder: Path) -> dict[str, Any]:
    """A run folder's `config.json` under the current run-config keys (runs made before the
    keys moved into sections wrote the old flat names)."""
    config, _ = new_keys(load_json(Path(folder) / "config.json"))
    return config


def column(table: Iterable[dict[str, str]], name: str, **where: str) -> list[float]:
    """The float values of column `name` in the rows matching every `where` (as strings)."""
    return [float(r[name]) for r in table
            if all(r.get(k) == str(v) for k, v in where.items()) and r[name] != ""]


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (nan for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def fmt_ci(values: Sequence[float], digits: int = 1, unit: str = "") -> str:
    """`mean ± half-width unit (n=k)`, or `value unit (single run)` for one value."""
    mean, half = mean_ci(values)
    if math.isnan(half):
        return f"{mean:.{digits}f}{unit} (single run)"
    return f"{mean:.{digits}f} ± {half:.{digits}f}{unit} (n={len(values)})"


def table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def num(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits, exponents written short (``1.18e4``)."""
    text = f"{x:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def pct(x: float, digits: int = 0, sign: bool = False) -> str:
    """A fraction as a percentage (``0.123`` -> ``12%``; with ``sign``: ``+12%``)."""
    value = round(100 * x, digits) + 0.0  # + 0.0: no "-0%"
    return f"{value:{'+' if sign else ''}.{digits}f}%"


def mean(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("no values")
    return sum(values) / len(values)


def spread(values: Iterable[float], fmt=num) -> str:
    """``lo-hi`` of the values, or the one value when they are all equal once formatted."""
    values = list(values)
    lo, hi = fmt(min(values)), fmt(max(values))
    if lo == hi:
        return lo
    return f"{lo} to {hi}" if lo.startswith("-") or hi.startswith("-") else f"{lo}-{hi}"


def median(values: Iterable[float]) -> float:
    values = sorted(values)
    if not values:
        raise ValueError("no values")
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def fixed(digits: int):
    """A formatter with ``digits`` decimals, for ``spread``."""
    return lambda x: f"{x:.{digits}f}"
