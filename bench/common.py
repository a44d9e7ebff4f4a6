"""What every benchmark returns, and how figures are printed.

Each bench module exposes ``figures(quick: bool) -> list[Figure]`` and a ``main()`` that parses
``--quick`` and prints them with `print_figures`. ``bench/run_all.py`` collects them into one
table (and, with ``--update-readme``, writes it into README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure, project vs baseline side by side when both apply."""

    name: str
    project: str
    baseline: str = "-"
    target: str = "-"
    note: str = ""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def machine() -> str:
    """A one-line description of where the figures were measured."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def print_figures(title: str, figures: Sequence[Figure]) -> None:
    print(f"## {title}")
    for f in figures:
        side = f" | baseline {f.baseline}" if f.baseline != "-" else ""
        target = f" | target {f.target}" if f.target != "-" else ""
        note = f" ({f.note})" if f.note else ""
        print(f"{f.name}: project {f.project}{side}{target}{note}")


def bench_main(title: str, figures: Callable[[bool], list[Figure]], doc: str | None) -> None:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI, smoke)")
    args = parser.parse_args()
    print_figures(title, figures(args.quick))
