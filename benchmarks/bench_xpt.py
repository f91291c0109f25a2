"""Our XPT v5 writer against pyreadstat's on the same frame, side by side in one run.

    python3 benchmarks/bench_xpt.py [--subjects 2000] [--dataset LB]

Generates the example study at the given size, converts it, reads the chosen SDTM dataset back,
then writes it with both writers (best of three each), checks the bytes are equal and prints
MB/s and the ratio.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import pyreadstat

from cdisc_convert.example_study import write_example_study
from cdisc_convert.pipeline import run_study
from cdisc_convert.writers import Dataset, read_xpt, write_xpt

STAMP = re.compile(rb"\d\d[A-Z]{3}\d\d:\d\d:\d\d:\d\d")


def best_of(n, fn):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=2000)
    ap.add_argument("--dataset", default="LB")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-xpt-"))
    study = write_example_study(work / "study", n_subjects=args.subjects, odm=False)
    run_study(study, work / "out")
    xpt = read_xpt(work / "out" / "sdtm" / f"{args.dataset.lower()}.xpt")
    ds = Dataset(xpt.name, xpt.label, xpt.data, xpt.labels, formats=xpt.formats)
    ours, theirs = work / "ours", work / "theirs"
    ours.mkdir()
    theirs.mkdir()
    t_ours = best_of(3, lambda: write_xpt(ds, ours, "2026-01-01T00:00:00"))
    frame = ds.data
    t_theirs = best_of(3, lambda: pyreadstat.write_xport(
        frame, str(theirs / "x.xpt"), file_label=ds.label, table_name=ds.name, file_format_version=5,
        column_labels=ds.labels, variable_format=ds.formats or None))
    a = (ours / f"{ds.name.lower()}.xpt").read_bytes()
    b = (theirs / "x.xpt").read_bytes()
    mb = len(a) / 1e6
    print(f"{ds.name}: {len(frame):,} records x {len(frame.columns)} variables, {mb:.1f} MB")
    print(f"  ours       {t_ours:6.2f} s  {mb / t_ours:7.1f} MB/s (checks included)")
    print(f"  pyreadstat {t_theirs:6.2f} s  {mb / t_theirs:7.1f} MB/s")
    print(f"  ratio {t_theirs / t_ours:.1f}x; bytes equal: {STAMP.sub(b'T', a) == STAMP.sub(b'T', b)}")


if __name__ == "__main__":
    main()
