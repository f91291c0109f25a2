"""The validator on the example study's output and on deliberately broken copies of it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.validate import validate_folder
from cdisc_convert.metadata.ct import read_package

KEY = ["rule", "dataset", "variable", "record", "usubjid", "value"]


@pytest.fixture(scope="module")
def clean(example_out):
    return validate_folder(example_out / "sdtm").findings


def test_example_output_has_no_error_findings(example_out, clean):
    assert (clean.severity == "error").sum() == 0
    adam = validate_folder(example_out / "adam", study_dir=Path(__file__).parent.parent / "mappings" / "nct05948982")
    assert (adam.findings.severity == "error").sum() == 0


def test_the_deliberate_out_of_window_visit_is_reported_with_days_out(clean):
    late = clean[(clean.rule == "VW0002") & (clean.message.str.contains("WEEK 12"))]
    assert len(late) > 0 and (late.days_out == 4).all()


def rewrite(folder: Path, name: str, change) -> None:
    path = folder / f"{name.lower()}.xpt"
    frame, meta = pyreadstat.read_xport(str(path))
    for col in frame.columns:
        if frame[col].dtype.kind not in "fiu":
            frame[col] = frame[col].fillna("").astype(object)
    frame = change(frame)
    pyreadstat.write_xport(frame, str(path), file_label=meta.file_label, table_name=meta.table_name,
                           column_labels=meta.column_names_to_labels, file_format_version=5)


def broken_copy(example_out, tmp_path) -> Path:
    folder = tmp_path / "sdtm"
    shutil.copytree(example_out / "sdtm", folder)
    return folder


def new_findings(clean, folder):
    after = validate_folder(folder).findings
    merged = after[KEY].astype(str).merge(clean[KEY].astype(str).drop_duplicates(), how="left", indicator=True)
    added = after[(merged["_merge"] == "left_only").to_numpy()]
    gone = clean[KEY].astype(str).merge(after[KEY].astype(str).drop_duplicates(), how="left", indicator=True)
    return added, int((gone["_merge"] == "left_only").sum())


def set_cell(frame, row, col, value):
    frame.loc[row, col] = value
    return frame


def first(frame, mask):
    return frame.index[mask][0]


def end_before_start(f):
    row = first(f, (f.AEENDTC.str.len() == 10) & (f.AESTDY > 3))
    f.loc[row, "AEENDTC"] = (pd.Timestamp(f.loc[row, "AESTDTC"][:10]) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    f.loc[row, "AEENDY"] = f.loc[row, "AESTDY"] - 1
    return f


def second_baseline(f):
    for _, flagged in f[f.LBLOBXFL == "Y"].iterrows():
        others = (f.USUBJID == flagged.USUBJID) & (f.LBTESTCD == flagged.LBTESTCD) & (f.LBLOBXFL != "Y")
        if others.any():
            return set_cell(f, first(f, others), "LBLOBXFL", "Y")
    raise AssertionError("no test with a second record")


def participation_ends_early(f):
    return set_cell(f, 0, "RFPENDTC", f.loc[0, "RFSTDTC"][:10])


def duplicated_record(f):
    row = f.iloc[[first(f, f.LBLOBXFL != "Y")]].assign(LBSEQ=f.LBSEQ.max() + 1)
    return pd.concat([f, row], ignore_index=True)


def epoch_of_another_element(f):
    return set_cell(f, first(f, (f.EPOCH == "TREATMENT") & (f.LBDTC.str.len() >= 10)), "EPOCH", "FOLLOW-UP")


def contradicting_nrind(f):
    return set_cell(f, first(f, (f.LBNRIND == "NORMAL") & f.LBSTNRHI.notna()), "LBNRIND", "HIGH")


def long_test_name(f):
    f.loc[f.LBTESTCD == "SDF1", "LBTEST"] = "Stromal Cell-Derived Factor 1 Concentration"  # a sponsor code
    return f


CASES = {
    "wrong SEX": ("DM", lambda f: set_cell(f, 0, "SEX", "X"), "CT0001", "SEX", 1),
    "misspelled LBTESTCD": ("LB", lambda f: set_cell(f, f.index[f.LBTESTCD == "ALT"][0], "LBTESTCD", "ALTT"),
                            "CT0003", "LBTESTCD", None),
    "non-ISO date": ("LB", lambda f: set_cell(f, 0, "LBDTC", "2024/01/12"), "CF0004", "LBDTC", 1),
    "duplicate --SEQ": ("LB", lambda f: set_cell(f, 1, "LBSEQ", f.loc[0, "LBSEQ"]), "CF0005", "LBSEQ", 2),
    "day 0": ("LB", lambda f: set_cell(f, 0, "LBDY", 0.0), "CF0006", "LBDY", 1),
    "SUPP-- record without parent": ("SUPPAE", lambda f: set_cell(f, 0, "IDVARVAL", "9"), "CF0011", "IDVARVAL", 1),
    "orphan USUBJID": ("AE", lambda f: pd.concat([f, f.iloc[[0]].assign(USUBJID="NCT05948982-99-999")],
                                                 ignore_index=True), "CF0007", "USUBJID", None),
    "wrong DOMAIN": ("AE", lambda f: set_cell(f, 0, "DOMAIN", "LB"), "CF0013", "DOMAIN", 1),
    "duplicated record": ("LB", duplicated_record, "CF0014", "LBSEQ", None),
    "Expected variable removed": ("LB", lambda f: f.drop(columns="LBORNRLO"), "CF0015", "LBORNRLO", 0),
    "NOT DONE without reason": ("LB", lambda f: set_cell(f, first(f, f.LBSTAT == "NOT DONE"), "LBREASND", ""),
                                "CF0017", "LBREASND", None),
    "AESTDTC after AEENDTC": ("AE", end_before_start, "DT0001", "AESTDTC", None),
    "RFSTDTC after RFENDTC": ("DM", lambda f: set_cell(f, 0, "RFENDTC", "2000-01-01"), "DT0001", "RFSTDTC", 1),
    "records after RFPENDTC": ("DM", participation_ends_early, "DT0002", "RFPENDTC", 1),
    "two baseline flags": ("LB", second_baseline, "FL0001", "LBLOBXFL", None),
    "AESER without criterion": ("AE", lambda f: set_cell(f, first(f, (f.AESER == "N") & (f.AESHOSP != "Y")),
                                                         "AESER", "Y"), "FL0002", "AESER", None),
    "DTHFL without DS death": ("DM", lambda f: set_cell(f, 0, "DTHFL", "Y"), "DE0001", "DTHFL", 1),
    "DS death without DTHFL": ("DS", lambda f: set_cell(f, first(f, f.DSDECOD == "COMPLETED"), "DSDECOD", "DEATH"),
                               "DE0001", "DSDECOD", None),
    "impossible AGE": ("DM", lambda f: set_cell(f, 0, "AGE", 150.0), "DM0001", "AGE", 1),
    "EPOCH against SE": ("LB", epoch_of_another_element, "EP0001", "EPOCH", None),
    "dose not planned": ("EX", lambda f: set_cell(f, 0, "EXDOSE", 3.0), "EX0001", "EXDOSE", 1),
    "NRIND against the range": ("LB", contradicting_nrind, "RN0001", "LBNRIND", None),
    "SSTDTC removed": ("TS", lambda f: f[f.TSPARMCD != "SSTDTC"].reset_index(drop=True), "TS0001", "TSPARMCD", 0),
    "PCLAS removed": ("TS", lambda f: f[f.TSPARMCD != "PCLAS"].reset_index(drop=True), "TS0002", "TSPARMCD", 0),
}
# a fault that also changes what define.xml states is found by that rule too
ALSO = {"long test name": {"CF0012"}}
CASES["long test name"] = ("LB", long_test_name, "CF0016", "LBTEST", None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_break_is_found_by_exactly_its_rule(example_out, clean, tmp_path, case):
    dataset, change, rule, variable, record = CASES[case]
    folder = broken_copy(example_out, tmp_path)
    rewrite(folder, dataset, change)
    added, gone = new_findings(clean, folder)
    assert len(added) > 0, case
    assert set(added.rule) == {rule} | ALSO.get(case, set()), added[["rule", "dataset", "variable", "record", "message"]].head()
    datasets = set(added[added.rule == rule].dataset)
    # an early RFPENDTC is reported on DM and on every later record of the subject
    assert (dataset in datasets if case == "records after RFPENDTC" else datasets == {dataset})
    assert variable in set(added.variable)
    if record is not None:
        assert record in set(added.record)
    assert gone == 0


def test_one_bad_test_name_is_one_finding_not_one_per_record(example_out, clean, tmp_path):
    folder = broken_copy(example_out, tmp_path)
    rewrite(folder, "LB", long_test_name)
    added, _ = new_findings(clean, folder)
    assert len(added[added.rule == "CF0016"]) == 1


def test_a_test_renamed_on_all_its_records_is_one_finding(example_out, clean, tmp_path):
    folder = broken_copy(example_out, tmp_path)

    def rename(f):
        f.loc[f.LBTESTCD == "ALT", "LBTEST"] = "Alanine Transaminase"
        return f
    rewrite(folder, "LB", rename)
    added, _ = new_findings(clean, folder)
    assert added[added.rule == "CT0003"][["dataset", "variable"]].values.tolist() == [["LB", "LBTESTCD"]]


def test_define_roles_and_partial_date_types_are_checked(example_out, clean, tmp_path):
    folder = broken_copy(example_out, tmp_path)
    text = (folder / "define.xml").read_text()
    text = text.replace('ItemOID="IT.AE.AETERM" Mandatory="Yes" OrderNumber="7" Role="Topic"',
                        'ItemOID="IT.AE.AETERM" Mandatory="Yes" OrderNumber="7"', 1)
    assert 'OrderNumber="7"/>' in text or 'OrderNumber="7">' in text
    oid = 'OID="IT.AE.AESTDTC" Name="AESTDTC" DataType="partialDate"'
    assert oid in text
    (folder / "define.xml").write_text(text.replace(oid, oid.replace("partialDate", "date")))
    added, gone = new_findings(clean, folder)
    assert set(added.rule) == {"DF0001"} and gone == 0
    assert set(zip(added.dataset, added.variable)) == {("AE", "AETERM"), ("AE", "AESTDTC")}


def test_visit_on_day_40_labelled_day_28_is_a_window_finding(example_out, clean, tmp_path):
    folder = broken_copy(example_out, tmp_path)
    dm, _ = pyreadstat.read_xport(str(folder / "dm.xpt"))
    subject = "NCT05948982-01-002"
    day40 = (pd.Timestamp(dm.set_index("USUBJID").loc[subject, "RFSTDTC"][:10]) + pd.Timedelta(days=39)).strftime("%Y-%m-%d")

    def shift(prefix):
        def change(f):
            rows = (f.USUBJID == subject) & (f.VISITNUM == 7)
            dtc = f"{prefix}DTC" if f"{prefix}DTC" in f.columns else None
            if dtc:
                f.loc[rows, dtc] = day40 + f.loc[rows, dtc].str.slice(10)
                f.loc[rows, f"{prefix}DY"] = 40.0
            else:
                f.loc[rows, ["SVSTDTC", "SVENDTC"]] = day40
                f.loc[rows, ["SVSTDY", "SVENDY"]] = 40.0
            return f
        return change

    for name in ("LB", "QS", "FA"):
        rewrite(folder, name, shift(name))
    rewrite(folder, "SV", shift("SV"))
    added, gone = new_findings(clean, folder)
    assert set(added.rule) == {"VW0002"} and gone == 0
    assert set(added.dataset) == {"LB", "QS", "FA"} and (added.days_out == 12).all()
    assert (added.usubjid == subject).all()


def test_exit_codes(example_out, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "validate", *args, "--out",
                               str(tmp_path / "rep")], capture_output=True, text=True)
    assert run(str(example_out / "sdtm"), "--fail-on", "error").returncode == 0
    assert run(str(example_out / "sdtm"), "--fail-on", "warning").returncode == 1
    missing = run(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dm.xpt").write_bytes(b"not an xpt file at all")
    unreadable = run(str(bad))
    assert unreadable.returncode == 2 and "unreadable XPT file" in unreadable.stderr and "dm.xpt" in unreadable.stderr
    unknown_ct = run(str(example_out / "sdtm"), "--ct", str(tmp_path / "no-such-ct.txt"))
    assert unknown_ct.returncode == 2 and "CT package not found" in unknown_ct.stderr


def test_reports_are_written_and_machine_readable(example_out, tmp_path):
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "validate", str(example_out / "sdtm"), "--out",
                    str(tmp_path / "rep")], check=True, capture_output=True)
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    first = doc["findings"][0]
    assert {"rule", "severity", "dataset", "variable", "record", "usubjid", "value", "message"} <= set(first)
    assert len(pd.read_csv(tmp_path / "rep" / "report.csv")) == len(doc["findings"])
    from lxml import etree
    junit = etree.parse(str(tmp_path / "rep" / "junit.xml"))
    assert junit.getroot().tag == "testsuites" and junit.find("testsuite[@name='VW0002']/testcase/failure") is not None
    assert all("id" in r and "severity" in r for r in doc["rules"])


def test_the_run_validates_what_it_wrote(example_out):
    manifest = json.loads((example_out / "manifest.json").read_text())
    assert manifest["validation"]["sdtm"]["error"] == 0
    assert (example_out / "validation" / "sdtm" / "report.html").exists()


def test_baseline_marks_new_persisting_and_fixed(example_out, clean, tmp_path):
    base = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "validate", str(example_out / "sdtm"), "--out", str(base)],
                   check=True, capture_output=True)
    folder = broken_copy(example_out, tmp_path)
    rewrite(folder, "DM", lambda f: set_cell(f, 0, "SEX", "X"))
    result = validate_folder(folder, baseline=base / "report.json")
    statuses = result.findings.groupby("rule")["status"].agg(set).to_dict()
    assert statuses["CT0001"] == {"new"} and statuses["VW0002"] == {"persisting"}
    fixed_case = validate_folder(example_out / "sdtm", baseline=_report_of(folder, tmp_path))
    assert "fixed" in set(fixed_case.findings.status)


def _report_of(folder, tmp_path):
    out = tmp_path / "rep-broken"
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "validate", str(folder), "--out", str(out)],
                   check=True, capture_output=True)
    return out / "report.json"


def test_accepted_findings_are_silenced_with_their_justification(example_out, tmp_path):
    accepted = tmp_path / "accepted.yaml"
    accepted.write_text("- {rule: VW0002, dataset: '*', variable: '*', value: '*', "
                        "justification: 'Subject 01-006 attended WEEK 12 late; see the reviewer''s guide'}\n")
    result = validate_folder(example_out / "sdtm", accepted=accepted)
    vw = result.findings[result.findings.rule == "VW0002"]
    assert (vw.status == "accepted").all() and vw.justification.str.contains("late").all()
    assert result.exit_code("warning") == 0
    accepted.write_text("- {rule: VW0002, justification: ''}\n")
    with pytest.raises(ConversionError, match="justification"):
        validate_folder(example_out / "sdtm", accepted=accepted)


def test_ct_package_in_nci_evs_format(example_out, tmp_path):
    header = "Code\tCodelist Code\tCodelist Extensible (Yes/No)\tCodelist Name\tCDISC Submission Value\t" \
             "CDISC Synonym(s)\tCDISC Definition\tNCI Preferred Term\n"
    rows = ["C66731\t\tNo\tSex\tSEX\t\t\t", "C16576\tC66731\t\tSex\tF\tFemale\t\t"]
    package = tmp_path / "SDTM Terminology.txt"
    package.write_text(header + "\n".join(rows) + "\n")
    assert read_package(package)[2]["SEX"].terms == ["F"]
    result = validate_folder(example_out / "sdtm", ct=package)
    sex = result.findings[(result.findings.rule == "CT0001") & (result.findings.variable == "SEX")]
    assert set(sex.value) == {"M"}  # this tiny package knows only F


def test_validates_dataset_json_folders_too(example_out, tmp_path):
    folder = tmp_path / "json"
    folder.mkdir()
    for p in [*(example_out / "sdtm").glob("*.json"), example_out / "sdtm" / "define.xml"]:
        shutil.copy(p, folder)  # a Dataset-JSON submission folder, with its define.xml
    result = validate_folder(folder)
    assert result.datasets["LB"] > 0 and (result.findings.severity == "error").sum() == 0


def test_report_html_in_headless_chromium(example_out, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed and .ci/run could not install it (apt-get install chromium)")
    report = example_out / "validation" / "sdtm" / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", report.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'id="findings"' in dom and 'id="window-picture"' in dom and "<circle" in dom
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, "--window-size=1200,2400", f"--screenshot={shot}", report.resolve().as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000


def test_test_code_and_name_checked_against_the_ct_package(example_out, tmp_path):
    header = "Code\tCodelist Code\tCodelist Extensible (Yes/No)\tCodelist Name\tCDISC Submission Value\t" \
             "CDISC Synonym(s)\tCDISC Definition\tNCI Preferred Term\n"
    rows = ["C65047\t\tYes\tLaboratory Test Code\tLBTESTCD\t\t\t", "C64433\tC65047\t\t\tAST\t\t\t",
            "C64432\tC65047\t\t\tALT\t\t\t",
            "C67154\t\tYes\tLaboratory Test Name\tLBTEST\t\t\t", "C64433\tC67154\t\t\tAlanine Aminotransferase\t\t\t",
            "C64432\tC67154\t\t\tAspartate Aminotransferase\t\t\t"]  # names swapped on purpose
    package = tmp_path / "ct.txt"
    package.write_text(header + "\n".join(rows) + "\n")
    result = validate_folder(example_out / "sdtm", ct=package)
    pair = result.findings[(result.findings.rule == "CT0003") & (result.findings.dataset == "LB")]
    assert {"ALT", "AST"} <= set(pair.value)


def test_codelists_bound_by_the_spec_are_checked(example_out, tmp_path):
    from conftest import STUDY
    study = tmp_path / "study"
    shutil.copytree(STUDY, study, ignore=shutil.ignore_patterns("edc"))
    spec = study / "ae.yaml"
    spec.write_text(spec.read_text().replace("AESPID: {field: FORMREPEAT}", "AESPID: {field: FORMREPEAT, codelist: NY}"))
    folder = tmp_path / "sdtm"
    shutil.copytree(example_out / "sdtm", folder)
    (folder / "define.xml").unlink()
    found = validate_folder(folder, study_dir=study).findings
    bound = found[(found.rule == "CT0001") & (found.variable == "AESPID")]
    assert len(bound) > 0 and set(bound.dataset) == {"AE"}
