"""Benchmark the validator on the example study at a given size.

    python3 benchmarks/bench_validate.py --subjects 2000 [--out DIR]

Generates and converts the study (or reuses DIR/out when it already holds sdtm/), then runs
``cdisc-convert validate`` on the SDTM folder in its own process and prints wall time, peak
memory and the number of findings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, resource, sys, time
from pathlib import Path
from cdisc_convert.validate import validate_folder
from cdisc_convert.validate.report import write_reports
t = time.perf_counter()
result = validate_folder(Path(sys.argv[1]))
checked = time.perf_counter() - t
write_reports(result, Path(sys.argv[2]))
total = time.perf_counter() - t
print(json.dumps({"check": checked, "total": total, "records": sum(result.datasets.values()),
                  "findings": len(result.findings),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--out", help="work folder (kept); DIR/out/sdtm is reused when present")
    args = parser.parse_args()
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-validate-"))
    sdtm = work / "out" / "sdtm"
    if not sdtm.is_dir():
        from cdisc_convert.example_study import write_example_study
        from cdisc_convert.pipeline import run_study
        write_example_study(work / "study", n_subjects=args.subjects, odm=False)
        run_study(work / "study", work / "out")
    proc = subprocess.run([sys.executable, "-c", RUN, str(sdtm), str(work / "report")], capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return 1
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"SDTM records validated: {r['records']:,}; findings: {r['findings']:,}")
    print(f"rules over all datasets  {r['check']:8.2f} s")
    print(f"with the four reports    {r['total']:8.2f} s")
    print(f"peak memory              {r['maxrss_mb']:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
