"""Benchmark the SDTM run on a generated example study of a given size.

    python3 benchmarks/bench_sdtm.py --subjects 2000 [--keep DIR]

Prints per-stage wall time, source rows and output records per second, the XPT-writing share
of the time, and peak memory (max RSS of this process and of the conversion alone).
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_ONE = """
import json, resource, sys, time
from pathlib import Path
from cdisc_convert.pipeline import run_study
t = time.perf_counter()
result = run_study(Path(sys.argv[1]), Path(sys.argv[2]))
records = sum(len(d.data) for d in result.datasets.values())
lb = len(result.datasets["LB"].data)
print(json.dumps({"timings": result.timings, "source_rows": result.source_rows, "records": records, "lb": lb,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20230717)
    parser.add_argument("--keep", help="keep the generated study and output in this folder")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-sdtm-"))
    study = work / "study"
    from cdisc_convert.example_study import write_example_study

    t0 = time.perf_counter()
    write_example_study(study, n_subjects=args.subjects, seed=args.seed, odm=False)
    generate = time.perf_counter() - t0
    # the conversion runs in its own process so its peak memory is its own
    proc = subprocess.run([sys.executable, "-c", RUN_ONE, str(study), str(work / "out")], capture_output=True,
                          text=True)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return 1
    import json

    r = json.loads(proc.stdout.strip().splitlines()[-1])
    t = r["timings"]
    print(f"subjects: {args.subjects}; source rows: {r['source_rows']:,}; output records: {r['records']:,} "
          f"(LB {r['lb']:,})")
    print(f"generate export       {generate:8.2f} s")
    for stage in ("read", "map_and_derive", "write_xpt", "write_json", "total"):
        print(f"{stage:<21} {t[stage]:8.2f} s")
    print(f"rows/s (source rows / total)        {r['source_rows'] / t['total']:,.0f}")
    print(f"records/s (output records / total)  {r['records'] / t['total']:,.0f}")
    print(f"XPT-writing share of the run        {100 * t['write_xpt'] / t['total']:.1f} %")
    print(f"peak memory of the conversion       {r['maxrss_mb']:,.0f} MB")
    print(f"peak memory of the generator        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
