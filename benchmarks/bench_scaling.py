"""Scaling run: the whole conversion of generated example studies of several sizes, with CPU
seconds, wall seconds and peak memory per phase, then an ``--adam-only`` run on the SDTM written.

    python3 benchmarks/bench_scaling.py [--subjects 200 2000 6000] [--keep DIR]

Each run is its own process (its peak memory is its own). Phases follow the progress messages of
``run_study``: read, SDTM (map + derive), write SDTM, ADaM (derive), write ADaM, define, validate
(the last phase also holds the reports and manifest). Peak memory per phase is the highest resident
set size sampled every 10 ms while the phase ran; "peak" is the process's ru_maxrss.

The phase table is of the one-process run (``--jobs 1``). A second line runs the default
``--jobs 2`` (SDTM written and validated by a forked child while ADaM is derived): its CPU seconds
add the child's, and its peak is the highest sum of both processes' resident sizes (pages the child
still shares with the parent count twice, so the figure is an upper bound).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

PHASES = ["read", "SDTM", "write SDTM", "ADaM", "write ADaM", "define", "validate"]

RUN_ONE = r'''
import json, os, resource, sys, threading, time
from pathlib import Path
from cdisc_convert.pipeline import run_adam_only, run_study

PAGE = os.sysconf("SC_PAGE_SIZE")
state = {"phase": "start", "peak": 0, "all": 0}
phases = {}
ME = os.getpid()

def rss_of(pid):
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return 0

def rss():
    return rss_of("self")

def rss_all():  # this process and its forked children
    try:
        with open(f"/proc/{ME}/task/{ME}/children") as fh:
            children = fh.read().split()
    except OSError:
        children = []
    return rss_of(ME) + sum(rss_of(c) for c in children)

def sampler():
    while True:
        r = rss()
        p = phases.get(state["phase"])
        if p is not None and r > p["peak"]:
            p["peak"] = r
        state["all"] = max(state["all"], rss_all())
        time.sleep(0.01)

def phase_of(message):
    if message.startswith("read"):
        return "read"
    if message.startswith(("map ", "derive ", "build ")) or message.startswith("SUPP"):
        return "SDTM"
    if message.startswith("write AD"):
        return "write ADaM"
    if message.startswith("write "):
        return "write SDTM"
    if message.startswith("AD"):
        return "ADaM"
    if message.startswith("define"):
        return "define"
    if message.startswith("validate"):
        return "validate"
    return state["phase"]

def enter(name):
    now, cpu = time.perf_counter(), time.process_time()
    cur = phases.get(state["phase"])
    if cur is not None:
        cur["wall"] += now - cur.pop("_t")
        cur["cpu"] += cpu - cur.pop("_c")
    state["phase"] = name
    p = phases.setdefault(name, {"wall": 0.0, "cpu": 0.0, "peak": 0})
    p["_t"], p["_c"] = now, cpu
    p["peak"] = max(p["peak"], rss())

def progress(message):
    name = phase_of(message)
    if name != state["phase"]:
        enter(name)

threading.Thread(target=sampler, daemon=True).start()
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[3] == "adam-only":
    enter("ADaM")
    result = run_adam_only(Path(sys.argv[1]), Path(sys.argv[2]), progress=progress)
else:
    result = run_study(Path(sys.argv[1]), Path(sys.argv[2]), progress=progress, jobs=int(sys.argv[3]))
enter("end")
phases.pop("end")
for p in phases.values():
    p["peak"] = p["peak"] / 2**20
records = {n: len(d.data) for n, d in result.datasets.items()}
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"phases": phases, "wall": time.perf_counter() - t0,
                  "cpu": time.process_time() - c0 + children.ru_utime + children.ru_stime,
                  "records": records, "source_rows": result.source_rows,
                  "maxrss_mb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, state["all"] / 2**20)}))
'''


def _run(study: Path, out: Path, mode: str) -> dict:
    from bench_sdtm import _run as run_in_own_process  # benchmarks/ is on sys.path when run as a script

    return run_in_own_process(study, out, mode, RUN_ONE)


def _table(r: dict) -> None:
    print(f"  {'phase':<12} {'CPU s':>8} {'wall s':>8} {'peak MB':>9}")
    for name in PHASES:
        p = r["phases"].get(name)
        if p:
            print(f"  {name:<12} {p['cpu']:8.2f} {p['wall']:8.2f} {p['peak']:9,.0f}")
    print(f"  {'whole run':<12} {r['cpu']:8.2f} {r['wall']:8.2f} {r['maxrss_mb']:9,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, nargs="+", default=[200, 2000, 6000])
    parser.add_argument("--seed", type=int, default=20230717)
    parser.add_argument("--keep", help="keep the generated studies and outputs in this folder")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    from cdisc_convert.example_study import write_example_study

    for n in args.subjects:
        study, out = work / f"study-{n}", work / f"out-{n}"
        t0 = time.perf_counter()
        write_example_study(study, n_subjects=n, seed=args.seed, odm=False)
        generated = time.perf_counter() - t0
        r = _run(study, out, "1")
        sdtm = sum(v for k, v in r["records"].items() if not k.startswith("AD"))
        adam = sum(v for k, v in r["records"].items() if k.startswith("AD"))
        print(f"{n:,} subjects: {r['source_rows']:,} source rows, {sdtm:,} SDTM and {adam:,} ADaM records "
              f"(LB {r['records'].get('LB', 0):,}); export generated in {generated:.1f} s")
        _table(r)
        p = _run(study, out, "2")
        print(f"  {'--jobs 2':<12} {p['cpu']:8.2f} {p['wall']:8.2f} {p['maxrss_mb']:9,.0f}")
        a = _run(study, out, "adam-only")
        print(f"  --adam-only  {a['cpu']:8.2f} {a['wall']:8.2f} {a['maxrss_mb']:9,.0f}")
        if not args.keep:
            shutil.rmtree(study, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
