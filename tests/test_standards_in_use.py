"""The standards at work on a tiny study: any SDTMIG domain maps with no code change (VS here),
an unknown domain or variable is a one-line error with the spec line, custom domains, Expected
variables written, study terminology (extensions, sponsor codelists, synonyms), value-level
codelists and a CT release chosen with --ct."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.pipeline import run_study
from cdisc_convert.validate import validate_folder

from test_engine import make_study, read

VS_YAML = """
domain: VS
sources:
  - form: VS
    tests:
      - {testcd: SYSBP, test: Systolic Blood Pressure, result: SYSBP, unit: mmHg, stdunit: mmHg}
      - {testcd: TEMP, test: Temperature, result: TEMP, unit: C, stdunit: C}
      - {testcd: WEIGHT, test: Weight, result: WEIGHT, unit: kg, stdunit: kg}
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: VS}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: SUBJECT}]}
  VSSEQ: {derive: seq}
  VSTESTCD: {test: testcd}
  VSTEST: {test: test}
  VSPOS: {field: POS, codelist: POSITION}
  VSDTC: {date: VSDAT}
  VISITNUM: {derive: visitnum, of: VSDTC}
  VISIT: {derive: visit, of: VSDTC}
  VSDY: {derive: study_day, of: VSDTC}
  VSLNKID: {value: L1}
