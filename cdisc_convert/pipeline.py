"""One run: read the EDC export, apply the specs, write SDTM with lineage and reconciliation.

``run_study(study_dir, out_dir)`` is what ``cdisc-convert run`` calls. Everything is written
into a temporary folder and moved to ``out_dir`` only when every dataset was written.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import platform
from dataclasses import dataclass, field
from importlib.metadata import version as _version
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from . import __version__
from .at_rest import FramesAtRest, at_rest
from .errors import ConversionError
from .memory import fewer_collections, release_freed_memory
from .parallel import Branch, FirstToCome, default_jobs
from .text import as_text, is_plain_text, on_unique, shared_text
from .metadata import Sdtmig, Terminology, load_sdtmig, load_terminology
from .readers import read_csv_forms, read_odm_forms, read_sas_forms
from .sdtm import trial_design
from .sdtm.engine import (Conversion, Excluded, MappedDomain, check_spec, derive_subject_level, derive_supplemental,
                          finalize_domain, load_specs, map_domain_records, screen_rows)
from .spec import DomainSpec, StudyConfig, load_domain_spec, load_study_config, load_study_identity
from .writers import Dataset, atomic_output, check_output_folder, write_dataset_json, write_xpt

STUDY_FILE = "study.yaml"
DEFAULT_CREATED = "2026-01-01T00:00:00"


@dataclass
class RunResult:
    out_dir: Path
    datasets: dict[str, Dataset]
    excluded: list[Excluded]
    deviations: list[dict]
    timings: dict[str, float] = field(default_factory=dict)
    source_rows: int = 0


def read_edc(study: StudyConfig, study_dir: Path, edc: Path | None = None, encoding: str | None = None
             ) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """Read the EDC export named by the config (or ``edc``): a CSV folder, an ODM file or SAS files."""
    path = Path(edc) if edc else (study_dir / study.edc.path)
    keys = (study.edc.site_field, study.edc.subject_field, study.edc.folder_field, study.edc.repeat_field)
    if path.is_file() and path.suffix.lower() == ".xml":
        return read_odm_forms(path, keys), [path]
    if not path.is_dir():
        raise ConversionError("EDC export not found", source=str(path))
    fmt = study.edc.format
    if fmt == "csv" and not any(path.glob("*.csv")) and any([*path.glob("*.sas7bdat"), *path.glob("*.xpt")]):
        fmt = "sas"  # a folder of SAS datasets passed with --edc
    if fmt == "odm" and study.edc.odm_file:
        odm = path / study.edc.odm_file
        return read_odm_forms(odm, keys), [odm]
    if fmt == "sas":
        files = sorted([*path.glob("*.sas7bdat"), *path.glob("*.xpt")])
        return read_sas_forms(path), files
    from .readers import csv_form_files

    return (read_csv_forms(path, encoding or study.edc.encoding, study.edc.forms, study.edc.not_forms),
            csv_form_files(path, study.edc.forms, study.edc.not_forms))


def convert_sdtm(study: StudyConfig, specs: list[DomainSpec], raw_forms: dict[str, pd.DataFrame],
                 progress: Callable[[str], None] = lambda s: None, ct: Terminology | None = None,
                 parallel: bool = False) -> tuple[Conversion, dict[str, Dataset], pd.DataFrame]:
    """Map all specs and derive all SDTM datasets; returns the conversion, datasets and SE.
    Once mapped, each of ``raw_forms`` keeps only its ``__src`` column (all reconciliation reads).
    ``parallel``: a small study's domains are mapped in two processes (see :func:`map_domains`)."""
    md = load_sdtmig()
    ct = ct if ct is not None else load_terminology()
    run = Conversion()
    forms, run.excluded = screen_rows(raw_forms, study)
    map_domains(specs, forms, study, ct, md, run, progress,
                parallel and sum(len(f) for f in forms.values()) <= PARALLEL_MAPPING_ROWS)
    del forms
    for form in raw_forms:  # mapped: each form keeps only its row ids, for reconciliation (2,000 subjects: -220 MB)
        raw_forms[form] = raw_forms[form][["__src"]]
    release_freed_memory()
    if "DM" not in run.domains:
        raise ConversionError("the study has no DM spec; DM is required for reference dates")
    progress("derive DM reference dates")
    derive_subject_level(run.domains["DM"], run, study, ct, pd.DataFrame())
    se = trial_design.subject_elements(run.domains["DM"].data, study)
    for name, mapped in run.domains.items():
        if name != "DM":
            progress(f"derive {name}")
            derive_subject_level(mapped, run, study, ct, se)
            release_freed_memory()
    for mapped in run.domains.values():
        derive_supplemental(mapped, run, study, ct, se)
    for mapped in run.domains.values():
        finalize_domain(mapped, md)
        release_freed_memory()  # the unsorted frame's pages
    progress("build datasets")
    datasets = _build_datasets(run, study, md, se)
    return run, datasets, se


