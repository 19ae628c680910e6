"""Run the benchmark suite: ``python benchmarks/run.py [--quick] [names...]``.

Each ``bench_<name>.py`` module defines ``run(quick: bool) -> list[Result]``. ``--quick`` runs every
benchmark on tiny data, as a smoke check inside ``make test`` so that the suite cannot rot; its
ratios mean nothing. Without it, the figures are those recorded in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny data, smoke check only")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. open crop")
    args = parser.parse_args(argv)
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.names:
        modules = [m for m in modules if m.removeprefix("bench_") in args.names]
    print(
        f"# machine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
        + (" (quick mode: ratios are not meaningful)" if args.quick else ""),
        flush=True,
    )
    for name in modules:
        module = importlib.import_module(name)
        t0 = time.perf_counter()
        for result in module.run(quick=args.quick):
            print(result.line(), flush=True)
        print(f"#   {name} took {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
