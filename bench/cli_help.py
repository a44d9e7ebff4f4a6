"""Wall time of `voicebot --help`: median of several runs in fresh processes."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    times = measure(args.runs)
    median = statistics.median(times)
    print(
        f"voicebot --help wall time: median {median:.3f} s, min {min(times):.3f} s, "
        f"max {max(times):.3f} s over {len(times)} runs (target < 0.300 s)"
    )


if __name__ == "__main__":
    main()