# Up to this many source rows (after screening) a run with two processes maps its domains in both:
# the second sends its domains' working frames back pickled, which costs little for a small study
# (the example's 1,700 rows: LB's mapping, half the mapping's time, beside all the others).
PARALLEL_MAPPING_ROWS = 50_000


def map_domains(specs: list[DomainSpec], forms: dict[str, pd.DataFrame], study: StudyConfig, ct, md: Sdtmig,
                run: Conversion, progress: Callable[[str], None], parallel: bool = False) -> None:
    """Record-level mapping of every spec into ``run.domains``, in spec order.

    ``parallel``: the specs are split in two by an estimate of their work (sources and the records
    their tests make), and one part is mapped in a second process. Either way each domain's
    deviations and exclusions join the run in spec order, and the first failing spec's error is
    raised, as in one process."""
    def map_one(spec: DomainSpec, report: Callable[[str], None]) -> tuple[pd.DataFrame, Conversion]:
        report(f"map {spec.domain}")
        own = Conversion()  # this domain's deviations, exclusions and sources used
        frame = map_domain_records(spec, forms, study, ct, md, own)
        release_freed_memory()  # (no local keeps the last domain's first frame alive: QS, 300 MB at 2,000 subjects)
        return frame, own

    def map_part(part: list[int], report: Callable[[str], None]) -> dict[int, tuple]:
        """The specs of ``part`` in order, up to the first that fails (its error is kept, not raised)."""
        done: dict[int, tuple] = {}
        for i in part:
            try:
                done[i] = map_one(specs[i], report)
            except ConversionError as exc:
                done[i] = exc
                break
        return done

    if parallel and len(specs) > 1:
        def work(spec: DomainSpec) -> float:  # a source's rules cost more than its records, at this size
            return sum(1 + len(forms.get(s.form, ())) * max(1, len(s.tests or ())) / 2000 for s in spec.sources)
        mine, theirs, load = [], [], [0.0, 0.0]
        for i in sorted(range(len(specs)), key=lambda i: -work(specs[i])):  # the heaviest first, to the lighter part
            part = 0 if load[0] <= load[1] else 1
            (mine, theirs)[part].append(i)
            load[part] += work(specs[i])
        other = Branch(lambda report: map_part(sorted(theirs), report), progress)
        try:
            results = map_part(sorted(mine), progress)
        except BaseException:
            other.cancel()
            raise
        results.update(other.join())
    else:
        results = map_part(list(range(len(specs))), progress)
    for i, spec in enumerate(specs):  # in spec order, as one process would have met them
        result = results[i]  # a spec after a failed one of its part is not reached: the failure is met first
        if isinstance(result, ConversionError):
            raise result
        frame, own = result
        run.deviations += own.deviations
        run.excluded += own.excluded
        run.used_sources |= own.used_sources
        run.domains[spec.domain] = MappedDomain(spec, frame)


def _typed(frame: pd.DataFrame, name: str, md: Sdtmig, spec: DomainSpec | None) -> pd.DataFrame:
    """The domain's variables in SDTMIG order with their types: every Expected variable (empty
    when not collected), the Required and Permissible ones mapped. A variable neither the IG nor
    the SDTM model allows for the domain is an error (it belongs in SUPP--)."""
    cls = spec.class_ if spec else None
    meta = md.domain(name, cls)
    mapped = [c for c in frame.columns if not c.startswith(("__", "@"))]
    found = {c: md.allowed_variable(name, c, cls) for c in mapped}
    unknown = [c for c, v in found.items() if v is None]
    if unknown:
        where = spec.line_of("variables", unknown[0]) if spec else None
        raise ConversionError(f"variable {unknown[0]} is not a {name} variable in SDTMIG {md.version}; "
                              f"map it as a supplemental qualifier (supp:)", spec=where, dataset=name, field=unknown[0])
    expected = [v.name for v in meta.variables if v.core == "Exp" and v.name not in found]
    cols = md.place(meta, [*mapped, *expected])
    out = pd.DataFrame(index=frame.index)
    for c in cols:
        v = found.get(c) or meta.variable(c)
        if c not in frame.columns:
            out[c] = float("nan") if v.type == "Num" else ""
        elif v.type == "Num":
            out[c] = pd.to_numeric(frame[c].replace("", None), errors="coerce").astype(float)
        else:
            out[c] = shared_text(as_text(frame[c]))  # kept to the end of the run: one object per term
    return out.reset_index(drop=True)


def _labels(name: str, columns, md: Sdtmig, cls: str | None = None) -> dict[str, str]:
    found = {c: md.allowed_variable(name, c, cls) for c in columns}
    return {c: v.label for c, v in found.items() if v is not None}


def _dataset(name: str, frame: pd.DataFrame, md: Sdtmig, spec: DomainSpec | None = None) -> Dataset:
    cls = spec.class_ if spec else None
    meta = md.domain(name, cls)
    data = _typed(frame, name, md, spec)
    label = (spec.label if spec and spec.label else meta.label)
    seq = f"{name}SEQ" if f"{name}SEQ" in data.columns else None
    ids = ["USUBJID", seq] if seq else list(meta.keys)
    labels = _labels(name, data.columns, md, cls)
    for var, override in (spec.metadata.items() if spec else []):
        if override.label:
            labels[var] = override.label
    return Dataset(name, label, data, labels, list(meta.keys), ids)


