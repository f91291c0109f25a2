"""Spec-language features for third-party EDC data, each on a tiny study or tiny frames:
date formats with partial dates and a two-digit-year pivot, pattern extraction, --SEQ order,
reference dates with a condition, joins picking one row, unit conversion by formula with
rounding, per-source visit columns with unscheduled visits, EDC folders with non-form files,
and findings pages whose rows hold only some tests."""
from __future__ import annotations

import json

import pandas as pd
import pyreadstat
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.expr import ExpressionError, parse
from cdisc_convert.pipeline import run_study
from cdisc_convert.sdtm import derive
from cdisc_convert.spec import Conversion

from test_engine import AE_YAML, DM_YAML, EX_YAML, STUDY_YAML, make_study, read


def test_date_formats_are_tried_in_order_and_partial_dates_stay_partial():
    iso, bad = derive.parse_dates(pd.Series(["12/26/2013", "2014", "UN/UN/2012", "", "31-Dec-99", "07-jan-14"]),
                                  ["MM/DD/YYYY", "YYYY", "DD-MON-YY"], year_pivot=1920)
    assert iso.tolist() == ["2013-12-26", "2014", "2012", "", "1999-12-31", "2014-01-07"]
    assert not bad.any()
    iso, bad = derive.parse_dates(pd.Series(["02/30/2013", "2013-01-01"]), ["MM/DD/YYYY"])
    assert bad.tolist() == [True, True] and iso.tolist() == ["", ""]


def test_two_digit_years_follow_the_stated_pivot():
    text = pd.Series(["01-Jan-49", "01-Jan-50"])
    assert derive.parse_dates(text, ["DD-MON-YY"], 1950)[0].tolist() == ["2049-01-01", "1950-01-01"]
    assert derive.parse_dates(text, ["DD-MON-YY"], 1900)[0].tolist() == ["1949-01-01", "1950-01-01"]


def test_unit_conversion_by_formula_with_rounding():
    to_c = derive.unit_converter(formula="(x - 32) * 5 / 9", decimals=2)
    out = derive.standard_results(pd.Series(["98.6", "<96.8", "101.3"]), pd.Series(["F", "F", "F"]),
                                  pd.Series(["TEMP"] * 3), pd.Series(["C"] * 3), {("TEMP", "F", "C"): to_c})
    assert out["STRESN"].tolist()[::2] == [37.0, 38.5] and out["STRESC"].tolist() == ["37", "<36", "38.5"]
    sig = derive.unit_converter(factor=0.45359237, significant=3)
    assert sig(pd.Series([119.0])).tolist() == [54.0]
    with pytest.raises(ExpressionError):
        parse("__import__('os').system('x')")
    with pytest.raises(ValueError, match="only use x"):
        Conversion.model_validate({"testcd": "T", "from": "F", "to": "C", "formula": "y * 2"})
    with pytest.raises(ValueError, match="exactly one of factor, formula"):
        Conversion.model_validate({"testcd": "T", "from": "F", "to": "C"})


