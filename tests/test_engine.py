"""The engine on a tiny study written here: filters, joins, SUPP--, reference dates, long
text, metadata overrides, SAS input, and errors for what a spec gets wrong."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.pipeline import run_study

STUDY_YAML = """
study: {studyid: MINI}
edc: {path: edc, screen_failure_form: DM, screen_failure: {field: ENROLLED, equals: "No"}}
constants: {STUDYID: MINI}
arms: [{armcd: A, arm: Arm A}]
visits:
  - {visitnum: 1, visit: SCREENING, folder: SCRN, day: -7, window: [-7, -1]}
  - {visitnum: 2, visit: DAY 1, folder: D1, day: 1, window: [1, 1]}
  - {visitnum: 3, visit: DAY 8, folder: D8, day: 8, window: [7, 9]}
elements:
  - {etcd: SCRN, element: Screening, epoch: SCREENING, start: RFICDTC, testrl: Consent}
  - {etcd: TRT, element: Treatment, epoch: TREATMENT, start: RFXSTDTC, testrl: First dose}
"""
DM_YAML = """
domain: DM
sources: [{form: DM}]
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: DM}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: SUBJECT}]}
  SUBJID: {field: SUBJECT}
  RFXSTDTC: {derive: first_date, domain: EX, of: EXSTDTC}
  RFXENDTC: {derive: last_date, domain: EX, of: EXSTDTC}
  RFSTDTC: {var: RFXSTDTC}
  RFICDTC: {date: ICDAT}
  RFPENDTC: {derive: last_date, domain: EX, of: EXSTDTC}
  SITEID: {field: SITEID}
  SEX: {field: SEX, codelist: SEX}
  ARMCD: {value: A}
  ARM: {value: Arm A}
  COUNTRY: {value: CHN}
metadata:
  SEX: {label: Sex of the Subject}
supp:
  - {qnam: HEIGHT, qlabel: Height (cm), rule: {field: HEIGHT}}
"""
EX_YAML = """
domain: EX
sources:
  - form: EX
    join: [{form: DM, on: [SUBJECT], fields: [SEX]}]
    filter: {field: EXDONE, equals: "Y"}
    filter_reason: dose not given
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: EX}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: SUBJECT}]}
  EXSEQ: {derive: seq}
  EXTRT: {value: DRUG}
  EXDOSE: {field: DOSE, type: num}
  EXSTDTC: {date: EXDAT, time: EXTIM}
  EXSTDY: {derive: study_day, of: EXSTDTC}
  EPOCH: {derive: epoch, of: EXSTDTC}
"""
AE_YAML = """
domain: AE
sources: [{form: AE}]
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: AE}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: SUBJECT}]}
  AESEQ: {derive: seq}
  AETERM: {field: AETERM}
  AEDECOD: {field: AETERM, upper: true}
  AESTDTC: {date: AESTDAT}
  AESTDY: {derive: study_day, of: AESTDTC}