def variable_metadata(datasets: dict[str, Dataset], specs: list[DomainSpec], md: Sdtmig) -> dict:
    """Dataset and variable metadata as written: label, type, length, order, codelist, origin
    and the spec line that made each variable (the input for Define-XML)."""
    by_domain = {s.domain: s for s in specs}
    out = {}
    for name, ds in datasets.items():
        spec = by_domain.get(name)
        cls = spec.class_ if spec else None
        meta = md.domain(name, cls)
        variables = []
        for order, col in enumerate(ds.data.columns, start=1):
            vm = md.allowed_variable(name, col, cls)
            rule = spec.variables.get(col) if spec else None
            override = spec.metadata.get(col) if spec else None
            if name.startswith("SUPP") or name in ("TS", "TA", "TE", "TV"):
                origin = "Assigned" if name.startswith("SUPP") or name != "TS" else "Protocol"
            elif rule is not None:
                origin = rule.origin
            elif col.endswith(("ORRES", "ORRESU")):
                origin = "Collected"
            else:
                origin = "Derived"
            series = ds.data[col]
            is_num = series.dtype.kind in "fiu"
            variables.append({
                "name": col, "label": ds.labels.get(col, ""), "type": "Num" if is_num else "Char",
                "length": 8 if is_num else ds.text_facts()[1][col],  # as the XPT writer measured it
                "order": order, "core": vm.core if vm else "", "role": vm.role if vm else "",
                "codelist": (override.codelist if override and override.codelist else (vm.codelist if vm else "")),
                "origin": override.origin if override and override.origin else origin,
                "spec": spec.line_of("variables", col) if spec and rule is not None else "",
            })
        out[name] = {"label": ds.label, "class": meta.cls, "keys": ds.keys, "records": len(ds.data),
                     "variables": variables}
    return out


def _sorted(frame: pd.DataFrame, keys) -> pd.DataFrame:
    keys = [k for k in keys if k in frame.columns]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True) if keys else frame


def _build_datasets(run: Conversion, study: StudyConfig, md: Sdtmig, se: pd.DataFrame) -> dict[str, Dataset]:
    datasets: dict[str, Dataset] = {}
    for name, mapped in run.domains.items():
        datasets[name] = _dataset(name, mapped.data, md, mapped.spec)
        if mapped.supp is not None:
            datasets[f"SUPP{name}"] = _dataset(f"SUPP{name}", mapped.supp, md)
        _domain_lineage(name, mapped, datasets, run)
        if name != "DM":  # the typed dataset and its lineage carry on; DM's dates are still needed below
            mapped.data, mapped.supp = mapped.data.iloc[:0].copy(), None  # a copy: a view would keep it alive
    se = se.copy()
    if len(se):
        se = _sorted(se, md.domain("SE").keys)
        se["SESEQ"] = se.groupby("USUBJID").cumcount().astype(float) + 1
        from .sdtm.derive import study_day
        rf = se["USUBJID"].map(run.domains["DM"].data.set_index("USUBJID")["RFSTDTC"])
        se["SESTDY"], se["SEENDY"] = study_day(se["SESTDTC"], rf), study_day(se["SEENDTC"], rf)
        datasets["SE"] = _dataset("SE", se, md)
    visit_days = {float(v.visitnum): v.day for v in study.visits}
    sv = trial_design.subject_visits({n: d.data for n, d in datasets.items() if not n.startswith("SUPP")}, visit_days)
    if len(sv):
        from .sdtm.derive import study_day
        rf = sv["USUBJID"].map(run.domains["DM"].data.set_index("USUBJID")["RFSTDTC"])
        sv["VISITDY"] = sv["VISITNUM"].map(visit_days).astype(float)
        sv["SVSTDY"], sv["SVENDY"] = study_day(sv["SVSTDTC"], rf), study_day(sv["SVENDTC"], rf)
        datasets["SV"] = _dataset("SV", sv, md)
    relrec = trial_design.related_records(study, {n: d.data for n, d in datasets.items()})
    if len(relrec):
        datasets["RELREC"] = _dataset("RELREC", relrec, md)
    dm = run.domains["DM"].data
    for name, builder in (("TS", lambda s: trial_design.trial_summary(s, dm)), ("TA", trial_design.trial_arms),
                          ("TE", trial_design.trial_elements), ("TV", trial_design.trial_visits)):
        frame = builder(study)
        if len(frame):
            datasets[name] = _dataset(name, _sorted(frame, md.domain(name).keys), md)
    return dict(sorted(datasets.items()))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reconciliation(raw_forms: dict[str, pd.DataFrame], run: Conversion,
                   record_sources: dict[str, set[str]]) -> pd.DataFrame:
    """Every source row: mapped (into which datasets) or excluded (with the reason)."""
    reasons = {e.source: e.reason for e in run.excluded}
    rows = []
    for form in sorted(raw_forms):
        for src in raw_forms[form]["__src"]:
            if src in record_sources:  # a row filtered out of one domain may still feed another
                rows.append((form, src, "mapped", " ".join(sorted(record_sources[src]))))
            elif src in reasons:
                rows.append((form, src, "excluded", reasons[src]))
            else:
                rows.append((form, src, "excluded", "form not mapped by any spec"))
    return pd.DataFrame(rows, columns=["form", "source", "status", "detail"])