DM_PILOT = """
domain: DM
sources:
  - form: DM
    join:
      - {form: DS, on: [SUBJECT], fields: [DTHDAT], filter: {field: DTHDAT, empty: false}, pick: last, order: [DTHDAT]}
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: DM}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: PATNUM}]}
  SUBJID: {field: PATNUM, pattern: "-(\\\\d+)$"}
  RFXSTDTC: {derive: first_date, domain: EX, of: EXSTDTC}
  RFXENDTC: {derive: last_date, domain: EX, of: EXSTDTC}
  RFSTDTC: {var: RFXSTDTC}
  RFENDTC: {derive: last_date, domain: DS, of: DSSTDTC, where: {var: DSCAT, equals: DISPOSITION EVENT}}
  RFICDTC: {date: ICDAT, format: [MM/DD/YYYY, YYYY]}
  DTHDTC: {date: DTHDAT, format: MM/DD/YYYY}
  SITEID: {field: PATNUM, pattern: "^(\\\\d+)-"}
  SEX: {field: SEX, codelist: SEX}
  ARMCD: {value: A}
  ARM: {value: Arm A}
  COUNTRY: {value: USA}
"""
DS_PILOT = """
domain: DS
sources:
  - form: DS
    visit_field: VISITNAME
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: DS}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: PATNUM}]}
  DSSEQ: {derive: seq, order: [DSSTDTC]}
  DSTERM: {field: TERM, upper: true}
  DSDECOD: {field: TERM, upper: true}
  DSCAT: {field: CAT}
  VISITNUM: {derive: visitnum, of: DSSTDTC}
  VISIT: {derive: visit, of: DSSTDTC}
  DSSTDTC: {date: DSDAT, format: MM-DD-YYYY}
"""
FORMS_PILOT = {
    "dm.csv": "SITEID,SUBJECT,PATNUM,FOLDER,FORMREPEAT,ICDAT,SEX,HEIGHT,ENROLLED\n"
              "01,001,701-1015,SCRN,1,03/01/2024,Female,160,Yes\n01,002,702-1023,SCRN,1,2024,M,,Yes\n",
    "ds.csv": "SITEID,SUBJECT,PATNUM,VISITNAME,FORMREPEAT,TERM,CAT,DSDAT,DTHDAT\n"
              "01,001,701-1015,Week 2,1,Completed,DISPOSITION EVENT,03-20-2024,\n"
              "01,001,701-1015,Screening,1,Randomized,PROTOCOL MILESTONE,03-07-2024,\n"
              "01,002,702-1023,Unscheduled 3.1,1,Death,DISPOSITION EVENT,03-25-2024,03/24/2024\n"
              "01,002,702-1023,Week 2,1,Final lab visit,OTHER EVENT,03-30-2024,\n",
    "sdtm_ct.csv": "codelist_code,term_code,term_value\nC66731,C16576,F\n",
}
STUDY_PILOT = STUDY_YAML.replace("edc: {path: edc,", "edc: {path: edc, ignore: ['*_ct.csv'],").replace(
    "  - {visitnum: 3, visit: DAY 8, folder: D8, day: 8, window: [7, 9]}",
    "  - {visitnum: 3, visit: DAY 8, folder: D8, day: 8, window: [7, 9]}\n"
    "  - {visitnum: 4, visit: WEEK 2, folder: Week 2, day: 14, window: [10, 20], aliases: [W2]}\n"
    "unscheduled: {pattern: '(?i)^unscheduled (\\d+\\.\\d+)$'}")


@pytest.fixture
def pilot_like(tmp_path):
    study = make_study(tmp_path, **{"study.yaml": STUDY_PILOT, "dm.yaml": DM_PILOT, "ds.yaml": DS_PILOT,
                                    **FORMS_PILOT})
    out = tmp_path / "out"
    run_study(study, out)
    return out


def test_pattern_extraction_and_date_formats_in_a_spec(pilot_like):
    dm = read(pilot_like, "dm").set_index("SUBJID")
    assert dm.loc["1015", "SITEID"] == "701" and dm.loc["1023", "SITEID"] == "702"
    assert dm.loc["1015", "RFICDTC"] == "2024-03-01" and dm.loc["1023", "RFICDTC"] == "2024"
    assert dm.loc["1015", "SEX"] == "F"


def test_reference_dates_with_a_condition_and_a_join_that_picks_one_row(pilot_like):
    dm = read(pilot_like, "dm").set_index("SUBJID")
    assert dm.loc["1015", "RFENDTC"] == "2024-03-20"  # the disposition event, not the milestone
    assert dm.loc["1023", "RFENDTC"] == "2024-03-25"  # not the later OTHER EVENT of 03-30
    assert dm.loc["1023", "DTHDTC"] == "2024-03-24" and dm.loc["1015", "DTHDTC"] == ""


def test_seq_follows_the_stated_order_and_visits_come_from_the_visit_column(pilot_like):
    ds = read(pilot_like, "ds")
    s1 = ds[ds.USUBJID == "MINI-701-1015"]
    assert s1["DSTERM"].tolist() == ["RANDOMIZED", "COMPLETED"] and s1["DSSEQ"].tolist() == [1.0, 2.0]
    s2 = ds[ds.USUBJID == "MINI-702-1023"].set_index("DSTERM")
    assert (s2.loc["DEATH", "VISITNUM"], s2.loc["DEATH", "VISIT"]) == (3.1, "UNSCHEDULED 3.1")
    assert (s2.loc["FINAL LAB VISIT", "VISITNUM"], s2.loc["FINAL LAB VISIT", "VISIT"]) == (4.0, "WEEK 2")