"""
VS_CSV = ("SITEID,SUBJECT,FOLDER,FORMREPEAT,VSDAT,POS,SYSBP,TEMP,WEIGHT\n"
          "01,001,D1,1,08 MAR 2024,Sitting,120,36.8,61\n01,002,D8,1,16 MAR 2024,supine,135,37.1,80\n")


def test_a_vs_spec_converts_with_no_code_change(tmp_path):
    study = make_study(tmp_path, **{"vs.yaml": VS_YAML, "vs.csv": VS_CSV})
    run_study(study, tmp_path / "out")
    vs = read(tmp_path / "out", "vs")
    assert len(vs) == 6 and set(vs["VSTESTCD"]) == {"SYSBP", "TEMP", "WEIGHT"}
    assert set(vs["VSPOS"]) == {"SITTING", "SUPINE"}  # collected text recoded to POSITION terms
    assert vs.loc[vs.VSTESTCD == "TEMP", "VSSTRESN"].tolist() == [36.8, 37.1]
    cols = list(vs.columns)
    assert cols.index("VSLNKID") < cols.index("VSTESTCD")  # SDTM model variable placed in class order
    assert "VSSTRESC" in cols and "VSORRESU" in cols


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cdisc_convert", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("spec, expected", [
    ("domain: QQ\nsources: [{form: AE}]\nvariables:\n  STUDYID: {constant: STUDYID}\n",
     "unknown domain QQ: not an SDTMIG 3.4 domain; custom domains start with X, Y or Z and name their class"),
])
def test_an_unknown_domain_is_one_line_with_file_and_line(tmp_path, spec, expected):
    study = make_study(tmp_path, **{"qq.yaml": spec})
    result = _cli("run", study, "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert expected in line and "qq.yaml:1" in line


def test_a_variable_outside_ig_and_model_is_an_error_with_the_spec_line(tmp_path):
    from test_engine import AE_YAML
    study = make_study(tmp_path, **{"ae.yaml": AE_YAML.replace("  AETERM: {field: AETERM}\n",
                                                                "  AETERM: {field: AETERM}\n  AEFOO: {value: X}\n")})
    result = _cli("run", study, "--out", tmp_path / "out")
    line = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "variable AEFOO is not a AE variable in SDTMIG 3.4" in line and "supplemental qualifier" in line
    spec_line = (study / "ae.yaml").read_text().splitlines().index("  AEFOO: {value: X}") + 1
    assert f"spec ae.yaml:{spec_line}" in line and len(result.stderr.strip().splitlines()) <= 3


def test_a_custom_domain_takes_its_class_variables(tmp_path):
    xr = VS_YAML.replace("domain: VS", "domain: XR\nclass: Findings").replace("  VSPOS: {field: POS, codelist: POSITION}\n",
                                                                           "").replace("  VSLNKID: {value: L1}\n", "")
    for var in ("DOMAIN: {value: VS}", "VSSEQ", "VSTESTCD", "VSTEST:", "VSDTC", "VSDY", "of: VSDTC"):
        xr = xr.replace(var, var.replace("VS", "XR"))
    study = make_study(tmp_path, **{"xr.yaml": xr, "vs.csv": VS_CSV})
    run_study(study, tmp_path / "out")
    assert set(read(tmp_path / "out", "xr")["XRTESTCD"]) == {"SYSBP", "TEMP", "WEIGHT"}
    no_class = make_study(tmp_path / "b", **{"xr.yaml": xr.replace("class: Findings\n", ""), "vs.csv": VS_CSV})
    with pytest.raises(ConversionError, match="custom domain XR needs 'class:'"):
        run_study(no_class, tmp_path / "b" / "out")


def test_expected_variables_are_written_empty_when_not_collected(example_out):
    ae = pd.read_sas(example_out / "sdtm" / "ae.xpt", encoding="ascii")
    assert {"AELLT", "AEPTCD", "AEBODSYS", "AESOC", "AESOCCD"} <= set(ae.columns)
    assert ae["AELLT"].fillna("").eq("").all()
    dm = pd.read_sas(example_out / "sdtm" / "dm.xpt", encoding="ascii")
    assert "ACTARMUD" in dm.columns and list(dm.columns).index("ACTARMUD") > list(dm.columns).index("ARMNRS")
    sv = pd.read_sas(example_out / "sdtm" / "sv.xpt", encoding="ascii")
    assert "EPOCH" not in sv.columns  # SDTMIG 3.4 SV has no EPOCH


def test_example_study_runs_clean_with_the_real_ct(example_out):
    import json
    manifest = json.loads((example_out / "manifest.json").read_text())
    assert manifest["controlled_terminology"]["packages"] == {"SDTM CT": "2025-03-28", "ADaM CT": "2025-03-28"}
    assert manifest["validation"]["sdtm"]["error"] == 0 and manifest["validation"]["adam"]["error"] == 0
    report = json.loads((example_out / "validation" / "sdtm" / "report.json").read_text())
    assert "2025-03-28" in json.dumps(report)
    found = pd.read_csv(example_out / "validation" / "sdtm" / "report.csv")
    assert not ((found.rule.str.startswith("CT")) & (found.dataset == "DS")).any()  # DSDECOD by DSCAT
    dm = pd.read_sas(example_out / "sdtm" / "dm.xpt", encoding="ascii")
    assert set(dm.SEX) == {"F", "M"}  # Female/Male recoded by the CT's synonyms, no hand-written map


TERMINOLOGY = """
codelists:
  UNIT:
    extend: [widgets/L]
  AEREL:
    name: Causality
    terms: [RELATED, NOT RELATED]
  SEX:
    collected: {Woman: F}