def _domain_lineage(name: str, mapped: MappedDomain, datasets: dict[str, Dataset], run: Conversion) -> None:
    """Record ids and EDC form/row/field of a domain's (and its SUPP's) records into ``run.lineage``;
    which datasets each EDC row fed into ``run.record_sources``."""
    for ds_name, frame in ((name, mapped.data), (f"SUPP{name}", mapped.supp)):
        if frame is None:
            continue
        ids = [c for c in datasets[ds_name].record_ids or [] if c in frame.columns]
        lin = frame[ids].copy()
        for c in ids:
            if lin[c].dtype.kind == "f":
                lin[c] = as_text(lin[c])
            elif lin[c].dtype == object or isinstance(lin[c].dtype, pd.StringDtype):  # USUBJID: one object per subject
                lin[c] = shared_text(lin[c])
        if "QNAM" in frame.columns:
            lin["QNAM"] = frame["QNAM"]
        lin["form"] = frame["__form"].values
        lin["source"] = frame["__src"].values
        lin["field"] = frame["__field"].values
        run.lineage[ds_name] = lin
        for src in pd.unique(frame["__src"]):
            for s in str(src).split(" + "):
                run.record_sources.setdefault(s, set()).add(ds_name)


def _rule_lineage(specs: list[DomainSpec]) -> dict:
    """Per dataset and variable: the spec rule(s) that made it, with file:line."""
    out = {}
    for spec in specs:
        rules = {}
        for name, rule in spec.variables.items():
            rules.setdefault(name, []).append({"spec": spec.line_of("variables", name),
                                               "rule": rule.model_dump(exclude_none=True, by_alias=True,
                                                                       exclude_defaults=True)})
        for i, source in enumerate(spec.sources):
            for name, rule in source.variables.items():
                rules.setdefault(name, []).append({"spec": spec.line_of("sources", i, "variables", name),
                                                   "form": source.form,
                                                   "rule": rule.model_dump(exclude_none=True, by_alias=True,
                                                                           exclude_defaults=True)})
            for t, test in enumerate(source.tests or []):
                rules.setdefault("@tests", []).append({"spec": spec.line_of("sources", i, "tests", t),
                                                       "form": source.form, "testcd": test.testcd,
                                                       "result": test.result, "unit": test.unit})
        for k, supp in enumerate(spec.supp):
            rules.setdefault(f"QNAM={supp.qnam}", []).append({"spec": spec.line_of("supp", k),
                                                              "rule": supp.rule.model_dump(exclude_none=True,
                                                                                           by_alias=True,
                                                                                           exclude_defaults=True)})
        out[spec.domain] = rules
    return out


