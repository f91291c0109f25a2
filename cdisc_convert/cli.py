"""The ``cdisc-convert`` command line.

    cdisc-convert run STUDY_DIR --out OUT_DIR [--edc PATH] [--encoding latin-1]
    cdisc-convert example --subjects N --out DIR [--seed S] [--no-odm]
    cdisc-convert explain LB USUBJID=... LBSEQ=... --out OUT_DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ConversionError

console = Console(stderr=True, highlight=False)


def _cmd_run(args) -> int:
    from .pipeline import run_adam_only, run_study

    with console.status("starting") as status:
        if args.adam_only:
            result = run_adam_only(Path(args.study_dir), Path(args.out), Path(args.sdtm) if args.sdtm else None,
                                   progress=lambda msg: status.update(msg))
        else:
            result = run_study(Path(args.study_dir), Path(args.out), edc=Path(args.edc) if args.edc else None,
                               encoding=args.encoding, progress=lambda msg: status.update(msg),
                               stylesheet=Path(args.stylesheet) if args.stylesheet else None)
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
        console.print("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
        return 0
    console.print(f"source rows: {result.source_rows}; excluded: "
                  + (", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none")
                  + f" (see {result.out_dir / 'reconciliation.csv'})")
    if result.deviations:
        console.print(f"[yellow]{len(result.deviations)} deviation(s) reported in {result.out_dir / 'report.json'}[/]")
    console.print("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
    return 0


def _cmd_define(args) -> int:
    from .pipeline import run_define

    for path in run_define(Path(args.study_dir), Path(args.out), Path(args.stylesheet) if args.stylesheet else None):
        console.print(f"{path} (schema-valid Define-XML 2.1) and {path.with_suffix('.html')}")
    return 0


def _cmd_validate(args) -> int:
    from .validate import validate_folder
    from .validate.report import write_reports

    result = validate_folder(Path(args.folder), define=Path(args.define) if args.define else None,
                             ct=Path(args.ct) if args.ct else None,
                             study_dir=Path(args.study) if args.study else None,
                             accepted=Path(args.accepted) if args.accepted else None,
                             baseline=Path(args.baseline) if args.baseline else None)
    out = write_reports(result, Path(args.out))
    counts = {s: result.count(s) for s in ("error", "warning", "info")}
    console.print(f"{result.kind} datasets in {args.folder}: {counts['error']} error(s), {counts['warning']} "
                  f"warning(s), {counts['info']} note(s); reports in {out} (report.html, report.json, report.csv, "
                  f"junit.xml)")
    return result.exit_code(args.fail_on)


def _cmd_example(args) -> int:
    from .example_study import write_example_study

    out = write_example_study(Path(args.out), n_subjects=args.subjects, seed=args.seed, odm=not args.no_odm)
    console.print(f"example study with {args.subjects} subjects written to {out} "
                  f"(run it with: cdisc-convert run {out} --out {out}/out)")
    return 0


def _cmd_explain(args) -> int:
    from .lineage import explain_record

    print(explain_record(Path(args.out), args.dataset, dict(kv.split("=", 1) for kv in args.keys)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdisc-convert", description="EDC exports to CDISC SDTM (XPT v5, Dataset-JSON)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="convert a study folder (study.yaml + specs) to SDTM")
    run.add_argument("study_dir")
    run.add_argument("--out", required=True, help="output folder (replaced only when the whole run succeeds)")
    run.add_argument("--edc", help="EDC export to read instead of the one study.yaml names (CSV folder or ODM .xml)")
    run.add_argument("--encoding", help="CSV encoding, e.g. latin-1 (default: the config's, utf-8 with or without BOM)")
    run.add_argument("--adam-only", action="store_true",
                     help="derive ADaM from an existing SDTM folder (OUT/sdtm, or --sdtm) into OUT/adam")
    run.add_argument("--sdtm", help="with --adam-only: the folder of SDTM .xpt files (default: OUT/sdtm)")
    run.add_argument("--stylesheet", help="XSLT for define.html (e.g. the CDISC Define-XML 2.1 stylesheet); "
                                          "default: the project's own template")
    run.set_defaults(func=_cmd_run)
    de = sub.add_parser("define", help="write define.xml + define.html for the datasets already in OUT")
    de.add_argument("study_dir")
    de.add_argument("--out", required=True, help="the run's output folder (holding sdtm/ and adam/)")
    de.add_argument("--stylesheet", help="XSLT for define.html instead of the project's own template")
    de.set_defaults(func=_cmd_define)
    va = sub.add_parser("validate", help="check SDTM or ADaM datasets: CT, visit windows, conformance")
    va.add_argument("folder", help="folder of .xpt (or Dataset-JSON) datasets")
    va.add_argument("--define", help="define.xml to check against (default: FOLDER/define.xml when present)")
    va.add_argument("--ct", help="CDISC CT package in NCI EVS tab-delimited format (file or folder)")
    va.add_argument("--out", default="validation-report", help="report folder (default: validation-report)")
    va.add_argument("--study", help="study folder, for the ADaM analysis windows of its specs")
    va.add_argument("--fail-on", choices=["error", "warning"], help="exit 1 when findings at or above this severity")
    va.add_argument("--baseline", help="last report.json: mark findings new, persisting or fixed")
    va.add_argument("--accepted", help="YAML list of accepted findings (rule, dataset, variable, value, justification)")
    va.set_defaults(func=_cmd_validate)
    ex = sub.add_parser("example", help="write the example study (specs + generated EDC export)")
    ex.add_argument("--subjects", type=int, default=18)
    ex.add_argument("--seed", type=int, default=20230717)
    ex.add_argument("--out", required=True)
    ex.add_argument("--no-odm", action="store_true", help="skip the ODM XML copy of the export")
    ex.set_defaults(func=_cmd_example)
    exp = sub.add_parser("explain", help="where each value of one output record came from")
    exp.add_argument("dataset")
    exp.add_argument("keys", nargs="+", help="KEY=VALUE pairs, e.g. USUBJID=NCT05948982-01-001 LBSEQ=3")
    exp.add_argument("--out", default="out", help="output folder of the run (default: out)")
    exp.set_defaults(func=_cmd_explain)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConversionError as exc:
        console.print("[red]error:[/] " + escape(str(exc)))
        return 2


if __name__ == "__main__":
    sys.exit(main())
