"""ADaM conformance rules: each test breaks a clean copy of the example study's ADaM output in
exactly one way and expects its rule, on the right dataset and variable; the clean output has no
finding of these rules (and no error at all)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from cdisc_convert.validate import load_datasets, validate_folder

from conftest import STUDY


@pytest.fixture(scope="module")
def clean(example_out):
    return load_datasets(example_out / "adam"), load_datasets(example_out / "sdtm")[0]


def check(clean, tmp_path, change, only=None, lineage=None):
    """Findings (rule, dataset, variable) after ``change`` edits copies of the frames."""
    (frames, labels, widths), sdtm = clean
    frames = {n: f.copy() for n, f in frames.items() if only is None or n in only}
    labels = {n: dict(v) for n, v in labels.items()}
    change(frames, labels)
    folder = tmp_path / "adam"
    folder.mkdir()
    if lineage is not None:
        lineage(folder)
    result = validate_folder(folder, study_dir=STUDY, preloaded=(frames, labels, widths), reference_preloaded=(sdtm,))
    return result.findings


def rules_of(found) -> set[tuple[str, str, str]]:
    return set(zip(found["rule"], found["dataset"], found["variable"]))


def test_clean_example_adam_has_no_finding_of_the_adam_rules(clean, tmp_path):
    found = check(clean, tmp_path, lambda f, l: None)
    assert not (found["severity"] == "error").any(), found.head().to_dict("records")
    assert not found["rule"].str.startswith("AD").any()


def row(frame, mask=None) -> int:
    """Index of the first record meeting ``mask``."""
    return int(frame.index[mask][0]) if mask is not None else int(frame.index[0])


def test_two_adsl_records_for_one_subject(clean, tmp_path):
    def change(f, l):
        f["ADSL"] = pd.concat([f["ADSL"], f["ADSL"].iloc[[0]]], ignore_index=True)
    assert ("AD0001", "ADSL", "USUBJID") in rules_of(check(clean, tmp_path, change, only={"ADSL"}))


def test_missing_adsl_is_reported(clean, tmp_path):
    assert ("AD0001", "ADSL", "") in rules_of(check(clean, tmp_path, lambda f, l: None, only={"ADLB"}))


def test_duplicate_keys(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        i = row(adlb, (adlb.ABLFL != "Y") & (adlb.ANL01FL != "Y") & adlb.AVAL.notna())
        extra = adlb.loc[[i]].copy()
        extra["LBSEQ" if "LBSEQ" in adlb else "AVISIT"] = extra.get("AVISIT", "")  # not a key: the keys stay equal
        f["ADLB"] = pd.concat([adlb, extra], ignore_index=True)
    assert ("AD0002", "ADLB", "ADTM") in rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"}))


def test_required_variable_missing(clean, tmp_path):
    found = check(clean, tmp_path, lambda f, l: f.update(ADLB=f["ADLB"].drop(columns="PARAM")), only={"ADSL", "ADLB"})
    assert ("AD0003", "ADLB", "PARAM") in rules_of(found)


def test_record_flag_must_be_y_or_null(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        adlb.loc[row(adlb, adlb.ABLFL != "Y"), "ABLFL"] = "N"
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0004", "ADLB", "ABLFL")}


def test_population_flag_never_null(clean, tmp_path):
    def change(f, l):
        f["ADSL"].loc[0, "SAFFL"] = ""
    assert ("AD0004", "ADSL", "SAFFL") in rules_of(check(clean, tmp_path, change, only={"ADSL"}))


def test_event_end_before_start(clean, tmp_path):
    def change(f, l):
        ae = f["ADAE"]
        i = row(ae, ae.ASTDT.notna() & ae.AENDT.notna() & (ae.AENDT > ae.ASTDT) & (ae.TRTEMFL == "Y") &
                (ae.AENDT <= ae.TRTEDT))
        for a, b in (("ASTDT", "AENDT"), ("ASTDY", "AENDY")):
            first, second = float(ae.loc[i, a]), float(ae.loc[i, b])
            ae.loc[i, a], ae.loc[i, b] = second, first
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADAE"})) == {("AD0005", "ADAE", "ASTDT")}


def test_treatment_start_after_end_in_adsl(clean, tmp_path):
    def change(f, l):
        adsl = f["ADSL"]
        adsl.loc[0, "TRTSDT"] = adsl.loc[0, "TRTEDT"] + 5
    assert ("AD0005", "ADSL", "TRTSDT") in rules_of(check(clean, tmp_path, change, only={"ADSL"}))


def test_first_dose_date_disagrees_with_ex(clean, tmp_path):
    def change(f, l):
        f["ADSL"].loc[0, "TRTSDT"] += 1
    assert rules_of(check(clean, tmp_path, change, only={"ADSL"})) == {("AD0006", "ADSL", "TRTSDT")}


def test_safety_flag_contradicts_dosing(clean, tmp_path):
    def change(f, l):
        f["ADSL"].loc[0, "SAFFL"] = "N"
    assert rules_of(check(clean, tmp_path, change, only={"ADSL"})) == {("AD0007", "ADSL", "SAFFL")}


def test_treatment_and_its_number_not_one_to_one(clean, tmp_path):
    def change(f, l):
        f["ADSL"].loc[0, "TRT01AN"] = 99.0
    assert rules_of(check(clean, tmp_path, change, only={"ADSL"})) == {("AD0008", "ADSL", "TRT01AN")}


def test_param_not_one_to_one_with_paramcd(clean, tmp_path):
    def change(f, l):
        f["ADLB"].loc[0, "PARAM"] = "Something Else"
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0009", "ADLB", "PARAM")}


def test_avisit_not_one_to_one_with_avisitn(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        adlb.loc[row(adlb, adlb.AVISIT.fillna("") != ""), "AVISIT"] = "ANOTHER NAME"
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0010", "ADLB", "AVISIT")}


def test_adsl_variable_copied_with_another_value(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        adlb.loc[0, "SAFFL"] = "N" if adlb.loc[0, "SAFFL"] == "Y" else "Y"
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0011", "ADLB", "SAFFL")}


def test_base_varies_within_subject_and_parameter(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        i = row(adlb, (adlb.ABLFL != "Y") & adlb.BASE.notna() & adlb.AVAL.notna() & (adlb.BASE != 0))
        adlb.loc[i, "BASE"] += 1
        adlb.loc[i, "CHG"] = adlb.loc[i, "AVAL"] - adlb.loc[i, "BASE"]  # change and percent stay consistent
        adlb.loc[i, "PCHG"] = 100 * adlb.loc[i, "CHG"] / adlb.loc[i, "BASE"]
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0012", "ADLB", "BASE")}


def test_more_than_one_baseline_record(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        groups = adlb.groupby(["USUBJID", "PARAMCD"]).ABLFL.transform(lambda s: (s == "Y").any() and len(s) > 1)
        adlb.loc[row(adlb, groups.astype(bool) & (adlb.ABLFL != "Y")), "ABLFL"] = "Y"
    assert ("FL0001", "ADLB", "ABLFL") in rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"}))


@pytest.mark.parametrize("var", ["CHG", "PCHG"])
def test_change_not_from_aval_and_base(clean, tmp_path, var):
    def change(f, l):
        adlb = f["ADLB"]
        adlb.loc[row(adlb, adlb[var].notna()), var] += 3
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0013", "ADLB", var)}


def test_study_day_disagrees_with_date(clean, tmp_path):
    def change(f, l):
        ae = f["ADAE"]
        ae.loc[row(ae, ae.ASTDY.notna()), "ASTDY"] += 1
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADAE"})) == {("AD0014", "ADAE", "ASTDY")}


def test_aval_is_not_the_number_avalc_holds(clean, tmp_path):
    def change(f, l):
        adlb = f["ADLB"]
        numeric = pd.to_numeric(adlb.AVALC, errors="coerce").notna()
        i = row(adlb, numeric)
        adlb.loc[i, "AVALC"] = str(float(adlb.loc[i, "AVALC"]) + 7)
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"})) == {("AD0015", "ADLB", "AVAL")}


def test_treatment_emergent_flag_on_an_event_before_first_dose(clean, tmp_path):
    def change(f, l):
        ae = f["ADAE"]
        i = row(ae, (ae.TRTEMFL == "Y") & ae.ASTDT.notna() & ae.AENDT.isna())
        ae.loc[i, "ASTDT"] = ae.loc[i, "TRTSDT"] - 3
        ae.loc[i, "ASTDY"] = -3.0
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADAE"})) == {("AD0016", "ADAE", "TRTEMFL")}


def test_subject_not_in_adsl(clean, tmp_path):
    def change(f, l):
        f["ADAE"].loc[0, "USUBJID"] = "NOT-A-SUBJECT"
    assert ("AD0017", "ADAE", "USUBJID") in rules_of(check(clean, tmp_path, change, only={"ADSL", "ADAE"}))


@pytest.mark.parametrize("value, rule", [(-1.0, "AD0018"), (0.5, "AD0018"), (2.0, "AD0019")])
def test_cnsr_outside_0_and_1(clean, tmp_path, value, rule):
    def change(f, l):
        tte = f["ADTTE"]
        tte.loc[row(tte, tte.CNSR == 1), "CNSR"] = value
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADTTE"})) == {(rule, "ADTTE", "CNSR")}


def test_negative_time_to_event(clean, tmp_path):
    def change(f, l):
        f["ADTTE"].loc[0, "AVAL"] = -5.0
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADTTE"})) == {("AD0020", "ADTTE", "AVAL")}


def test_event_without_description(clean, tmp_path):
    def change(f, l):
        f["ADTTE"].loc[0, "EVNTDESC"] = ""
    assert rules_of(check(clean, tmp_path, change, only={"ADSL", "ADTTE"})) == {("AD0021", "ADTTE", "EVNTDESC")}


def test_date_variable_held_as_text(clean, tmp_path):
    def change(f, l):
        f["ADSL"]["LSTALVDT"] = np.where(f["ADSL"]["LSTALVDT"].notna(), "2024-01-01", "")
    assert rules_of(check(clean, tmp_path, change, only={"ADSL"})) == {("AD0022", "ADSL", "LSTALVDT")}


def test_label_not_the_adamigs(clean, tmp_path):
    def change(f, l):
        l["ADSL"]["AGE"] = "Age of the subject"
    assert rules_of(check(clean, tmp_path, change, only={"ADSL"})) == {("AD0023", "ADSL", "AGE")}


def test_lineage_names_an_sdtm_record_that_does_not_exist(clean, tmp_path, example_out):
    def lineage(folder):
        shutil.copytree(example_out / "adam" / "lineage", folder / "lineage")
        path = folder / "lineage" / "adae.csv"
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table.loc[0, "source"] = "AE.AESEQ=99999"
        table.to_csv(path, index=False)
    found = check(clean, tmp_path, lambda f, l: None, only={"ADSL", "ADAE", "ADLB"}, lineage=lineage)
    assert rules_of(found) == {("AD0024", "ADAE", "USUBJID")} and list(found["record"]) == [1]


@pytest.mark.parametrize("table_cells", [50_000_000, 0])  # through the subjects x values table, or joined
def test_lineage_of_a_computed_parameter_names_each_of_its_sources(clean, tmp_path, example_out, monkeypatch,
                                                                   table_cells):
    """A score's lineage lists many SDTM records: one that does not exist, a subject that does not
    exist, or a domain that is not there, each marks only the records whose source names it."""
    import cdisc_convert.validate.adam as adam_rules

    monkeypatch.setattr(adam_rules, "_LINEAGE_TABLE_CELLS", table_cells)

    def lineage(folder):
        shutil.copytree(example_out / "adam" / "lineage", folder / "lineage")
        path = folder / "lineage" / "adlb.csv"
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        scores = table.index[table["source"].str.count(r" \+ ") >= 2]
        assert len(scores) >= 3
        table.loc[scores[0], "source"] += " + LB.LBSEQ=99999"   # one part of many does not exist
        table.loc[scores[1], "source"] = "DM.USUBJID=NOBODY + " + table.loc[scores[1], "source"]
        table.loc[3, "source"] = "XX.XXSEQ=1"                   # a domain the study does not have
        table.to_csv(path, index=False)
        return [int(scores[0]) + 1, int(scores[1]) + 1, 4]
    rows = []
    found = check(clean, tmp_path, lambda f, l: None, only={"ADSL", "ADLB"},
                  lineage=lambda folder: rows.extend(lineage(folder)))
    assert rules_of(found) == {("AD0024", "ADLB", "USUBJID")}
    assert sorted(found["record"]) == sorted(rows)


def test_dtype_not_a_term_of_its_adam_codelist(clean, tmp_path):
    def change(f, l):
        f["ADLB"].loc[0, "DTYPE"] = "GUESSED"
    found = rules_of(check(clean, tmp_path, change, only={"ADSL", "ADLB"}))
    assert found in ({("CT0001", "ADLB", "DTYPE")}, {("CT0002", "ADLB", "DTYPE")})


def test_date_imputation_flag_not_a_datefl_term(clean, tmp_path):
    def change(f, l):
        f["ADAE"].loc[0, "ASTDTF"] = "X"
    found = rules_of(check(clean, tmp_path, change, only={"ADSL", "ADAE"}))
    assert found in ({("CT0001", "ADAE", "ASTDTF")}, {("CT0002", "ADAE", "ASTDTF")})


def test_numeric_variable_held_as_text(clean, tmp_path):
    def change(f, l):
        f["ADSL"]["AGE"] = f["ADSL"]["AGE"].map(lambda v: "" if v != v else f"{v:g}").astype(object)
    assert rules_of(check(clean, tmp_path, change, only={"ADSL"})) == {("AD0025", "ADSL", "AGE")}
