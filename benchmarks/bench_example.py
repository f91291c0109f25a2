"""Wall time of the example study's whole run, as a data manager runs it after a spec edit:
``cdisc-convert run mappings/nct05948982 --out OUT`` in a fresh process (interpreter start and
imports included), several times, with the best and the median.

Wall time depends on what else the machine is doing, so the script also times a fixed CPU-bound
loop on two cores at once before each run (``idle gauge``: about 0.3 s on the idle 2-core
reference machine); a gauge well above that means the figures are not an idle machine's.

    python3 benchmarks/bench_example.py [--runs 5] [--jobs 2] [--wait-idle 0.34]

``--wait-idle G`` waits (up to ten minutes) until the gauge is below ``G`` before measuring, and
the runs whose gauge (before and after) stayed below ``G`` are also summarised on their own: a
shared machine can turn busy half-way through.
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
                        help="wait (up to ten minutes) for an idle gauge below G seconds first")
    args = parser.parse_args()
    if args.wait_idle is not None:  # two readings in a row under the bar: one can be a lucky moment
        deadline, below = time.monotonic() + 600, 0
        while below < 2 and time.monotonic() < deadline:
            gauge = idle_gauge()
            below = below + 1 if gauge < args.wait_idle else 0
            if not below:
                print(f"waiting for an idle machine: gauge {gauge:.2f} s", flush=True)
                time.sleep(10)
    walls, gauges = [], []
    with tempfile.TemporaryDirectory(prefix="bench_example-") as tmp:
        one_run(Path(tmp) / "warm", args.jobs)  # files into the page cache, as after any earlier run
        for _ in range(args.runs):
            gauges.append(idle_gauge())
            walls.append(one_run(Path(tmp) / "out", args.jobs))
    gauges.append(idle_gauge())
    best, median = min(walls), statistics.median(walls)
    print(f"example study ({STUDY.name}), {args.runs} runs, jobs {args.jobs or 'default'}: "
          f"best {best:.2f} s, median {median:.2f} s wall (target under {TARGET_S:.0f} s on an idle machine)")
    print(f"idle gauge {min(gauges):.2f}-{max(gauges):.2f} s around the runs (about 0.3 s when idle)")
    print("runs (gauge before): " + ", ".join(f"{w:.2f} ({g:.2f})" for w, g in zip(walls, gauges)))
    if args.wait_idle is not None:
        idle = [w for w, before, after in zip(walls, gauges, gauges[1:]) if max(before, after) < args.wait_idle]
        print(f"runs with the gauge below {args.wait_idle} s before and after: {len(idle)}"
              + (f", best {min(idle):.2f} s, median {statistics.median(idle):.2f} s" if idle else ""))


if __name__ == "__main__":
    main()
