#!/usr/bin/env python3
"""Time two commands in turn (A B A B ...) and print the median of A/B pair by pair.

Usage: paired.py RUNS 'COMMAND A' 'COMMAND B'   (each run through `sh -c`, output discarded)
"""
import statistics
import subprocess
import sys
import time


def once(cmd: str) -> float:
    start = time.perf_counter()
    subprocess.run(["sh", "-c", cmd], stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    runs, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    once(a), once(b)  # warm the page cache
    ta, tb = [], []
    for _ in range(runs):
        ta.append(once(a))
        tb.append(once(b))
    ratios = [x / y for x, y in zip(ta, tb)]
    print(f"A: {a}\n   median {statistics.median(ta) * 1000:.1f} ms")
    print(f"B: {b}\n   median {statistics.median(tb) * 1000:.1f} ms")
    print(f"A/B median ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
