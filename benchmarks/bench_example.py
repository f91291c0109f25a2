"""Wall time of the example study's whole run, as a data manager runs it after a spec edit:
``cdisc-convert run mappings/nct05948982 --out OUT`` in a fresh process (interpreter start and
imports included), several times, with the best and the median.

Wall time depends on what else the machine is doing, so the script also times a fixed CPU-bound
loop on two cores at once before each run (``idle gauge``: about 0.3 s on the idle 2-core
reference machine); a gauge well above that means the figures are not an idle machine's.

    python3 benchmarks/bench_example.py [--runs 5] [--jobs 2] [--wait-idle 0.34 [--patience 10]]

``--wait-idle G`` waits before each run until the gauge is below ``G`` (``--patience`` minutes of
waiting in all, then the runs go ahead), and the runs whose gauge stayed below ``G`` before and
after are summarised on their own: a shared machine turns busy and idle by the minute.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "mappings" / "nct05948982"
TARGET_S = 4.0


def idle_gauge() -> float:
    """Seconds for ten million empty loop turns (CPU-bound, no I/O), run on two cores at once as
    the run uses two: the slower of the two interpreters."""
    code = "import time\nt = time.perf_counter()\nfor _ in range(10_000_000): pass\nprint(time.perf_counter() - t)"
    loops = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return max(float(loop.communicate()[0]) for loop in loops)


def one_run(out: Path, jobs: int | None) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "cdisc_convert", "run", str(STUDY), "--out", str(out), "--quiet"]
    if jobs:
        command += ["--jobs", str(jobs)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the run failed (exit code {done.returncode}): {done.stderr.strip()}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=None, help="as `run --jobs` (default: the run's own choice)")
    parser.add_argument("--wait-idle", type=float, default=None, metavar="G",
                        help="before each run, wait for an idle gauge below G seconds")
    parser.add_argument("--patience", type=float, default=10, metavar="MIN",
                        help="with --wait-idle: minutes of waiting in all, after which runs go ahead (default 10)")
    args = parser.parse_args()
    deadline = time.monotonic() + 60 * args.patience

    def gauge_before() -> float:
        gauge = idle_gauge()
        while args.wait_idle is not None and gauge >= args.wait_idle and time.monotonic() < deadline:
            print(f"waiting for an idle machine: gauge {gauge:.2f} s", flush=True)
            time.sleep(10)
            gauge = idle_gauge()
        return gauge

    runs: list[tuple[float, float, float]] = []  # wall, gauge before, gauge after
    with tempfile.TemporaryDirectory(prefix="bench_example-") as tmp:
        one_run(Path(tmp) / "warm", args.jobs)  # files into the page cache, as after any earlier run
        for _ in range(args.runs):
            before = gauge_before()
            wall = one_run(Path(tmp) / "out", args.jobs)
            runs.append((wall, before, idle_gauge()))
    walls = [w for w, _b, _a in runs]
    gauges = [g for _w, b, a in runs for g in (b, a)]
    print(f"example study ({STUDY.name}), {args.runs} runs, jobs {args.jobs or 'default'}: "
          f"best {min(walls):.2f} s, median {statistics.median(walls):.2f} s wall "
          f"(target under {TARGET_S:.0f} s on an idle machine)")
    print(f"idle gauge {min(gauges):.2f}-{max(gauges):.2f} s around the runs (about 0.3 s when idle)")
    print("runs (gauge before, after): " + ", ".join(f"{w:.2f} ({b:.2f}, {a:.2f})" for w, b, a in runs))
    if args.wait_idle is not None:
        idle = [w for w, b, a in runs if max(b, a) < args.wait_idle]
        print(f"runs with the gauge below {args.wait_idle} s before and after: {len(idle)}"
              + (f", best {min(idle):.2f} s, median {statistics.median(idle):.2f} s" if idle else ""))


if __name__ == "__main__":
    main()
