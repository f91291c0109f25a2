"""Benchmark ``compare`` on a large dataset: the QS (about a million records at 2,000 subjects)
or any dataset of two output folders.

    python3 benchmarks/bench_compare.py BASE_SDTM NEW_SDTM [--dataset QS]

Loads both copies of the dataset, compares them by its keys, and prints the record count,
the load and compare wall times and peak memory.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--dataset", default="QS")
    args = parser.parse_args()
    import pandas as pd
    import pyreadstat

    from cdisc_convert.diff import compare_datasets

    name = args.dataset.upper()
    t0 = time.perf_counter()
    frames, labels, widths = [], [], []
    for folder in (args.base, args.new):
        path = Path(folder) / f"{name.lower()}.xpt"
        _e, meta = pyreadstat.read_xport(str(path), metadataonly=True)
        frame = pd.read_sas(path, format="xport", encoding="ascii")
        frames.append(frame)
        labels.append(dict(meta.column_names_to_labels))
        widths.append(dict(meta.variable_storage_width))
    t1 = time.perf_counter()
    result = compare_datasets(name, frames[0], frames[1], labels[0], labels[1], widths[0], widths[1])
    t2 = time.perf_counter()
    print(f"{name}: {len(frames[0]):,} vs {len(frames[1]):,} records, keys {', '.join(result.keys)}; "
          f"equal: {result.equal}")
    print(f"load both     {t1 - t0:8.2f} s")
    print(f"compare       {t2 - t1:8.2f} s")
    print(f"peak memory   {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
