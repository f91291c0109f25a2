"""The ``cdisc-convert`` command line.

    cdisc-convert run STUDY_DIR --out OUT_DIR [--edc PATH] [--encoding latin-1]
    cdisc-convert example --subjects N --out DIR [--seed S] [--no-odm]
    cdisc-convert explain LB USUBJID=... LBSEQ=... --out OUT_DIR
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConversionError

# never wrap: a piped log keeps every value on one line
console = Console(stderr=True, highlight=False, soft_wrap=True)


class Progress:
    """Progress of a run: on a terminal a status line with the step count and elapsed time; when
    not a terminal (a nightly job's log) one timestamped line per step, flushed at once."""

    def __init__(self, quiet: bool = False):
        import time

        self.quiet, self.start, self.steps, self.time = quiet, time.monotonic(), 0, time
        self.status, self.total = None, None

    def expect(self, total: int) -> None:
        """The number of steps the run expects to report (for the count and the ETA)."""
        self.total = total

    def __enter__(self):
        if not self.quiet and console.is_terminal:
            self.status = console.status("starting")
            self.status.__enter__()
        return self

    def __exit__(self, *exc):
        if self.status is not None:
            self.status.__exit__(*exc)

    def __call__(self, message: str) -> None:
        self.steps += 1
        elapsed = self.time.monotonic() - self.start
        if self.quiet:
            return
        if self.status is not None:
            count = f"step {self.steps}" + (f"/{max(self.total, self.steps)}" if self.total else "")
            eta = ""
            if self.total and self.steps > 2:
                left = elapsed / self.steps * max(self.total - self.steps, 0)
                eta = f", about {left:.0f}s left"
            self.status.update(f"{count}: {message} ({elapsed:.0f}s elapsed{eta})")
        else:
            stamp = __import__("datetime").datetime.now().strftime("%H:%M:%S")
            print(f"{stamp} [{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of processes (1 or more)")
    return min(int(text), 2)  # a run has two branches to give processes to


def _cmd_run(args) -> int:
    from .pipeline import run_adam_only, run_study

    with Progress(args.quiet) as progress:
        if args.adam_only:
            result = run_adam_only(Path(args.study_dir), Path(args.out), Path(args.sdtm) if args.sdtm else None,
                                   progress=progress)
        else:
            result = run_study(Path(args.study_dir), Path(args.out), edc=Path(args.edc) if args.edc else None,
                               encoding=args.encoding, progress=progress,
                               stylesheet=Path(args.stylesheet) if args.stylesheet else None,
                               ct=[Path(c) for c in args.ct or []], jobs=args.jobs)
    if args.quiet:
        return _run_summary(args, result)
    table = Table(title=f"Datasets written to {result.out_dir}")
    table.add_column("dataset")
    table.add_column("records", justify="right")
    table.add_column("variables", justify="right")
    for name, ds in result.datasets.items():
        table.add_row(name, str(len(ds.data)), str(len(ds.data.columns)))
    console.print(table)
    reasons: dict[str, int] = {}
    for e in result.excluded:
        reasons[e.reason] = reasons.get(e.reason, 0) + 1
    if args.adam_only:
        if args.verbose:
            console.print("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
        return 0
    console.print(f"source rows: {result.source_rows}; excluded: "
                  + (", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none")
                  + f" (see {result.out_dir / 'reconciliation.csv'})")
    if result.deviations:
        console.print(f"[yellow]{len(result.deviations)} deviation(s) reported in {result.out_dir / 'report.json'}[/]")
    if args.verbose:
        console.print("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    return _run_summary(args, result)


def _run_summary(args, result) -> int:
    """The run's last lines: the validation summary per model and the exit code --fail-on asks."""
    manifest = result.out_dir / "manifest.json"
    validation = json.loads(manifest.read_text()).get("validation", {}) if manifest.is_file() else {}
    worst = {"error": 0, "warning": 0}
    for model, counts in sorted(validation.items(), key=lambda kv: kv[0] != "sdtm"):
        console.print(f"validation {model.upper()}: {counts.get('error', 0)} error(s), {counts.get('warning', 0)} "
                      f"warning(s), {counts.get('info', 0)} note(s); report: "
                      f"{result.out_dir / 'validation' / model / 'report.html'}")
        for severity in worst:
            worst[severity] += counts.get(severity, 0)
    if args.fail_on == "error" and worst["error"]:
        return 1
    if args.fail_on == "warning" and (worst["error"] or worst["warning"]):
        return 1
    return 0


def _cmd_define(args) -> int:
    from .pipeline import run_define

    for path in run_define(Path(args.study_dir), Path(args.out), Path(args.stylesheet) if args.stylesheet else None,
                           ct=[Path(c) for c in args.ct or []]):
        console.print(f"{path} (schema-valid Define-XML 2.1) and {path.with_suffix('.html')}")
    return 0


def _cmd_acrf(args) -> int:
    from .pipeline import run_acrf

    acrf = run_acrf(Path(args.study), Path(args.out), Path(args.edc) if args.edc else None)
    console.print(f"annotated CRF: {acrf.pdf} ({len(acrf.form_pages)} forms) and {acrf.html}")
    return 0


def _cmd_validate(args) -> int:
    from .validate import validate_folder
    from .validate.report import write_reports

    result = validate_folder(Path(args.folder), define=Path(args.define) if args.define else None,
                             ct=[Path(c) for c in args.ct or []],
                             study_dir=Path(args.study) if args.study else None,
                             accepted=Path(args.accepted) if args.accepted else None,
                             baseline=Path(args.baseline) if args.baseline else None,
                             reference_folder=Path(args.sdtm) if args.sdtm else None)
    out = write_reports(result, Path(args.out))
    counts = {s: result.count(s) for s in ("error", "warning", "info")}
    console.print(f"{result.kind} datasets in {args.folder} (CT: {result.ct_source}): {counts['error']} error(s), "
                  f"{counts['warning']} "
                  f"warning(s), {counts['info']} note(s); reports in {out} (report.html, report.json, report.csv, "
                  f"junit.xml)")
    return result.exit_code(args.fail_on)


def _cmd_spec_workbook(args) -> int:
    import json

    from .spec_workbook import write_spec_workbook

    metadata = None
    if args.data:
        path = Path(args.data) / "metadata.json"
        if not path.is_file():
            raise ConversionError("no metadata.json in the output folder (run the study first)", source=str(args.data))
        metadata = json.loads(path.read_text())
    out = write_spec_workbook(Path(args.study), Path(args.out), metadata,
                              Path(args.previous) if args.previous else None)
    console.print(f"mapping specification: {out}")
    return 0


def _print_lines(lines) -> None:
    out = Console(highlight=False, soft_wrap=True)  # one value, one line, also when piped
    for text, style in lines:
        out.print(escape(text), style=style)


def _write_outputs(args, title: str, sections, doc: dict) -> None:
    from .diff import html_page

    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if args.html:
        Path(args.html).write_text(html_page(title, sections), encoding="utf-8")


def _cmd_diff_spec(args) -> int:
    from .diff import compare_text, diff_specs, read_spec_folder, read_spec_revision, spec_diff_text

    if args.rev:
        if len(args.rev) != 2 or args.paths:
            raise ConversionError("give two revisions (--rev OLD --rev NEW) or two folders, not both")
        repo = Path(args.repo)
        old, new = (read_spec_revision(repo, r, args.study) for r in args.rev)
        labels = [f"{args.study}@{r}" for r in args.rev]
    else:
        if len(args.paths) != 2:
            raise ConversionError("give two spec folders (OLD NEW) or --rev OLD --rev NEW")
        old, new = (read_spec_folder(Path(p)) for p in args.paths)
        labels = list(args.paths)
    changes = diff_specs(old, new)
    lines = spec_diff_text(changes)
    _print_lines(lines)
    sections = [(f"spec changes {labels[0]} -> {labels[1]}", lines)]
    doc = {"old": labels[0], "new": labels[1], "equal": not changes,
           "changes": [{"file": c.file, "path": c.path, "kind": c.kind, "old": c.old, "new": c.new} for c in changes]}
    different = bool(changes)
    if args.impact:
        cmp = _impact(args, labels)
        cmp_lines = compare_text(cmp)
        _print_lines(cmp_lines)
        sections.append(("impact on the datasets", cmp_lines))
        doc["impact"] = cmp.to_json()
        different = different or not cmp.equal
    _write_outputs(args, "cdisc-convert diff-spec", sections, doc)
    return 1 if different else 0


def _impact(args, labels):
    """Run both spec versions on the same EDC export and compare their SDTM and ADaM outputs."""
    import shutil
    import tempfile

    from .diff import FolderCompare, compare_folders
    from .pipeline import run_study

    work = Path(tempfile.mkdtemp(prefix="cdisc-impact-"))
    try:
        studies = []
        for i, label in enumerate(labels):
            target = work / f"study{i}"
            if args.rev:
                repo = Path(args.repo)
                from .diff import _git
                for name in _git(repo, "ls-tree", "-r", "--name-only", args.rev[i], "--", args.study).splitlines():
                    if name.endswith(".yaml") and "/edc/" not in name:
                        dest = target / Path(name).relative_to(args.study)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_text(_git(repo, "show", f"{args.rev[i]}:{name}"))
            else:
                shutil.copytree(label, target, ignore=shutil.ignore_patterns("edc", "out"))
            studies.append(target)
        edc = Path(args.edc) if args.edc else (Path(args.repo) / args.study / "edc" if args.rev
                                                else Path(args.paths[1]) / "edc")
        outs = []
        for i, study in enumerate(studies):
            out = work / f"out{i}"
            with Progress(getattr(args, "quiet", False)) as progress:
                progress(f"impact: converting the export with the {('old', 'new')[i]} specs ({labels[i]})")
                run_study(study, out, edc=edc, progress=progress)
            outs.append(out)
        parts = [compare_folders(outs[0] / f, outs[1] / f, args.tolerance) for f in ("sdtm", "adam")
                 if (outs[0] / f).is_dir() and (outs[1] / f).is_dir()]
        return FolderCompare(labels[0], labels[1], args.tolerance,
                             sum((p.added_datasets for p in parts), []), sum((p.removed_datasets for p in parts), []),
                             sum((p.datasets for p in parts), []))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cmd_compare(args) -> int:
    from .diff import compare_folders, compare_text

    cmp = compare_folders(Path(args.base), Path(args.new), args.tolerance)
    lines = compare_text(cmp)
    _print_lines(lines)
    _write_outputs(args, "cdisc-convert compare", [("dataset compare", lines)], cmp.to_json())
    return 0 if cmp.equal else 1


def _cmd_example(args) -> int:
    from .example_study import write_example_study

    out = write_example_study(Path(args.out), n_subjects=args.subjects, seed=args.seed, odm=not args.no_odm)
    console.print(f"example study with {args.subjects} subjects written to {out} "
                  f"(run it with: cdisc-convert run {out} --out {out}/out)")
    return 0


def _cmd_explain(args) -> int:
    from .lineage import explain_record

    bad = [kv for kv in args.keys if "=" not in kv]
    if bad:
        raise ConversionError(f"record keys are KEY=VALUE pairs (got '{bad[0]}'), e.g. USUBJID=NCT05948982-01-001")
    print(explain_record(Path(args.out), args.dataset, dict(kv.split("=", 1) for kv in args.keys)))
    return 0


CT_HELP = ("a CDISC CT release to use instead of the bundled one (SDTM CT and ADaM CT 2025-03-28): an NCI EVS "
           "tab-delimited .txt, a CDISC Library .csv, or a folder of them; repeat for SDTM and ADaM packages")


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cdisc-convert", description="EDC exports to CDISC SDTM and ADaM (XPT v5, Dataset-JSON 1.1), "
        "Define-XML 2.1 with its HTML view, and validation reports. Exit codes: 0 done, 1 findings at or "
        "above --fail-on (or differences for diff-spec/compare), 2 unusable input.")
    parser.add_argument("--version", action="version", version=f"cdisc-convert {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="convert a study folder (study.yaml + specs) to SDTM and ADaM")
    run.add_argument("study_dir", help="the study folder: study.yaml, one spec per domain, adam/, edc/")
    run.add_argument("--out", required=True, help="output folder: new, empty, or written by an earlier run (it is "
                                                  "replaced only when the whole run succeeds)")
    run.add_argument("--fail-on", choices=["error", "warning"], help="exit 1 when validation finds this or worse")
    run.add_argument("--quiet", action="store_true", help="print only the validation summary and errors")
    run.add_argument("--verbose", action="store_true", help="also print the time each step took")
    run.add_argument("--edc", help="EDC export to read instead of the one study.yaml names (CSV folder or ODM .xml)")
    run.add_argument("--encoding", help="CSV encoding, e.g. latin-1 (default: the config's, utf-8 with or without BOM)")
    run.add_argument("--adam-only", action="store_true",
                     help="derive ADaM from an existing SDTM folder (OUT/sdtm, or --sdtm) into OUT/adam")
    run.add_argument("--sdtm", help="with --adam-only: the folder of SDTM .xpt files (default: OUT/sdtm)")
    run.add_argument("--stylesheet", help="XSLT for define.html (e.g. the CDISC Define-XML 2.1 stylesheet); "
                                          "default: the project's own template")
    run.add_argument("--ct", action="append", metavar="PATH", help=CT_HELP)
    run.add_argument("--jobs", type=_jobs, metavar="N", help="processes: 2 writes and validates SDTM while ADaM is "
                     "derived, 1 uses one process, less CPU and less memory; the files are the same (default: 2 on "
                     "Linux with 2+ cores for up to 1,000,000 SDTM records, else 1)")
    run.set_defaults(func=_cmd_run)
    de = sub.add_parser("define", help="write define.xml + define.html for the datasets already in OUT")
    de.add_argument("study_dir", help="the study folder (study.yaml + specs)")
    de.add_argument("--out", required=True, help="the run's output folder (holding sdtm/ and adam/)")
    de.add_argument("--stylesheet", help="XSLT for define.html instead of the project's own template")
    de.add_argument("--ct", action="append", metavar="PATH", help=CT_HELP)
    de.set_defaults(func=_cmd_define)
    ac = sub.add_parser("acrf", help="the annotated CRF (PDF + HTML) drawn from the export's CRF design and the specs")
    ac.add_argument("study", help="study folder (study.yaml, domain specs)")
    ac.add_argument("--out", required=True, help="folder to write acrf.pdf and acrf.html into")
    ac.add_argument("--edc", help="the EDC export (CSV folder with its data dictionary, or ODM .xml)")
    ac.set_defaults(func=_cmd_acrf)
    va = sub.add_parser("validate", help="check SDTM or ADaM datasets: CT, visit windows, conformance")
    va.add_argument("folder", help="folder of .xpt (or Dataset-JSON) datasets")
    va.add_argument("--define", help="define.xml to check against (default: FOLDER/define.xml when present)")
    va.add_argument("--ct", action="append", metavar="PATH", help=CT_HELP)
    va.add_argument("--out", default="validation-report", help="report folder (default: validation-report)")
    va.add_argument("--study", help="study folder: its terminology.yaml, the codelists its specs bind and the ADaM "
                                    "analysis windows, keys and treatment-emergence window of its specs")
    va.add_argument("--sdtm", help="for an ADaM folder: the SDTM folder it was derived from (default: the sdtm/ "
                                   "folder beside it), for the checks against DM, EX and lineage")
    va.add_argument("--fail-on", choices=["error", "warning"], help="exit 1 when findings at or above this severity")
    va.add_argument("--baseline", help="last report.json: mark findings new, persisting or fixed")
    va.add_argument("--accepted", help="YAML list of accepted findings (rule, dataset, variable, value, justification)")
    va.set_defaults(func=_cmd_validate)
    sw = sub.add_parser("spec-workbook", help="the mapping specification as an Excel workbook for review")
    sw.add_argument("study", help="study folder (study.yaml, domain specs, adam/)")
    sw.add_argument("--out", default="spec.xlsx", help="workbook to write (default: spec.xlsx)")
    sw.add_argument("--data", help="output folder of a run: its metadata.json adds the written lengths")
    sw.add_argument("--previous", help="a previous version of the study folder: adds a Changes sheet")
    sw.set_defaults(func=_cmd_spec_workbook)
    ds = sub.add_parser("diff-spec", help="semantic diff of two versions of the mapping specs")
    ds.add_argument("paths", nargs="*", help="two study folders (OLD NEW)")
    ds.add_argument("--rev", action="append", help="a git revision; give it twice (old, then new)")
    ds.add_argument("--repo", default=".", help="the git repository (default: .)")
    ds.add_argument("--study", default="mappings/nct05948982", help="study folder inside the repo (with --rev)")
    ds.add_argument("--impact", action="store_true", help="run both versions on the same EDC export and compare")
    ds.add_argument("--edc", help="with --impact: the EDC export (default: the new study's edc/ folder)")
    ds.add_argument("--tolerance", type=float, default=1e-9, help="relative tolerance for numbers (default 1e-9)")
    ds.add_argument("--json", help="write the result as JSON to this file")
    ds.add_argument("--html", help="write the result as a single HTML page to this file")
    ds.set_defaults(func=_cmd_diff_spec)
    co = sub.add_parser("compare", help="compare two folders of datasets by their keys (like PROC COMPARE)")
    co.add_argument("base", help="folder of datasets (.xpt or Dataset-JSON), or one dataset file")
    co.add_argument("new", help="the folder (or file) to compare with it")
    co.add_argument("--tolerance", type=float, default=1e-9, help="relative tolerance for numbers (default 1e-9)")
    co.add_argument("--json", help="write the result as JSON to this file")
    co.add_argument("--html", help="write the result as a single HTML page to this file")
    co.set_defaults(func=_cmd_compare)
    ex = sub.add_parser("example", help="write the example study (specs + generated EDC export)")
    ex.add_argument("--subjects", type=int, default=18, help="number of subjects to generate (default 18)")
    ex.add_argument("--seed", type=int, default=20230717, help="random seed: the same seed gives the same export")
    ex.add_argument("--out", required=True, help="folder to write the study into (new, or empty)")
    ex.add_argument("--no-odm", action="store_true", help="skip the ODM XML copy of the export")
    ex.set_defaults(func=_cmd_example)
    exp = sub.add_parser("explain", help="where each value of one output record came from")
    exp.add_argument("dataset", help="SDTM or ADaM dataset name, e.g. LB or ADSL")
    exp.add_argument("keys", nargs="+", help="KEY=VALUE pairs, e.g. USUBJID=NCT05948982-01-001 LBSEQ=3")
    exp.add_argument("--out", default="out", help="output folder of the run (default: out)")
    exp.set_defaults(func=_cmd_explain)
    args = parser.parse_args(argv)
    _stop_cleanly_on_sigterm()
    for flag in ("quiet", "verbose", "fail_on"):
        if not hasattr(args, flag):
            setattr(args, flag, None)
    try:
        return args.func(args)
    except ConversionError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted; nothing was replaced")
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, LookupError, UnicodeError, MemoryError) as exc:
        # a missing or unreadable path, a full disk, an unknown encoding: the user's to fix
        where = getattr(exc, "filename", None)
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _fail(args, f"{type(exc).__name__}: {detail}" + (f" [{where}]" if where else ""))
    except Exception as exc:  # a bug of ours: still one line, the traceback with --debug
        return _fail(args, f"internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback")



def _import_pandas_uncollected() -> None:
    """pandas (and numpy), imported with the cyclic collector off, then frozen: what an import
    makes lives as long as the process, and the collector walked it about a hundred times while
    pandas loaded (0.08 s of every command)."""
    gc.disable()
    try:
        import pandas  # noqa: F401
    except ImportError:  # main meets it again and says so in one line
        pass
    finally:
        gc.freeze()
        gc.enable()


def entry() -> None:
    """The ``cdisc-convert`` command and ``python -m cdisc_convert``: :func:`main`, then leave
    without the interpreter's teardown. Every output file is written, closed and in place by then;
    freeing a run's objects one by one took 0.3 s of the 18-subject example's 4. (Tests and other
    callers use :func:`main`, which returns.)"""
    if any(not arg.startswith("-") for arg in sys.argv[1:]):  # a command, not --help or --version
        _import_pandas_uncollected()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # the reader went away, or a stream is closed: nothing left to say
        pass
    os._exit(code)


def _stop_cleanly_on_sigterm() -> None:
    """SIGTERM (a job scheduler stopping the run) unwinds like Ctrl-C: the temporary output is
    removed and nothing is replaced."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _fail(args, message: str) -> int:
    if getattr(args, "debug", False):
        import traceback

        traceback.print_exc()
    console.print("[red]error:[/] " + escape(" ".join(message.split())))
    return 2


if __name__ == "__main__":
    sys.exit(main())