def _csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text, byte for byte what ``to_csv(index=False, lineterminator="\\n")`` gives
    (minimal quoting), built column-wise: each distinct text value is quoted once and rows are joined
    in C; numbers are formatted by pandas itself. Lineage files run to millions of lines."""
    if frame.empty or len(frame.columns) < 2:  # one column: csv quotes an empty field; pandas does it all
        buf = io.StringIO()
        frame.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        return buf.getvalue()
    columns = []
    for col in frame.columns:
        values = frame[col]
        if isinstance(values.dtype, pd.StringDtype):  # pandas' str columns: missing is written as nothing
            plain = values.fillna("").astype(object)
            if "\r" not in "".join(pd.unique(plain.to_numpy())):  # pandas leaves a str column's CR unquoted
                values = plain
        if values.dtype == object and is_plain_text(values):
            columns.append(on_unique(values, lambda u: u.map(_csv_field)).tolist())
        else:  # numbers, missing values, other types: pandas' own formatting of this column
            buf = io.StringIO()
            values.to_frame().to_csv(buf, index=False, header=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            # alone in a row, an empty field is written as "" (so the row is not blank); beside others, as nothing
            lines = ["" if line == '""' else line for line in buf.getvalue().split("\n")[:-1]]
            if len(lines) != len(values):  # a value spanning lines: leave it all to pandas
                buf = io.StringIO()
                frame.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
                return buf.getvalue()
            columns.append(lines)
    header = ",".join(_csv_field(str(c)) for c in frame.columns)
    return header + "\n" + "\n".join(map(",".join, zip(*columns))) + "\n"


CSV_CHUNK_ROWS = 50_000  # about 30 MB of text and row lists at a time


def write_csv(frame: pd.DataFrame, path: Path, chunk_rows: int | None = None) -> None:
    """``frame`` as CSV at ``path`` (the bytes of ``to_csv(index=False)``), written in chunks of rows:
    the text of a million-record lineage file never exists whole in memory."""
    chunk_rows = chunk_rows or CSV_CHUNK_ROWS
    with open(path, "w", encoding="utf-8") as fh:
        if len(frame) <= chunk_rows:
            fh.write(_csv_text(frame))
            return
        for start in range(0, len(frame), chunk_rows):
            text = _csv_text(frame.iloc[start:start + chunk_rows])
            fh.write(text if not start else text[text.index("\n") + 1:])  # the header once


def _csv_field(text: str) -> str:
    """One CSV field with minimal quoting (as the csv module writes it)."""
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def derive_and_write_adam(study_dir: Path, sdtm: Mapping[str, pd.DataFrame], adam_dir: Path, created: str,
                          studyid: str, progress: Callable[[str], None], timings: dict[str, float]
                          ) -> dict[str, Dataset]:
    """Derive the study's ADaM datasets (specs in ``STUDY/adam/``) and write them to ``adam_dir``."""
    import time

    from .adam.engine import derive_adam
    from .adam.output import adam_dataset
    from .adam.spec import load_adam_specs

    specs = load_adam_specs(study_dir / "adam")
    if not specs:
        return {}
    per_dataset: dict[str, float] = {}
    adam_dir.mkdir(parents=True, exist_ok=True)
    (adam_dir / "lineage").mkdir(exist_ok=True)
    written: dict[str, Dataset] = {}
    writing = 0.0

    def finish(spec, frame: pd.DataFrame) -> None:
        """Write a dataset as soon as it is derived: its working frame goes before the next one grows."""
        nonlocal writing
        t = time.perf_counter()
        handed = [frame]  # derive_adam handed over the working frame's only reference: adam_dataset
        del frame  # lets each of its columns go as the written one is made, the rest before writing
        ds, lineage = adam_dataset(spec, handed)
        release_freed_memory()
        progress(f"write {ds.name}")
        write_xpt(ds, adam_dir, created)
        write_dataset_json(ds, adam_dir, created, studyid, __version__, "ADAM")
        write_csv(lineage, adam_dir / "lineage" / f"{ds.name.lower()}.csv")
        written[ds.name] = ds
        del lineage
        ds.put_at_rest()  # until define.xml and validation: the next dataset derives meanwhile
        release_freed_memory()
        writing += time.perf_counter() - t

    derive_adam(specs, sdtm, progress, per_dataset, finish=finish)
    for ds in written.values():
        ds.restore()
    for name, seconds in per_dataset.items():
        timings[f"adam_{name.lower()}"] = seconds
    timings["write_adam"] = writing
    return {spec.dataset: written[spec.dataset] for spec in specs}  # in the specs' order


def read_sdtm_folder(folder: Path) -> dict[str, pd.DataFrame]:
    """SDTM datasets from ``*.xpt`` files (for ``--adam-only``): character missing as ``""``."""
    from .validate import load_datasets

    if not any(Path(folder).glob("*.xpt")):
        raise ConversionError("no SDTM .xpt datasets found", source=str(folder))
    return load_datasets(Path(folder))[0]


@fewer_collections
def run_adam_only(study_dir: Path, out_dir: Path, sdtm_dir: Path | None = None,
                  progress: Callable[[str], None] = lambda s: None) -> RunResult:
    """Derive ADaM from an existing SDTM folder into ``out_dir/adam`` (replaced all or nothing)."""
    import time

    t0 = time.perf_counter()
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    check_output_folder(out_dir / "adam", (study_dir,))
    study = load_study_identity(study_dir / STUDY_FILE)
    # compact while ADaM derives: each domain is made whole again only when a step reads it
    sdtm = FramesAtRest({n: at_rest(f) for n, f in read_sdtm_folder(Path(sdtm_dir) if sdtm_dir
                                                                  else out_dir / "sdtm").items()})
    timings: dict[str, float] = {"read": time.perf_counter() - t0}
    created = str(study.study.get("created", DEFAULT_CREATED))
    with atomic_output(out_dir / "adam") as tmp:
        datasets = derive_and_write_adam(study_dir, sdtm, tmp, created, study.studyid, progress, timings)
        if not datasets:
            raise ConversionError("the study has no ADaM specs (STUDY/adam/*.yaml)", source=str(study_dir))
    timings["total"] = time.perf_counter() - t0
    return RunResult(out_dir, datasets, [], [], timings, 0)


def run_define(study_dir: Path, out_dir: Path, stylesheet: Path | None = None, ct=None) -> list[Path]:
    """``cdisc-convert define``: Define-XML for the datasets already in ``out_dir``."""
    from .define_xml import write_study_defines

    study = load_study_config(Path(study_dir) / STUDY_FILE)
    created = str(study.study.get("created", DEFAULT_CREATED))
    crf_pages = None
    if (Path(out_dir) / "acrf.pdf").is_file():  # the aCRF a run wrote: CRF origins point to its pages
        from .acrf import planned_pages
        crf_pages = planned_pages(study, Path(study_dir), load_specs(Path(study_dir)))
    return write_study_defines(Path(study_dir), Path(out_dir), study, created, stylesheet,
                               ct=load_terminology(ct, Path(study_dir)), crf_pages=crf_pages)


