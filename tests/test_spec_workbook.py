"""The mapping specification workbook: generated from the specs, read back with openpyxl."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import openpyxl
import pytest

from conftest import STUDY


@pytest.fixture(scope="module")
def workbook(example_out):
    return openpyxl.load_workbook(example_out / "spec.xlsx")


def rows(ws) -> list[dict]:
    values = list(ws.iter_rows(values_only=True))
    return [dict(zip(values[0], r)) for r in values[1:]]


def test_run_writes_the_workbook_with_a_sheet_per_dataset(example_out, workbook):
    manifest = json.loads((example_out / "manifest.json").read_text())
    sdtm = [n for n in manifest["datasets"] if not n.startswith(("AD", "SUPP")) and n not in
            ("TA", "TE", "TV", "TS", "TI", "SE", "SV", "RELREC")]  # built from study.yaml, not a spec
    assert set(sdtm) <= set(workbook.sheetnames)
    assert {"Datasets", "ADSL", "ADLB", "Codelists", "Value level", "Methods"} <= set(workbook.sheetnames)
    listed = {r["Dataset"] for r in rows(workbook["Datasets"])}
    assert {"AE", "SUPPAE", "ADSL"} <= listed
    assert set(manifest["datasets"]) <= listed  # trial design, SE, SV, RELREC included


def test_every_written_variable_is_in_its_sheet_with_its_length(example_out, workbook):
    metadata = json.loads((example_out / "metadata.json").read_text())
    for domain in ("AE", "LB", "DM"):
        sheet = {r["Variable"]: r for r in rows(workbook[domain])}
        for var in metadata[domain]["variables"]:
            if var["spec"]:  # made by a spec rule (not added by the engine, such as EPOCH from SE)
                assert sheet[var["name"]]["Length"] == var["length"], (domain, var["name"])
                assert sheet[var["name"]]["Spec"] == var["spec"]


def test_rule_in_words_source_field_and_supplemental_qualifiers(workbook):
    ae = rows(workbook["AE"])
    term = next(r for r in ae if r["Variable"] == "AETERM")
    assert term["Source field"] and term["Origin"] == "Collected" and term["Rule"].startswith("field ")
    assert any(str(r["Variable"]).endswith("in SUPPAE") for r in ae)


def test_codelists_say_cdisc_or_sponsor(workbook):
    cl = rows(workbook["Codelists"])
    sources = {r["Source"] for r in cl}
    assert "CDISC" in sources and ({"sponsor", "sponsor extension"} & sources)
    assert any(r["Codelist"] == "SEX" and r["Term"] == "F" for r in cl)


def test_value_level_and_methods(workbook):
    vl = rows(workbook["Value level"])
    assert any(r["Domain"] == "LB" and r["Test code"] == "ALT" for r in vl)
    methods = rows(workbook["Methods"])
    assert any(r["Dataset"] == "ADLB" and r["Derivation"] == "baseline" for r in methods)


def test_reviewer_layout_frozen_header_filters_widths(workbook):
    ws = workbook["LB"]
    assert ws.freeze_panes == "A2" and ws.auto_filter.ref.startswith("A1:")
    assert ws["A1"].font.bold and ws.column_dimensions["I"].width > 10


def test_byte_stable_and_changes_sheet_against_a_previous_version(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(STUDY, old)
    ae = old / "ae.yaml"
    ae.write_text(ae.read_text().replace("AETERM:", "AETERM_OLD_NAME:", 1) if "AETERM:" in ae.read_text()
                  else ae.read_text())
    args = [sys.executable, "-m", "cdisc_convert.cli", "spec-workbook", str(STUDY)]
    for name in ("a.xlsx", "b.xlsx"):
        subprocess.run([*args, "--out", str(tmp_path / name)], check=True, capture_output=True)
    assert (tmp_path / "a.xlsx").read_bytes() == (tmp_path / "b.xlsx").read_bytes()
    subprocess.run([*args, "--out", str(tmp_path / "c.xlsx"), "--previous", str(old)], check=True, capture_output=True)
    changes = rows(openpyxl.load_workbook(tmp_path / "c.xlsx")["Changes"])
    assert any(r["File"] == "ae.yaml" and "AETERM" in str(r["Path"]) for r in changes)


def test_bad_input_is_one_line_exit_2_and_leaves_no_file(tmp_path):
    args = [sys.executable, "-m", "cdisc_convert.cli", "spec-workbook"]
    for extra in ([str(tmp_path / "no-study")], [str(STUDY), "--data", str(tmp_path / "no-run")]):
        done = subprocess.run([*args, *extra, "--out", str(tmp_path / "s.xlsx")], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.xlsx")) and not list(tmp_path.glob(".*.tmp"))


def test_domain_sheets_give_the_acrf_page_of_each_collected_variable(example_out, workbook):
    """The workbook and the aCRF come from the same specs: the page a sheet names holds the annotation."""
    pypdf = pytest.importorskip("pypdf")
    pages = [p.extract_text() for p in pypdf.PdfReader(str(example_out / "acrf.pdf")).pages]
    dm = {r["Variable"]: r for r in rows(workbook["DM"])}
    assert dm["DTHDTC"]["Source form"] == "DTH"  # read through DM's join with the DTH form
    assert dm["WEIGHT in SUPPDM"]["Origin"] == "Collected"
    checked = 0
    for domain in ("DM", "AE", "LB", "EX"):
        for r in rows(workbook[domain]):
            if r["Origin"] == "Collected" and r["Source field"] not in ("SUBJECT", "SITEID", "FORMREPEAT"):
                assert r["aCRF page"], (domain, r["Variable"])
                name = str(r["Variable"]).split(" in ")[0]
                for page in str(r["aCRF page"]).split():
                    assert name in pages[int(page) - 1], (domain, r["Variable"], page)
                checked += 1
    assert checked > 20
