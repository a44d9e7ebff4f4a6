"""Wall time of `voicebot --help`: median of several runs in fresh processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from common import Figure, bench_main, median


def measure(runs: int) -> list[float]:
    exe = shutil.which("voicebot")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "realtime_voicebot", "--help"]
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def figures(quick: bool) -> list[Figure]:
    times = measure(5 if quick else 15)
    return [
        Figure(
            "`voicebot --help` wall time (median)",
            f"{median(times):.3f} s",
            target="< 0.300 s",
            note=f"{len(times)} runs, min {min(times):.3f} s, max {max(times):.3f} s",
        )
    ]


def main() -> None:
    bench_main("CLI start-up", figures, __doc__)


if __name__ == "__main__":
    main()