"""
FORMS = {
    "dm.csv": "SITEID,SUBJECT,FOLDER,FORMREPEAT,ICDAT,SEX,HEIGHT,ENROLLED\n"
              "01,001,SCRN,1,01 MAR 2024,F,160,Yes\n01,002,SCRN,1,02 MAR 2024,M,,Yes\n01,003,SCRN,1,02 MAR 2024,M,171,No\n",
    "ex.csv": "SITEID,SUBJECT,FOLDER,FORMREPEAT,EXDONE,DOSE,EXDAT,EXTIM\n"
              "01,001,D1,1,Y,10,08 MAR 2024,09:00\n01,001,D8,1,Y,10,15 MAR 2024,09:30\n"
              "01,002,D1,1,N,,,\n01,002,D8,1,Y,10,16 MAR 2024,10:00\n",
    "ae.csv": "SITEID,SUBJECT,FOLDER,FORMREPEAT,AETERM,AESTDAT\n"
              "01,001,LOG,1,Headache,07 MAR 2024\n"
              f"01,002,LOG,1,\"{' '.join(['Long verbatim term'] * 15)}\",UN MAR 2024\n",
}


def make_study(root: Path, **overrides) -> Path:
    study = root / "mini"
    (study / "edc").mkdir(parents=True)
    files = {"study.yaml": STUDY_YAML, "dm.yaml": DM_YAML, "ex.yaml": EX_YAML, "ae.yaml": AE_YAML, **FORMS}
    files.update(overrides)
    for name, text in files.items():
        target = study / "edc" / name if name.endswith(".csv") else study / name
        target.write_text(textwrap.dedent(text).lstrip())
    return study


@pytest.fixture
def mini(tmp_path):
    study = make_study(tmp_path)
    out = tmp_path / "out"
    run_study(study, out)
    return out


def read(out, name):
    return pd.read_sas(out / "sdtm" / f"{name}.xpt", format="xport", encoding="ascii")


def test_reference_dates_take_first_and_last_dose(mini):
    dm = read(mini, "dm").set_index("SUBJID")
    assert dm.loc["001", "RFXSTDTC"] == "2024-03-08T09:00" and dm.loc["001", "RFXENDTC"] == "2024-03-15T09:30"
    assert dm.loc["002", "RFXSTDTC"] == "2024-03-16T10:00"  # the dose not given is filtered out
    assert list(dm.index) == ["001", "002"]  # the screen failure is not a DM record


def test_filter_and_screen_failure_rows_are_listed_with_reasons(mini):
    recon = pd.read_csv(mini / "reconciliation.csv", dtype=str, keep_default_na=False).set_index("source")
    assert recon.loc["ex.csv:4", "detail"] == "filter (EX): dose not given"
    assert recon.loc["dm.csv:4", "detail"] == "screen failure"
    assert recon.loc["ex.csv:2", "detail"] == "EX"
    assert recon.loc["dm.csv:2", "detail"] == "DM EX SUPPDM"  # DM row, also joined into EX for SEX


def test_join_brings_fields_and_keeps_both_sources_in_lineage(mini):
    lineage = pd.read_csv(mini / "lineage" / "ex.csv", dtype=str)
    assert lineage["source"].iloc[0] == "ex.csv:2 + dm.csv:2"


def test_study_day_and_epoch_from_elements(mini):
    ex = read(mini, "ex")
    assert ex["EXSTDY"].tolist() == [1.0, 8.0, 1.0] and set(ex["EPOCH"]) == {"TREATMENT"}
    ae = read(mini, "ae").set_index("USUBJID")
    assert ae.loc["MINI-001", "AESTDY"] == -1.0 and pd.isna(ae.loc["MINI-002", "AESTDY"])


def test_supp_qualifier_only_where_there_is_a_value(mini):
    supp = read(mini, "suppdm")
    assert supp[["USUBJID", "QNAM", "QVAL", "QORIG"]].values.tolist() == [["MINI-001", "HEIGHT", "160", "CRF"]]


def test_long_text_keeps_200_characters_and_the_rest_goes_to_supp(mini):
    ae = read(mini, "ae").set_index("USUBJID")
    supp = read(mini, "suppae")
    term = ae.loc["MINI-002", "AETERM"]
    assert len(term) <= 200
    rest = supp[(supp.USUBJID == "MINI-002") & (supp.QNAM == "AETERM1")]
    assert len(rest) == 1 and term + rest["QVAL"].item() == " ".join(["Long verbatim term"] * 15)


def test_spec_overrides_variable_label(mini):
    _, meta = pyreadstat.read_xport(str(mini / "sdtm" / "dm.xpt"))
    assert meta.column_names_to_labels["SEX"] == "Sex of the Subject"
    md = json.loads((mini / "metadata.json").read_text())
    origin = {v["name"]: v["origin"] for v in md["DM"]["variables"]}
    assert origin["SEX"] == "Collected" and origin["DOMAIN"] == "Assigned" and origin["RFXSTDTC"] == "Derived"


def test_variable_outside_the_sdtmig_domain_is_an_error(tmp_path):
    study = make_study(tmp_path, **{"ae.yaml": AE_YAML + "  AEFOO: {value: X}\n"})
    with pytest.raises(ConversionError, match="AEFOO is not a AE variable.*supp") as err:
        run_study(study, tmp_path / "out")
    assert err.value.spec == "ae.yaml:12"


def test_join_that_is_not_unique_is_an_error(tmp_path):
    study = make_study(tmp_path, **{"dm.csv": FORMS["dm.csv"] + "01,001,SCRN,2,01 MAR 2024,F,160,Yes\n"})
    with pytest.raises(ConversionError, match="join with DM on SUBJECT is not unique"):
        run_study(study, tmp_path / "out")


def test_sas_datasets_as_the_edc_export(tmp_path):
    study = make_study(tmp_path)
    sas = tmp_path / "sas"
    sas.mkdir()
    for csv in (study / "edc").glob("*.csv"):
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        pyreadstat.write_xport(frame, str(sas / f"{csv.stem}.xpt"), file_format_version=8, table_name=csv.stem.upper())
    run_study(study, tmp_path / "from_csv")
    run_study(study, tmp_path / "from_sas", edc=sas)
    for name in ("dm", "ex", "ae"):
        pd.testing.assert_frame_equal(read(tmp_path / "from_csv", name), read(tmp_path / "from_sas", name))