def run_acrf(study_dir: Path, out_dir: Path, edc: Path | None = None):
    """``cdisc-convert acrf``: the annotated CRF (``out_dir/acrf.pdf`` + ``acrf.html``) from the
    export's CRF design and the study's SDTM specs."""
    from .acrf import load_crf_design, visit_forms, write_acrf

    study_dir, out_dir = Path(study_dir), Path(out_dir)
    if not study_dir.is_dir():
        raise ConversionError("study folder not found", source=str(study_dir))
    study = load_study_config(study_dir / STUDY_FILE)
    specs = load_specs(study_dir)
    design = load_crf_design(study, study_dir, edc)
    if design is None:
        raise ConversionError("the EDC export carries no CRF design (ODM ItemDefs with Question text, or a data "
                              "dictionary named by edc.data_dictionary in study.yaml)",
                              source=str(Path(edc) if edc else study_dir / study.edc.path))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"the output {out_dir} is a file, not a folder", source=str(out_dir))
    raw_forms, _files = read_edc(study, study_dir, edc)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_acrf(out_dir, design, specs, study, visit_forms(raw_forms, study), __version__)


@contextlib.contextmanager
def _naming_edc_rows(name: str, ds: Dataset, lineage: dict[str, pd.DataFrame]):
    """An XPT rule broken by a record: the error names the EDC row behind it when lineage has it."""
    try:
        yield
    except ConversionError as exc:
        row, lin = getattr(exc, "row", None), lineage.get(name)
        if row is not None and lin is not None and len(lin) == len(ds.data) and not exc.source:
            exc.source = str(lin["source"].iloc[row])
            exc.args = (str(exc),)
        raise


def check_sdtm_datasets(datasets: dict[str, Dataset], lineage: dict[str, pd.DataFrame]) -> None:
    """The XPT v5 rules of every dataset, checked once; their text facts are kept on the datasets
    for the writers, define.xml and the validator (and, made before a second process starts, shared)."""
    for name, ds in datasets.items():
        with _naming_edc_rows(name, ds, lineage):
            ds.text_facts()


def write_sdtm_files(folder: Path, datasets: dict[str, Dataset], lineage: dict[str, pd.DataFrame],
                     recon: pd.DataFrame, created: str, studyid: str, progress: Callable[[str], None],
                     timings: dict[str, float]) -> None:
    """``folder`` (OUT/sdtm): each dataset as XPT and Dataset-JSON; beside it OUT/lineage/*.csv and
    OUT/reconciliation.csv. An XPT rule broken by a record names the EDC row behind it."""
    import time

    folder.mkdir()
    t = time.perf_counter()
    for name, ds in datasets.items():
        progress(f"write {name}")
        with _naming_edc_rows(name, ds, lineage):
            write_xpt(ds, folder, created)
    timings["write_xpt"] = time.perf_counter() - t
    t = time.perf_counter()
    for ds in datasets.values():
        write_dataset_json(ds, folder, created, studyid, __version__)
    timings["write_json"] = time.perf_counter() - t
    lin_dir = folder.parent / "lineage"
    lin_dir.mkdir()
    for name, frame in lineage.items():
        write_csv(frame, lin_dir / f"{name.lower()}.csv")
    write_csv(recon, folder.parent / "reconciliation.csv")


def _validate_and_report(out: Path, model: str, loaded, reference, study_dir: Path, terminology) -> dict[str, int]:
    """Validate OUT/<model> (its datasets already in memory) and write OUT/validation/<model>; the counts."""
    from .validate import validate_folder
    from .validate.report import write_reports

    checked = validate_folder(out / model, study_dir=study_dir, ct=terminology, preloaded=loaded,
                              reference_preloaded=reference)
    checked.folder = Path(model)  # relative: the report does not depend on where OUT is
    write_reports(checked, out / "validation" / model)
    counts = {s: checked.count(s) for s in ("error", "warning", "info")}
    del checked
    release_freed_memory()
    return counts


