"""``python -m bench [--smoke] [--only NAME ...]``: run the benchmarks, print their tables, write JSON.

Exit status: 0 when every target is met, 1 when one is missed (full runs only: a smoke run's tiny
N proves the benchmarks run, its ratios mean nothing), 2 when a benchmark fails to run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    fleet_affinity,
    image_persistence,
    job_listing,
    memory,
    rerun_reuse,
    startup,
    submit_throughput,
    worker_overhead,
)
from bench.harness import BenchResult, commit, machine, write_json

BENCHMARKS: dict[str, Callable[[bool], BenchResult]] = {
    worker_overhead.NAME: worker_overhead.run,
    submit_throughput.NAME: submit_throughput.run,
    image_persistence.NAME: image_persistence.run,
    memory.NAME: memory.run,
    startup.NAME: startup.run,
    job_listing.NAME: job_listing.run,
    rerun_reuse.NAME: rerun_reuse.run,
    fleet_affinity.NAME: fleet_affinity.run,
}


def _load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny N: prove every benchmark runs (CI)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    info = machine()
    print(
        f"stablenew benchmarks{' (smoke)' if args.smoke else ''}: commit {(commit() or '?')[:12]}, "
        f"{info['nproc']} cores {info['cpu']}, {info['ram_gib']} GiB, Python {info['python']}, "
        f"load {_load()}",
        flush=True,
    )
    started = time.perf_counter()
    results: list[BenchResult] = []
    failed: list[str] = []
    for name in names:
        load_before = _load()
        try:
            result = BENCHMARKS[name](args.smoke)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            print(f"== {name}: FAILED TO RUN", flush=True)
            continue
        result.params["load"] = f"{load_before} -> {_load()}"
        results.append(result)
        path = write_json(result, smoke=args.smoke)
        print(result.render(), f"  raw numbers: {os.path.relpath(path)}", sep="\n", end="\n\n", flush=True)
    missed = [t.label for r in results for t in r.targets if not t.met]
    print(f"{len(results)} benchmark(s) in {time.perf_counter() - started:.0f} s", end="")
    if failed:
        print(f"; failed to run: {', '.join(failed)}")
        return 2
    if missed and not args.smoke:
        print(f"; {len(missed)} target(s) missed: " + "; ".join(missed))
        return 1
    if missed:
        print(f"; smoke run: {len(missed)} target(s) not met at tiny N (not enforced)")
        return 0
    print("; every target met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