def test_files_that_are_not_forms_are_left_out(pilot_like):
    recon = pd.read_csv(pilot_like / "reconciliation.csv", dtype=str)
    assert not recon["source"].str.startswith("sdtm_ct.csv").any()
    inputs = [i["path"] for i in json.loads((pilot_like / "manifest.json").read_text())["inputs"]]
    assert "sdtm_ct.csv" not in inputs


def test_named_forms_must_exist(tmp_path):
    study = make_study(tmp_path, **{"study.yaml": STUDY_YAML.replace("edc: {path: edc,",
                                                                     "edc: {path: edc, forms: [dm, ex, ae, lb],")})
    with pytest.raises(ConversionError, match="form file lb.csv named in study.yaml"):
        run_study(study, tmp_path / "out")


def test_a_value_that_misses_the_pattern_or_the_formats_names_file_row_and_spec(tmp_path):
    forms = dict(FORMS_PILOT)
    forms["dm.csv"] = forms["dm.csv"].replace("702-1023", "7021023")
    study = make_study(tmp_path, **{"study.yaml": STUDY_PILOT, "dm.yaml": DM_PILOT, "ds.yaml": DS_PILOT, **forms})
    with pytest.raises(ConversionError, match="does not match pattern") as err:
        run_study(study, tmp_path / "out")
    assert err.value.source.startswith("dm.csv:3") and err.value.field == "PATNUM" and err.value.spec.startswith("dm.yaml:")
    forms = dict(FORMS_PILOT)
    forms["dm.csv"] = forms["dm.csv"].replace("03/01/2024", "2024-03-01")
    study = make_study(tmp_path / "b", **{"study.yaml": STUDY_PILOT, "dm.yaml": DM_PILOT, "ds.yaml": DS_PILOT,
                                          **forms})
    with pytest.raises(ConversionError, match="matches none of the formats MM/DD/YYYY, YYYY") as err:
        run_study(study, tmp_path / "b" / "out")
    assert err.value.source.startswith("dm.csv:2") and err.value.field == "ICDAT"


VS_WIDE = """
domain: VS
conversions:
  - {testcd: TEMP, from: F, to: C, formula: "(x - 32) * 5 / 9", decimals: 1}
sources:
  - form: VS
    empty_results: drop
    tests:
      - {testcd: SYSBP, test: Systolic Blood Pressure, result: SYSBP, unit: mmHg, stdunit: mmHg}
      - {testcd: TEMP, test: Temperature, result: TEMP, unit: F, stdunit: C}
variables:
  STUDYID: {constant: STUDYID}
  DOMAIN: {value: VS}
  USUBJID: {concat: [{constant: STUDYID}, "-", {field: SUBJECT}]}
  VSSEQ: {derive: seq}
  VSTESTCD: {test: testcd}
  VSTEST: {test: test}
  VSDTC: {date: VSDAT}
"""


def test_a_wide_page_whose_rows_hold_some_tests_gives_records_only_for_those(tmp_path):
    vs_csv = ("SITEID,SUBJECT,FOLDER,FORMREPEAT,VSDAT,SYSBP,TEMP\n"
              "01,001,D1,1,08 MAR 2024,120,\n01,001,D1,2,08 MAR 2024,,98.6\n")
    study = make_study(tmp_path, **{"vs.yaml": VS_WIDE, "vs.csv": vs_csv})
    run_study(study, tmp_path / "out")
    vs = read(tmp_path / "out", "vs")
    assert vs[["VSTESTCD", "VSSTRESN", "VSSTRESU"]].values.tolist() == [["SYSBP", 120.0, "mmHg"], ["TEMP", 37.0, "C"]]
    assert "VSSTAT" not in vs.columns and "VSNRIND" not in vs.columns  # nothing to put in them


@pytest.mark.parametrize("edit, message, key", [
    (("AESTDTC: {date: AESTDAT}", "AESTDTC: {date: AESTDAT, format: MM/DD}"), "has no year", "ae.yaml"),
    (("AETERM: {field: AETERM}", "AETERM: {field: AETERM, pattern: '(unclosed'}"), "not a valid regular", "ae.yaml"),
    (("AETERM: {field: AETERM}", "AETERM: {field: AETERM, format: YYYY}"), "go with 'date'", "ae.yaml"),
])
def test_bad_spec_features_are_spec_errors_with_the_line(tmp_path, edit, message, key):
    study = make_study(tmp_path, **{"ae.yaml": AE_YAML.replace(*edit)})
    with pytest.raises(ConversionError, match=message) as err:
        run_study(study, tmp_path / "out")
    assert err.value.spec.startswith(f"{key}:") and not (tmp_path / "out").exists()