@fewer_collections
def run_study(study_dir: Path, out_dir: Path, edc: Path | None = None, encoding: str | None = None,
              progress: Callable[[str], None] = lambda s: None, stylesheet: Path | None = None, ct=None,
              jobs: int | None = None) -> RunResult:
    """Convert a study: read, map, derive, write ``out_dir/sdtm`` (and ``out_dir/adam`` when the
    study has ADaM specs) plus manifest, lineage and reconciliation, all or nothing.

    ``jobs``: 2 writes and validates SDTM in a second process while ADaM is derived (the default on
    a Linux machine with two cores), 1 does it all in this process; the files are the same bytes."""
    import time

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ConversionError("study folder not found", source=str(study_dir))
    check_output_folder(Path(out_dir), (study_dir, *([Path(edc)] if edc else [])))
    study = load_study_config(study_dir / STUDY_FILE)
    check_output_folder(Path(out_dir), (study_dir, Path(edc) if edc else study_dir / study.edc.path))
    specs = load_specs(study_dir)
    expect = getattr(progress, "expect", None)
    if expect is not None:  # the steps this run will report, for a progress count and ETA
        from .adam.spec import load_adam_specs
        adam_steps = sum(len(s.steps) + 1 for s in load_adam_specs(study_dir / "adam")) \
            if (study_dir / "adam").is_dir() else 0
        expect(1 + 3 * len(specs) + sum(1 for s in specs if s.supp) + 10 + adam_steps + 2
               + 2 * int(bool(adam_steps))  # validation and define.xml: SDTM and ADaM apart
               + int(bool(study.edc.data_dictionary or study.edc.odm_file)))  # the aCRF
    progress("read EDC export")
    raw_forms, input_files = read_edc(study, study_dir, edc, encoding)
    from .acrf import load_crf_design, visit_forms
    crf_design = load_crf_design(study, study_dir, edc)  # the EDC's CRF design, when the export carries one
    visits = visit_forms(raw_forms, study) if crf_design is not None else []
    timings["read"] = time.perf_counter() - t0
    with atomic_output(Path(out_dir)) as tmp:
        # the aCRF needs the specs and the CRF design only: drawn in a second process while SDTM
        # is mapped (the core would idle), unless the run is to use one
        crf_branch = Branch(lambda report: _draw_acrf(tmp, crf_design, specs, study, visits, report), progress,
                            parallel=(jobs or default_jobs()) > 1) if crf_design is not None else None
        try:
            def sdtm_progress(message: str) -> None:
                if crf_branch is not None:
                    crf_branch.poll()
                progress(message)

            result = _run_in(tmp, study_dir, study, specs, raw_forms, input_files, timings, ct, sdtm_progress,
                             stylesheet, jobs, crf_branch)
        except Exception as failed:
            if crf_branch is not None:  # its error first, as in one process, where it is drawn first
                try:
                    crf_branch.join()
                except Exception as first:
                    raise first from None
            raise failed
        except BaseException:
            if crf_branch is not None:
                crf_branch.cancel()
            raise
    datasets, adam, run, recon_summary = result
    for ds in datasets.values():  # the caller gets DataFrames
        ds.restore()
    timings["total"] = time.perf_counter() - t0
    return RunResult(Path(out_dir), {**datasets, **adam}, run.excluded, run.deviations, timings,
                     recon_summary["source_rows"])


def _draw_acrf(tmp: Path, crf_design, specs, study, visits, report: Callable[[str], None]):
    """The annotated CRF (``acrf.pdf``, ``acrf.html``); where each annotation landed, for define.xml
    and the spec workbook to link to."""
    from .acrf import plan_acrf, write_acrf

    crf_plan = plan_acrf(crf_design, specs)
    report("annotated CRF")
    write_acrf(tmp, crf_design, specs, study, visits, __version__, crf_plan)
    return crf_plan.where