"""


def test_study_terminology_extensions_are_declared_and_undeclared_ones_found(tmp_path):
    from test_engine import AE_YAML
    ae = AE_YAML + "  AEREL: {field: AEREL, upper: true, codelist: AEREL}\n"
    ae_csv = ("SITEID,SUBJECT,FOLDER,FORMREPEAT,AETERM,AESTDAT,AEREL\n"
              "01,001,LOG,1,Headache,07 MAR 2024,Related\n")
    dm_csv = ("SITEID,SUBJECT,FOLDER,FORMREPEAT,ICDAT,SEX,HEIGHT,ENROLLED\n"
              "01,001,SCRN,1,01 MAR 2024,Woman,160,Yes\n01,002,SCRN,1,02 MAR 2024,M,,Yes\n")
    vs = VS_YAML.replace("unit: C, stdunit: C", "unit: Cels, stdunit: Cels").replace(
        "unit: kg, stdunit: kg", "unit: widgets/L, stdunit: widgets/L")
    study = make_study(tmp_path, **{"vs.yaml": vs, "vs.csv": VS_CSV, "ae.yaml": ae, "ae.csv": ae_csv,
                                    "dm.csv": dm_csv, "terminology.yaml": TERMINOLOGY})
    out = tmp_path / "out"
    run_study(study, out)
    assert read(out, "dm").set_index("SUBJID").loc["001", "SEX"] == "F"
    assert read(out, "ae")["AEREL"].tolist() == ["RELATED"]
    found = validate_folder(out / "sdtm", study_dir=study).findings
    units = found[found.rule == "CT0004"]
    assert set(units.value) == {"Cels"}  # mmHg is declared; Cels is not a UNIT term nor declared
    define = (out / "sdtm" / "define.xml").read_text()
    assert 'CodedValue="widgets/L"' in define and 'def:ExtendedValue="Yes"' in define


def test_study_terminology_errors_name_the_line(tmp_path):
    study = make_study(tmp_path, **{"terminology.yaml": "codelists:\n  SEX:\n    extend: [X]\n"})
    with pytest.raises(ConversionError) as err:
        run_study(study, tmp_path / "out")
    assert "SEX (C66731) is not extensible" in err.value.message and err.value.spec == "terminology.yaml:3"
    study2 = make_study(tmp_path / "b", **{"terminology.yaml": "codelists:\n  SEX:\n    terms: [A]\n"})
    with pytest.raises(ConversionError, match="CDISC codelist"):
        run_study(study2, tmp_path / "b" / "out")


def test_dsdecod_is_checked_against_the_codelist_its_dscat_names(example_out, tmp_path):
    folder = tmp_path / "sdtm"
    shutil.copytree(example_out / "sdtm", folder)
    (folder / "define.xml").unlink()
    ds = pd.read_sas(folder / "ds.xpt", encoding="ascii")
    ds = ds.fillna({c: "" for c in ds.columns if ds[c].dtype == object})
    milestone = ds.index[ds.DSCAT == "PROTOCOL MILESTONE"][0]
    ds.loc[milestone, "DSDECOD"] = "COMPLETED"  # an NCOMPLT term, not a PROTMLST one
    import pyreadstat
    pyreadstat.write_xport(ds, str(folder / "ds.xpt"), table_name="DS", file_format_version=5)
    from conftest import STUDY
    found = validate_folder(folder, study_dir=STUDY).findings  # its terminology.yaml declares OTHER
    bad = found[(found.dataset == "DS") & (found.variable == "DSDECOD")]
    assert len(bad) == 1 and "PROTMLST" in bad.message.iloc[0] and "DSCAT = PROTOCOL MILESTONE" in bad.message.iloc[0]


def test_run_validate_and_define_take_another_ct_release(example_out, tmp_path):
    package = tmp_path / "SDTM Terminology 2024-12-20.txt"
    package.write_text("Code\tCodelist Code\tCodelist Extensible (Yes/No)\tCodelist Name\tCDISC Submission Value\t"
                       "CDISC Synonym(s)\tCDISC Definition\tNCI Preferred Term\n"
                       "C66731\t\tNo\tSex\tSEX\t\t\t\nC16576\tC66731\t\tSex\tF\tFemale\t\t\n")
    result = _cli("validate", example_out / "sdtm", "--ct", package, "--out", tmp_path / "rep")
    assert "SDTM CT 2024-12-20" in " ".join(result.stderr.split())
    import json
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "2024-12-20" in json.dumps(report)
    study = make_study(tmp_path / "mini")
    run = _cli("run", study, "--out", tmp_path / "o", "--ct", package)
    assert run.returncode == 2 and "not in non-extensible codelist SEX" in " ".join(run.stderr.split())
