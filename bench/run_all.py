"""Run every benchmark and print one markdown table; `--update-readme` writes it into README.md.

Each module of `BENCHES` that exists in bench/ and has `figures(quick)` runs in turn, in this
process (`--quick` passes through). A missing module, a rig benchmark without the PulseAudio
rig (vmic/vspk), or a benchmark that fails becomes a row saying so, and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common import Figure, machine
from rig import rig_problem

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR.parent / "README.md"
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"

BENCHES = [
    "cli_help",
    "barge_in",
    "echo_matrix",
    "cpu",
    "loop_lag",
    "two_hour",
    "memory",
    "turn_taking",
    "concurrent_sessions",
    "soak",
    "summary_facts",
    "fuzz",
]
RIG_BENCHES = frozenset({"barge_in", "cpu", "echo_matrix"})
"""Benchmarks that play into / record the PulseAudio rig (`scripts/audio-rig.sh start`)."""


MARKER = "figures-json: "
CHILD = """
import dataclasses, json, sys
sys.path.insert(0, sys.argv[1])
import {name} as module
figures = module.figures(sys.argv[2] == "quick")
print({marker!r} + json.dumps([dataclasses.asdict(f) for f in figures]), flush=True)
"""


def run_bench(name: str, quick: bool) -> tuple[list[Figure], float]:
    """The figures of one benchmark (or one row saying why there are none), and its time.

    Each benchmark runs in a fresh interpreter, so one's memory, threads and event loop do
    not colour the next one's figures (memory growth above all).
    """
    started = time.monotonic()
    if not (BENCH_DIR / f"{name}.py").exists():
        return [Figure(f"`{name}`", "not run", note=f"bench/{name}.py does not exist yet")], 0.0
    if name in RIG_BENCHES and (problem := rig_problem()) is not None:
        return [Figure(f"`{name}`", "not run", note=f"needs the audio rig: {problem}")], 0.0
    code = CHILD.format(name=name, marker=MARKER)
    mode = "quick" if quick else "full"
    child = subprocess.run(
        [sys.executable, "-c", code, str(BENCH_DIR), mode],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    rows = [line for line in child.stdout.splitlines() if line.startswith(MARKER)]
    if child.returncode != 0 or not rows:
        figures = [Figure(f"`{name}`", "failed", note=f"exit code {child.returncode}")]
    else:
        figures = [Figure(**row) for row in json.loads(rows[-1][len(MARKER) :])]
    return figures, time.monotonic() - started


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(figures: Sequence[Figure]) -> str:
    lines = ["| figure | project | baseline | target | note |", "| --- | --- | --- | --- | --- |"]
    for f in figures:
        cells = (f.name, f.project, f.baseline, f.target, f.note)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def heading(quick: bool, only: Sequence[str] | None = None) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/run_all.py" + (" --quick" if quick else "")
    if only:
        command += " --only " + " ".join(only)
    return f"Measured {now} on {machine()} with `{command}`."


def update_readme(block: str, readme: Path = README) -> None:
    """Replace what is between the bench-table markers with `block`."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def merge_rows(block: str, figures: Sequence[Figure], only: Sequence[str], quick: bool) -> str:
    """The README's table with the rows of `figures` (one run of the `only` benchmarks) in
    place of the rows of the same names, new ones at the end; the heading says when they
    were measured. The other rows keep their figures and date."""
    lines = block.strip("\n").splitlines()
    new_rows = markdown_table(figures).splitlines()[2:]
    names = {row.split(" | ", 1)[0] for row in new_rows}
    kept: list[str] = []
    placed = False
    for line in lines:
        if line.startswith("| ") and line.split(" | ", 1)[0] in names:
            if not placed:
                kept.extend(new_rows)
                placed = True
            continue
        kept.append(line)
    if not placed:
        kept.extend(new_rows)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/run_all.py" + (" --quick" if quick else "")
    command += " --only " + " ".join(only)
    clause = f"; the {', '.join(only)} rows "
    head = kept[0].rstrip(".")
    if clause in head:  # measured again: the new date replaces the old one
        before, _, after = head.partition(clause)
        rest = after.split("`", 2)  # "<date> with ", the command, what follows it
        head = before + (rest[2] if len(rest) == 3 else "")
    kept[0] = head + f"{clause}{now} with `{command}`."
    return "\n".join(kept)


def readme_block(readme: Path = README) -> str:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} / {END} markers")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI, smoke)")
    parser.add_argument(
        "--update-readme", action="store_true", help="write the table into README.md"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=BENCHES, help="run only these benchmarks"
    )
    args = parser.parse_args()
    figures: list[Figure] = []
    for name in args.only or BENCHES:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows, seconds = run_bench(name, args.quick)
        figures.extend(rows)
        print(f"  {name}: {len(rows)} figure(s) in {seconds:.1f} s", file=sys.stderr, flush=True)
    block = f"{heading(args.quick, args.only)}\n\n{markdown_table(figures)}"
    print(block)
    if args.update_readme and args.only:  # a part of the run: its rows replace theirs
        update_readme(merge_rows(readme_block(), figures, args.only, args.quick))
    elif args.update_readme:
        update_readme(block)
        print(f"\nwrote the table into {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