def test_a_bad_unscheduled_pattern_is_a_study_yaml_error(tmp_path):
    bad = STUDY_YAML + "unscheduled: {pattern: 'Unscheduled [0-9.]+'}\n"
    study = make_study(tmp_path, **{"study.yaml": bad})
    with pytest.raises(ConversionError, match="needs a group") as err:
        run_study(study, tmp_path / "out")
    assert err.value.spec.startswith("study.yaml:") and not (tmp_path / "out").exists()


def test_treatment_emergent_flag_follows_admirals_rule_on_tiny_frames():
    first, last = pd.Series(["2022-01-01T01:01"] * 7 + [""]), pd.Series(["2022-05-10"] * 8)
    start = pd.Series(["2021-12-31", "2022-01-01", "2022-05-20", "2022-06-01", "", "", "2022", "2022-01-03"])
    end = pd.Series(["2022-01-14", "", "", "", "2021-12-24", "2022-01-04", "", ""])
    assert derive.treatment_emergent(start, end, first, last, window=10).tolist() == \
        ["N", "Y", "Y", "N", "N", "Y", "Y", ""]  # started before; on day 1; in the window; after it;
    # no start but ended before dosing; no start, ended after; a year that cannot be ruled out; never dosed
    assert derive.treatment_emergent(start, end, first, last).tolist()[3] == "Y"  # no window: any time after


def test_qualifiers_may_look_at_any_domain_once_every_domain_is_derived(tmp_path):
    dm = DM_YAML.replace("  - {qnam: HEIGHT, qlabel: Height (cm), rule: {field: HEIGHT}}",
                         "  - {qnam: SAFETY, qlabel: Safety Population Flag, qorig: DERIVED,"
                         " rule: {derive: has_records, domain: EX}}\n"
                         "  - {qnam: COMPLT8, qlabel: Completers of Day 8 Population Flag, qorig: DERIVED,"
                         " rule: {derive: has_records, domain: EX, where: {var: EXSTDY, at_least: 8}}}")
    ae = AE_YAML + ("supp:\n  - {qnam: AETRTEM, qlabel: Treatment Emergent Flag, qorig: DERIVED,"
                    " rule: {derive: treatment_emergent, of: AESTDTC}}\n")
    study = make_study(tmp_path, **{"dm.yaml": dm, "ae.yaml": ae})
    run_study(study, tmp_path / "out")
    # pyreadstat, not pandas.read_sas: pandas takes blank 8-byte words inside the last 80-byte card for
    # padding and drops the last record of this file (67-byte records, "Safety Population Flag" + blanks)
    suppdm = pyreadstat.read_xport(tmp_path / "out" / "sdtm" / "suppdm.xpt")[0]
    assert len(suppdm) == 4
    suppdm = suppdm.pivot(index="USUBJID", columns="QNAM", values="QVAL")
    # EXSTDY is itself subject-level: the qualifier is evaluated after it
    assert suppdm.to_dict() == {"COMPLT8": {"MINI-001": "Y", "MINI-002": "N"}, "SAFETY": {"MINI-001": "Y", "MINI-002": "Y"}}
    suppae = read(tmp_path / "out", "suppae").query("QNAM == 'AETRTEM'")  # beside the long-text overflow
    assert suppae[["USUBJID", "QVAL"]].values.tolist() == [["MINI-001", "N"], ["MINI-002", "Y"]]  # 03-07 < 03-08; 2024-03


@pytest.mark.parametrize("rule, message", [
    ("{derive: has_records}", "has_records needs domain"),
    ("{derive: treatment_emergent}", "treatment_emergent needs of"),
    ("{derive: seq, window: 3}", "'window' goes with"),
])
def test_derivations_name_what_they_miss(tmp_path, rule, message):
    study = make_study(tmp_path, **{"ae.yaml": AE_YAML.replace("AESEQ: {derive: seq}", f"AESEQ: {rule}")})
    with pytest.raises(ConversionError, match=message) as err:
        run_study(study, tmp_path / "out")
    assert err.value.spec == "ae.yaml:7"