def _run_in(tmp: Path, study_dir: Path, study: StudyConfig, specs: list[DomainSpec], raw_forms: dict[str, pd.DataFrame],
            input_files: list[Path], timings: dict, ct, progress: Callable[[str], None], stylesheet, jobs,
            crf_branch: Branch | None):
    """:func:`run_study` from the mapping on, writing into its temporary folder ``tmp``; empties
    ``raw_forms`` once they are mapped."""
    import time

    validation: dict[str, dict[str, int]] = {}
    t1 = time.perf_counter()
    terminology = load_terminology(ct, study_dir)
    run, datasets, _se = convert_sdtm(study, specs, raw_forms, progress, terminology,
                                      parallel=(jobs or default_jobs()) > 1)
    lineage = run.lineage
    recon = reconciliation(raw_forms, run, run.record_sources)
    run.record_sources.clear()
    recon_summary = {"source_rows": int(len(recon)), "mapped": int((recon.status == "mapped").sum()),
                     "excluded": recon[recon.status == "excluded"].groupby("detail").size().to_dict()}
    run.domains.clear()  # the typed datasets carry on; the working frames are no longer needed
    raw_forms.clear()  # the caller's dict: its forms' row ids go now
    release_freed_memory()  # the working frames' pages: writing starts from the typed datasets' size
    timings["map_and_derive"] = time.perf_counter() - t1
    created = str(study.study.get("created", DEFAULT_CREATED))
    # the XPT v5 rules, checked once (an error names its EDC row); both processes share the text facts
    check_sdtm_datasets(datasets, lineage)
    from .validate import in_memory
    sdtm_loaded = in_memory(datasets)
    metadata = variable_metadata(datasets, specs, load_sdtmig())  # for metadata.json and the workbook
    # where each annotation landed: define.xml and the workbook link to the aCRF's pages
    crf_pages = crf_branch.join() if crf_branch is not None else None

    def sdtm_branch(report: Callable[[str], None]) -> dict:
        """SDTM files, their validation and define.xml: everything that needs the SDTM datasets
        but not ADaM (in a second process when the run has two cores)."""
        done: dict = {"timings": {}, "validation": {}}
        write_sdtm_files(tmp / "sdtm", datasets, lineage, recon, created, study.studyid, report, done["timings"])
        lineage.clear()  # written: what follows does not need them, so their memory goes now
        release_freed_memory()
        report("validate SDTM")
        t = time.perf_counter()
        done["validation"]["sdtm"] = _validate_and_report(tmp, "sdtm", sdtm_loaded, sdtm_loaded, study_dir,
                                                          terminology)
        done["timings"]["validate_sdtm"] = time.perf_counter() - t
        (tmp / "lineage" / "rules.json").write_text(json.dumps(_rule_lineage(specs), indent=1, sort_keys=True)
                                                    + "\n")
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
        # after SDTM validation, as in one process: the validator reads a define.xml it finds
        report("define.xml SDTM")
        t = time.perf_counter()
        from .define_xml import from_datasets, write_sdtm_define
        write_sdtm_define(study_dir, tmp, study, created, stylesheet, from_datasets(datasets), terminology,
                          crf_pages)
        done["timings"]["define_sdtm"] = time.perf_counter() - t
        release_freed_memory()  # define's XML trees
        if workbook.take():
            write_workbook(report)
        return done

    def write_workbook(report: Callable[[str], None]) -> None:
        report("spec.xlsx")
        from .spec_workbook import write_spec_workbook
        write_spec_workbook(study_dir, tmp / "spec.xlsx", metadata, terminology=terminology, crf_pages=crf_pages)

    # the spec workbook needs neither ADaM nor SDTM's files: written by the branch that ends first
    workbook = FirstToCome()

    parallel = (jobs or default_jobs(sum(len(ds.data) for ds in datasets.values()))) > 1
    branch = Branch(sdtm_branch, progress, parallel=parallel)
    if not branch.forked:
        try:
            branch.join()  # it ran already: an error of its stops the run before ADaM
        except BaseException:
            workbook.close()
            raise
    del recon
    # written (or being written by the branch, from its own copy): while ADaM is derived and
    # validated, SDTM waits compact; ADaM takes the domains it reads, its validation their lineage
    for ds in datasets.values():
        ds.put_at_rest()
    sdtm_at_rest = FramesAtRest({n: d.data for n, d in datasets.items()})
    sdtm_loaded = (sdtm_at_rest, *sdtm_loaded[1:])
    release_freed_memory()  # the pointers of SDTM's text columns
    try:
        def adam_progress(message: str) -> None:  # the SDTM branch's messages, as they come, then ours
            branch.poll()
            progress(message)

        if branch.forked:  # the child writes its copy of the lineage; this one is not needed here
            lineage.clear()
            release_freed_memory()
        adam = derive_and_write_adam(study_dir, sdtm_at_rest, tmp / "adam", created, study.studyid,
                                     adam_progress, timings)
        release_freed_memory()  # ADaM's working frames
        if adam:
            adam_progress("define.xml ADaM")
            t4 = time.perf_counter()
            from .define_xml import from_datasets, write_adam_define
            write_adam_define(study_dir, tmp, study, created, stylesheet, from_datasets(adam), terminology)
            timings["define_adam"] = time.perf_counter() - t4
            release_freed_memory()  # define's XML trees: hundreds of MB of free pages at 2,000 subjects
            adam_progress("validate ADaM")
            t5 = time.perf_counter()
            validation["adam"] = _validate_and_report(tmp, "adam", in_memory(adam), sdtm_loaded, study_dir,
                                                      terminology)
            timings["validate_adam"] = time.perf_counter() - t5
        if workbook.take():
            write_workbook(adam_progress)
    except Exception as failed:
        # the SDTM branch's error comes first (a single process would have met it first): wait for it
        try:
            branch.join()
        except Exception as first:
            raise first from None
        raise failed
    except BaseException:  # interrupted: stop the branch too
        branch.cancel()
        raise
    finally:
        workbook.close()
    done = branch.join()  # its error, if any, is raised here
    timings.update(done["timings"])
    validation = {**done["validation"], **validation}
    report = {"summary": {**recon_summary, "deviations": len(run.deviations)}, "deviations": run.deviations}
    (tmp / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    manifest = {
        "tool": {"name": "cdisc_convert", "version": __version__},
        "versions": {"python": platform.python_version(), "pandas": pd.__version__,
                     "pyreadstat": _version("pyreadstat"), "sdtmig": load_sdtmig().version},
        "controlled_terminology": {"packages": terminology.packages, "source": terminology.source,
                                   "study_terminology": terminology.study_file},
        "study": study.studyid,
        "inputs": [{"path": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size} for p in input_files],
        "specs": [{"path": p.name, "sha256": _sha256(p)} for p in sorted(study_dir.glob("*.yaml"))],
        "datasets": {name: {"records": len(ds.data), "variables": len(ds.data.columns)}
                     for name, ds in {**datasets, **adam}.items()},
        "reconciliation": report["summary"],
        "validation": validation,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return datasets, adam, run, recon_summary
