"""Benchmark the whole run (SDTM, then ADaM) on a generated example study of a given size.

    python3 benchmarks/bench_sdtm.py --subjects 2000 [--keep DIR]

Prints per-stage wall time, source rows and output records per second, the XPT-writing share
of the SDTM time, per-ADaM-dataset derivation time, and peak memory: of the whole conversion,
and of an ADaM-only run (``--adam-only`` on the SDTM just written) measured on its own.
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
from cdisc_convert.pipeline import run_adam_only, run_study
if sys.argv[3] == "adam-only":
    result = run_adam_only(Path(sys.argv[1]), Path(sys.argv[2]))
else:
    result = run_study(Path(sys.argv[1]), Path(sys.argv[2]))
records = {n: len(d.data) for n, d in result.datasets.items()}
print(json.dumps({"timings": result.timings, "source_rows": result.source_rows, "records": records,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(study: Path, out: Path, mode: str, script: str = RUN_ONE) -> dict:
    """Run ``script`` in its own process (its peak memory is its own) and return its last JSON line."""
    import json

    proc = subprocess.run([sys.executable, "-c", script, str(study), str(out), mode], capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(1)
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
    # each run is its own process, so its peak memory is its own
    r = _run(study, work / "out", "full")
    t = r["timings"]
    sdtm_records = sum(n for name, n in r["records"].items() if not name.startswith("AD"))
    sdtm_total = t["read"] + t["map_and_derive"] + t["write_xpt"] + t["write_json"]
    print(f"subjects: {args.subjects}; source rows: {r['source_rows']:,}; SDTM records: {sdtm_records:,} "
          f"(LB {r['records']['LB']:,})")
    print(f"generate export       {generate:8.2f} s")
    print("SDTM")
    for stage in ("read", "map_and_derive", "write_xpt", "write_json"):
        print(f"  {stage:<19} {t[stage]:8.2f} s")
    print(f"  {'SDTM total':<19} {sdtm_total:8.2f} s")
    print(f"  rows/s (source rows / SDTM total)      {r['source_rows'] / sdtm_total:,.0f}")
    print(f"  records/s (SDTM records / SDTM total)  {sdtm_records / sdtm_total:,.0f}")
    print(f"  XPT-writing share of the SDTM time     {100 * t['write_xpt'] / sdtm_total:.1f} %")
    print("ADaM (derivation wall time per dataset, records)")
    for name in sorted(k for k in t if k.startswith("adam_")):
        ds = name[5:].upper()
        print(f"  {ds:<19} {t[name]:8.2f} s  {r['records'].get(ds, 0):>10,}")
    print(f"  {'write ADaM':<19} {t.get('write_adam', 0):8.2f} s")
    print(f"define.xml (both)     {t.get('define_sdtm', 0) + t.get('define_adam', 0):8.2f} s")
    print(f"validation (both)     {t.get('validate_sdtm', 0) + t.get('validate_adam', 0):8.2f} s")
    print(f"whole run total       {t['total']:8.2f} s")
    print(f"peak memory of the whole run        {r['maxrss_mb']:,.0f} MB")
    a = _run(study, work / "out", "adam-only")
    print(f"ADaM-only run (--adam-only): {a['timings']['total']:.2f} s, peak memory {a['maxrss_mb']:,.0f} MB")
    print(f"peak memory of the generator        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
