"""ADaM spec steps added for real studies (the CDISC pilot's ADSL/ADAE/ADVS as admiral makes
them), each run through the engine on a tiny frame that shows its rule."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdisc_convert.adam.engine import derive_adam
from cdisc_convert.adam.spec import AdamSpec
from cdisc_convert.errors import ConversionError

D = pd.to_datetime


def run(steps, sdtm, dataset="ADXX", keys=("USUBJID",)):
    spec = AdamSpec.model_validate({"dataset": dataset, "label": "Test", "keys": list(keys), "steps": steps,
                                    "variables": ["USUBJID"], "file": "adxx.yaml"})
    return derive_adam([spec], sdtm)[dataset]


VS = pd.DataFrame({
    "USUBJID": ["1"] * 7,
    "VSSEQ": [1, 2, 3, 4, 5, 6, 7],
    "PARAMCD": ["SYSBP", "SYSBP", "DIABP", "DIABP", "HEIGHT", "WEIGHT", "WEIGHT"],
    "AVISITN": [2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 4.0],
    "ADT": D(["2024-01-10", "2024-01-10", "2024-01-10", "2024-01-10", "2024-01-01", "2024-01-01", "2024-01-20"]),
    "AVAL": [120.0, 130.0, 80.0, 70.0, 200.0, 80.0, 84.0],
})


def test_summary_records_average_per_visit_with_their_lineage():
    out = run([{"derive": "start", "from": "VS"},
               {"derive": "summary", "by": ["USUBJID", "PARAMCD", "AVISITN"], "filter": "PARAMCD == 'SYSBP'",
                "analysis": {"AVAL": "mean"}, "assign": {"DTYPE": "AVERAGE"}}], {"VS": VS})
    avg = out[out.DTYPE == "AVERAGE"]
    assert avg[["PARAMCD", "AVISITN", "AVAL"]].values.tolist() == [["SYSBP", 2.0, 125.0]]
    assert avg["__src"].iloc[0] == "VS.VSSEQ=1 + VS.VSSEQ=2"
    assert (out.loc[out.DTYPE != "AVERAGE", "DTYPE"] == "").all()  # other records: empty text, not NaN


def test_formula_parameter_per_group_and_constant_height_per_subject():
    out = run([{"derive": "start", "from": "VS"},
               {"derive": "param", "formula": "(2 * DIABP + SYSBP) / 3", "by": ["USUBJID", "ADT"], "paramcd": "MAP",
                "param": "Mean Arterial Pressure (mmHg)", "assign": {"AVALU": "mmHg"}},
               {"derive": "param", "formula": "WEIGHT / (HEIGHT / 100) ** 2", "by": ["USUBJID", "ADT"],
                "constant": ["HEIGHT"], "paramcd": "BMI", "param": "Body Mass Index (kg/m2)"}], {"VS": VS})
    mp = out[out.PARAMCD == "MAP"]
    # the last record of each input per group is used (admiral takes one record per parameter)
    assert mp["AVAL"].round(4).tolist() == [round((2 * 70 + 130) / 3, 4)] and mp["AVALU"].tolist() == ["mmHg"]
    bmi = out[out.PARAMCD == "BMI"].sort_values("ADT")
    assert bmi["AVAL"].tolist() == [20.0, 21.0]  # one height, two weights on different days
    assert bmi["__src"].iloc[1] == "VS.VSSEQ=5 + VS.VSSEQ=7"


def test_formula_parameter_needs_every_input():
    out = run([{"derive": "start", "from": "VS"},
               {"derive": "param", "formula": "SYSBP + TEMP", "by": ["USUBJID", "ADT"], "paramcd": "X"}], {"VS": VS})
    assert "X" not in set(out.PARAMCD)


def test_extreme_records_from_the_dataset_being_derived():
    out = run([{"derive": "start", "from": "VS"},
               {"derive": "extreme_records", "by": ["USUBJID", "PARAMCD"], "order": ["ADT", "VSSEQ"], "mode": "last",
                "filter": "AVISITN > 0 and PARAMCD == 'WEIGHT'",
                "assign": {"AVISIT": "End of Treatment", "AVISITN": 99, "DTYPE": "LOV"}}], {"VS": VS})
    lov = out[out.DTYPE == "LOV"]
    assert lov[["PARAMCD", "AVAL", "AVISITN", "AVISIT"]].values.tolist() == [["WEIGHT", 84.0, 99.0, "End of Treatment"]]
    assert len(out) == len(VS) + 1


def test_restrict_applies_steps_to_some_records_and_keeps_order():
    frame = pd.DataFrame({"USUBJID": ["1"] * 3, "AVISITN": [0.0, 1.0, 2.0], "AVAL": [10.0, 12.0, 9.0],
                          "BASE": [10.0] * 3})
    out = run([{"derive": "start", "from": "X"},
               {"derive": "restrict", "where": "AVISITN > 0", "steps": [{"derive": "chg"}, {"derive": "pchg"}]}],
              {"X": frame})
    assert out["AVISITN"].tolist() == [0.0, 1.0, 2.0]
    assert out["CHG"].tolist()[1:] == [2.0, -1.0] and np.isnan(out["CHG"].iloc[0])
    assert out["PCHG"].tolist()[1:] == [20.0, -10.0]


def test_recode_to_missing_and_default():
    frame = pd.DataFrame({"USUBJID": ["1", "2", "3"], "PARAMCD": ["SYSBP", "WEIGHT", "PULSE"]})
    out = run([{"derive": "start", "from": "X"},
               {"derive": "recode", "var": "PARAMCD", "new": "ANRLO", "values": {"SYSBP": 90, "WEIGHT": None},
                "default": None}], {"X": frame})
    assert out["ANRLO"].tolist()[0] == 90.0 and out["ANRLO"].iloc[1:].isna().all()
    with pytest.raises(ConversionError, match="'PULSE' of PARAMCD has no entry in the recode"):
        run([{"derive": "start", "from": "X"},
             {"derive": "recode", "var": "PARAMCD", "new": "ANRLO", "values": {"SYSBP": 90, "WEIGHT": None}}],
            {"X": frame})


def test_infinity_is_refused_in_a_spec():
    with pytest.raises(Exception, match="not a value a dataset can hold"):
        run([{"derive": "start", "from": "X"}, {"derive": "recode", "var": "A", "new": "B", "values": {"x": float("inf")}}],
            {"X": pd.DataFrame({"USUBJID": ["1"], "A": ["x"]})})


def test_time_imputed_to_end_of_day():
    ex = pd.DataFrame({"USUBJID": ["1"], "EXENDTC": ["2024-03-01"]})
    out = run([{"derive": "start", "from": "EX"},
               {"derive": "date", "dtc": "EXENDTC", "prefix": "TRTE", "time": True, "time_imputation": "last"}],
              {"EX": ex})
    assert out["TRTEDTM"].iloc[0] == pd.Timestamp("2024-03-01 23:59:59") and out["TRTETMF"].iloc[0] == "H"


DM = pd.DataFrame({"STUDYID": ["S"] * 3, "USUBJID": ["1", "2", "3"], "TRTEDT": D(["2024-02-01", "2024-02-01", None])})
AE = pd.DataFrame({"STUDYID": ["S"] * 3, "USUBJID": ["1", "1", "2"], "AESEQ": [1, 2, 1],
                   "AESTDTC": ["2024-01-05", "2024-03", "2024-01-20"], "AEDECOD": ["HEADACHE", "DEATH X", "RASH"],
                   "AEOUT": ["", "FATAL", ""]})


def test_extreme_event_last_known_alive_across_sources():
    out = run([{"derive": "start", "from": "DM"},
               {"derive": "extreme_event", "order": ["LSTALVDT", "seq"], "mode": "last", "new": ["LSTALVDT"],
                "events": [
                    {"from": "AE", "set": {"LSTALVDT": {"dtc": "AESTDTC"}, "seq": {"var": "AESEQ"}}},
                    {"from": "ADXX", "filter": "present(TRTEDT)", "set": {"LSTALVDT": {"var": "TRTEDT"}, "seq": 0}}]}],
              {"DM": DM, "AE": AE})
    # subject 1: AE of 2024-03 (imputed to 2024-03-01) is after the last dose; 2: last dose; 3: nothing
    assert out["LSTALVDT"].tolist()[:2] == [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-02-01")]
    assert pd.isna(out["LSTALVDT"].iloc[2])


def test_extreme_event_first_source_wins_a_tie_and_sets_text():
    ds = pd.DataFrame({"STUDYID": ["S"], "USUBJID": ["1"], "DSSEQ": [4], "DSDECOD": ["DEATH"], "DSTERM": ["DEATH DUE TO X"]})
    out = run([{"derive": "start", "from": "DM"},
               {"derive": "extreme_event", "order": [], "mode": "first", "new": ["DTHCAUS", "DTHDOM", "DTHSEQ"],
                "events": [
                    {"from": "AE", "filter": "AEOUT == 'FATAL'",
                     "set": {"DTHCAUS": {"var": "AEDECOD"}, "DTHDOM": "AE", "DTHSEQ": {"var": "AESEQ"}}},
                    {"from": "DS", "filter": "DSDECOD == 'DEATH' and matches(DSTERM, 'DEATH DUE TO')",
                     "set": {"DTHCAUS": {"var": "DSTERM"}, "DTHDOM": "DS", "DTHSEQ": {"var": "DSSEQ"}}}]}],
              {"DM": DM, "AE": AE, "DS": ds})
    assert out[["DTHCAUS", "DTHDOM", "DTHSEQ"]].values.tolist()[0] == ["DEATH X", "AE", 2.0]
    assert out["DTHDOM"].tolist()[1:] == ["", ""]


def test_case_when_first_match_wins_else_missing():
    frame = pd.DataFrame({"USUBJID": ["1", "2", "3", "4"], "DTHDOM": ["AE", "DS", "DS", ""],
                          "DTHCAUS": ["X", "PROGRESSIVE DISEASE", "OTHER THING", ""], "AVAL": [1.0, 50.0, 150.0, np.nan]})
    out = run([{"derive": "start", "from": "X"},
               {"derive": "case", "cases": [
                   {"when": "missing(DTHDOM)", "set": {"DTHCGR1": None}},
                   {"when": "DTHDOM == 'AE'", "set": {"DTHCGR1": "ADVERSE EVENT"}},
                   {"when": "matches(DTHCAUS, 'PROGRESSIVE DISEASE|DISEASE RELAPSE')",
                    "set": {"DTHCGR1": "PROGRESSIVE DISEASE"}}],
                "else": {"DTHCGR1": "OTHER"}},
               {"derive": "case", "cases": [{"when": "AVAL <= 100", "set": {"AVALCAT1": "<=100", "AVALCA1N": 1}},
                                            {"when": "AVAL > 100", "set": {"AVALCAT1": ">100", "AVALCA1N": 2}}]}],
              {"X": frame})
    assert out["DTHCGR1"].tolist() == ["ADVERSE EVENT", "PROGRESSIVE DISEASE", "OTHER", ""]
    assert out["AVALCAT1"].tolist() == ["<=100", "<=100", ">100", ""]
    assert out["AVALCA1N"].tolist()[:3] == [1.0, 1.0, 2.0] and np.isnan(out["AVALCA1N"].iloc[3])


def test_merge_joined_last_dose_before_the_event():
    ae = pd.DataFrame({"STUDYID": ["S"] * 3, "USUBJID": ["1", "1", "2"],
                       "ASTDTM": D(["2024-01-05 08:00", "2023-12-01 00:00", "2024-01-02 00:00"])})
    ex = pd.DataFrame({"STUDYID": ["S"] * 3, "USUBJID": ["1", "1", "2"], "EXSEQ": [1, 2, 1],
                       "EXSTDTM": D(["2024-01-01 00:00", "2024-01-05 09:00", "2024-01-01 00:00"]), "EXDOSE": [54.0, 81.0, 0.0],
                       "EXDOSU": ["mg", "mg", "mg"]})
    out = run([{"derive": "start", "from": "AE"},
               {"derive": "merge_joined", "from": "EX", "by": ["STUDYID", "USUBJID"], "join": "EXSTDTM <= ASTDTM",
                "order": ["EXSTDTM", "EXSEQ"], "vars": {"LDOSEDTM": "EXSTDTM", "DOSEON": "EXDOSE", "DOSEU": "EXDOSU"}}],
              {"AE": ae, "EX": ex})
    assert out["DOSEON"].tolist()[0] == 54.0 and np.isnan(out["DOSEON"].iloc[1]) and out["DOSEON"].iloc[2] == 0.0
    assert out["DOSEU"].tolist() == ["mg", "", "mg"]
    assert out["LDOSEDTM"].iloc[0] == pd.Timestamp("2024-01-01")


def test_duration_without_added_day_and_unit_only_where_known():
    frame = pd.DataFrame({"USUBJID": ["1", "2"], "TRTEDT": D(["2024-01-01", "2024-01-01"]),
                          "DTHDT": D(["2024-01-11", None])})
    out = run([{"derive": "start", "from": "X"},
               {"derive": "duration", "start": "TRTEDT", "end": "DTHDT", "new": "LDDTHELD", "add_one": False,
                "unit_var": "LDDTHELU"}], {"X": frame})
    assert out["LDDTHELD"].tolist()[0] == 10.0 and np.isnan(out["LDDTHELD"].iloc[1])
    assert out["LDDTHELU"].tolist() == ["DAYS", ""]


def test_aseq_numbers_records_per_subject_in_order():
    frame = pd.DataFrame({"STUDYID": ["S"] * 3, "USUBJID": ["2", "1", "1"], "ADT": D(["2024-01-01", "2024-02-01", "2024-01-01"])})
    out = run([{"derive": "start", "from": "X"}, {"derive": "seq", "order": ["ADT"]}], {"X": frame})
    assert out["ASEQ"].tolist() == [1.0, 2.0, 1.0]


def test_merge_all_variables_except_and_missing_value():
    adsl = pd.DataFrame({"USUBJID": ["1"], "AGE": [70.0], "SEX": ["F"], "TRTSDT": D(["2024-01-01"])})
    ds = pd.DataFrame({"USUBJID": ["1"], "DSCAT": ["DISPOSITION EVENT"], "DSDECOD": ["COMPLETED"]})
    ae = pd.DataFrame({"USUBJID": ["1", "2"], "AETERM": ["A", "B"]})
    out = run([{"derive": "start", "from": "AE"},
               {"derive": "merge", "from": "ADSL", "by": ["USUBJID"], "vars": "all", "except": ["TRTSDT"]},
               {"derive": "merge", "from": "DS", "by": ["USUBJID"], "vars": {"EOSSTT": "DSDECOD"},
                "filter": "DSCAT == 'DISPOSITION EVENT'", "missing": {"EOSSTT": "ONGOING"}}],
              {"AE": ae, "ADSL": adsl, "DS": ds})
    assert [c for c in out.columns if c != "__src"][:4] == ["USUBJID", "AETERM", "AGE", "SEX"]
    assert "TRTSDT" not in out
    assert out["EOSSTT"].tolist() == ["COMPLETED", "ONGOING"]


def test_expression_filter_names_a_missing_variable_with_its_line():
    with pytest.raises(ConversionError, match="uses variable NOPE") as err:
        run([{"derive": "start", "from": "X", "filter": "NOPE > 1"}], {"X": pd.DataFrame({"USUBJID": ["1"]})})
    assert err.value.spec == "adxx.yaml:1"  # no line table here: the file itself


def test_expression_text_is_checked_when_the_spec_loads():
    with pytest.raises(Exception, match="not a condition"):
        AdamSpec.model_validate({"dataset": "A", "label": "A", "keys": [], "variables": [],
                                 "steps": [{"derive": "start", "from": "X", "filter": "AVAL + 1"}]})


def test_merge_all_from_an_adam_dataset_takes_its_output_variables_not_working_ones():
    dm = pd.DataFrame({"STUDYID": ["S"], "DOMAIN": ["DM"], "USUBJID": ["1"], "AGE": [70.0]})
    vs = pd.DataFrame({"STUDYID": ["S"], "DOMAIN": ["VS"], "USUBJID": ["1"], "VSSEQ": [1]})
    adsl = AdamSpec.model_validate({"dataset": "ADSL", "label": "S", "keys": ["USUBJID"], "variables": ["STUDYID", "USUBJID", "AGE"],
                                    "steps": [{"derive": "start", "from": "DM"}, {"derive": "assign", "vars": {"WORK": 1}}]})
    advs = AdamSpec.model_validate({"dataset": "ADVS", "label": "V", "keys": ["USUBJID"], "variables": ["USUBJID"],
                                    "steps": [{"derive": "start", "from": "VS"},
                                              {"derive": "merge", "from": "ADSL", "by": ["STUDYID", "USUBJID"], "vars": "all"}]})
    out = derive_adam([adsl, advs], {"DM": dm, "VS": vs})["ADVS"]
    assert out["DOMAIN"].tolist() == ["VS"] and out["AGE"].tolist() == [70.0] and "WORK" not in out


def test_text_functions_give_analysis_visits():
    frame = pd.DataFrame({"USUBJID": ["1", "1", "1"], "VISIT": ["BASELINE", "WEEK 12", "UNSCHEDULED 3.1"]})
    out = run([{"derive": "start", "from": "X"},
               {"derive": "case", "cases": [
                   {"when": "matches(VISIT, 'UNSCHED')", "set": {"AVISIT": None}},
                   {"when": "present(VISIT)", "set": {"AVISIT": {"expr": "title(VISIT)"},
                                                      "AVISITN": {"expr": "number(replace(VISIT, 'WEEK', ''))"}}}]}],
              {"X": frame})
    assert out["AVISIT"].tolist() == ["Baseline", "Week 12", ""]
    assert np.isnan(out["AVISITN"].iloc[0]) and out["AVISITN"].iloc[1] == 12.0


def test_no_imputation_leaves_partial_dates_missing():
    ds = pd.DataFrame({"USUBJID": ["1", "2"], "DSSTDTC": ["2024-03", "2024-03-05"]})
    out = run([{"derive": "start", "from": "DS"}, {"derive": "date", "dtc": "DSSTDTC", "prefix": "EOS", "highest": "n"}],
              {"DS": ds})
    assert pd.isna(out["EOSDT"].iloc[0]) and out["EOSDT"].iloc[1] == pd.Timestamp("2024-03-05")


def _two_specs(adsl_steps_extra=(), advs_steps=None):
    dm = pd.DataFrame({"STUDYID": ["S", "S"], "DOMAIN": ["DM", "DM"], "USUBJID": ["1", "2"], "AGE": [70.0, 60.0]})
    vs = pd.DataFrame({"STUDYID": ["S"] * 3, "DOMAIN": ["VS"] * 3, "USUBJID": ["1", "1", "2"], "VSSEQ": [1, 2, 1],
                       "VSTESTCD": ["WEIGHT"] * 3, "VSSTRESN": [80.0, 82.0, 70.0], "VSDTC": ["2024-01-01"] * 3})
    advs = AdamSpec.model_validate({
        "dataset": "ADVS", "label": "V", "keys": ["USUBJID", "PARAMCD"], "variables": ["USUBJID", "PARAMCD", "AVAL"],
        "steps": advs_steps or [{"derive": "start", "from": "VS"},
                                {"derive": "copy", "vars": {"PARAMCD": "VSTESTCD", "AVAL": "VSSTRESN"}},
                                {"derive": "assign", "vars": {"WORKING": "x"}}]})
    adsl = AdamSpec.model_validate({
        "dataset": "ADSL", "label": "S", "keys": ["USUBJID"], "variables": ["USUBJID", "AGE", "WEIGHTBL"],
        "steps": [{"derive": "start", "from": "DM"},
                  {"derive": "merge", "from": "ADVS", "by": ["USUBJID"], "vars": {"WEIGHTBL": "AVAL"},
                   "filter": {"field": "PARAMCD", "equals": "WEIGHT"}, "order": ["AVAL"], "mode": "first"},
                  *adsl_steps_extra]})
    return [adsl, advs], {"DM": dm, "VS": vs}


def test_each_adam_dataset_is_finished_as_soon_as_derived_and_others_read_only_what_they_name():
    """derive_adam(finish=...) hands each dataset over when its steps are done (ADVS before ADSL, which
    waits for it); what ADSL reads of ADVS is kept for it, ADVS's other working columns are not."""
    from cdisc_convert.adam.engine import columns_read_by_others

    specs, sdtm = _two_specs()
    read = columns_read_by_others(specs)
    assert "ADVS" in read and {"USUBJID", "AVAL", "PARAMCD"} <= read["ADVS"] and "WORKING" not in read["ADVS"]
    finished = []
    assert derive_adam(specs, sdtm, finish=lambda spec, frame: finished.append((spec.dataset, frame))) == {}
    assert [name for name, _ in finished] == ["ADVS", "ADSL"]
    whole = derive_adam(specs, sdtm)  # without finish: the whole working frames, as before
    for name, frame in finished:
        dropped = [c for c in whole[name].columns if c not in frame.columns]
        # SDTM columns no later step names go as soon as they are done with; VSSEQ stays (for SUPPVS)
        assert dropped == {"ADVS": ["DOMAIN", "VSTESTCD", "VSSTRESN", "VSDTC"], "ADSL": ["DOMAIN"]}[name]
        pd.testing.assert_frame_equal(frame, whole[name][list(frame.columns)])
    assert dict(finished)["ADSL"]["WEIGHTBL"].tolist() == [80.0, 70.0]


def test_a_dataset_another_spec_starts_from_keeps_every_column():
    from cdisc_convert.adam.engine import columns_read_by_others

    specs, _ = _two_specs()
    adtte = AdamSpec.model_validate({"dataset": "ADTTE", "label": "T", "keys": ["USUBJID"], "variables": ["USUBJID"],
                                     "steps": [{"derive": "start", "from": "ADSL"}]})
    assert columns_read_by_others([*specs, adtte])["ADSL"] is None


def test_merge_all_from_a_finished_dataset_keeps_its_output_variables():
    from cdisc_convert.adam.engine import columns_read_by_others

    specs, sdtm = _two_specs(advs_steps=None)
    adae = AdamSpec.model_validate({"dataset": "ADAE", "label": "A", "keys": ["USUBJID"], "variables": ["USUBJID"],
                                    "steps": [{"derive": "start", "from": "DM"},
                                              {"derive": "merge", "from": "ADSL", "by": ["USUBJID"], "vars": "all"}]})
    assert {"AGE", "WEIGHTBL"} <= columns_read_by_others([*specs, adae])["ADSL"]
    finished = {}
    derive_adam([*specs, adae], sdtm, finish=lambda spec, frame: finished.setdefault(spec.dataset, frame))
    assert finished["ADAE"]["WEIGHTBL"].tolist() == [80.0, 70.0]


def test_finish_holds_the_only_reference_to_the_working_frame():
    """So the run frees a dataset's working frame before writing it (ADQS at 2,000 subjects: 400 MB)."""
    import weakref

    specs, sdtm = _two_specs()
    freed = {}

    def finish(spec, frame):
        alive = weakref.ref(frame)
        del frame
        freed[spec.dataset] = alive() is None

    derive_adam(specs, sdtm, finish=finish)
    assert freed == {"ADVS": True, "ADSL": True}  # ADSL reads ADVS from its own copy of the columns it names


def test_lineage_text_is_one_object_per_source_record_number():
    """LB.LBSEQ=1 of every subject is the same str: the working frame holds a pointer, not a copy."""
    from cdisc_convert.adam.engine import with_lineage

    lb = pd.DataFrame({"USUBJID": ["1", "1", "2"], "LBSEQ": [1.0, 2.0, 1.0]})
    src = with_lineage("LB", lb)["__src"]
    assert src.tolist() == ["LB.LBSEQ=1", "LB.LBSEQ=2", "LB.LBSEQ=1"] and src.iloc[0] is src.iloc[2]
    assert with_lineage("DM", lb[["USUBJID"]])["__src"].tolist() == ["DM.USUBJID=1", "DM.USUBJID=1", "DM.USUBJID=2"]


def test_records_a_step_adds_are_appended_where_the_working_frame_has_no_other_reference():
    """add_records / param / tte / summaries: the new records are made, then appended a column at a
    time while the working frame's columns go (ADQS's three score steps held it twice each); the
    records and their order are those of a whole-frame concat."""
    import weakref

    import cdisc_convert.adam.engine as engine

    steps = [{"derive": "start", "from": "VS"},
             {"derive": "copy", "vars": {"PARAMCD": "VSTESTCD", "AVAL": "VSSTRESN"}},
             {"derive": "param", "formula": "WEIGHT * 2", "paramcd": "W2", "param": "Twice", "by": ["USUBJID", "VSDTC"]}]
    specs, sdtm = _two_specs(advs_steps=steps)
    whole = derive_adam(specs, sdtm)["ADVS"]  # without finish: apply_step, a whole-frame append
    handed, alive = {}, []
    append = engine.append_records

    def watching(parts, text_empty=False):
        alive.append(weakref.ref(parts[0]))
        out = append(parts, text_empty)
        handed["emptied"], handed["freed"] = parts == [], alive[-1]() is None
        return out

    import cdisc_convert.memory as memory

    engine.append_records = watching
    small, memory.COLUMNWISE_MIN_RECORDS = memory.COLUMNWISE_MIN_RECORDS, 0  # a column at a time, however few
    try:
        got = {}
        derive_adam(specs, sdtm, finish=lambda spec, frame: got.setdefault(spec.dataset, frame))
    finally:
        engine.append_records, memory.COLUMNWISE_MIN_RECORDS = append, small
    assert handed == {"emptied": True, "freed": True}
    cols = ["USUBJID", "PARAMCD", "AVAL"]
    pd.testing.assert_frame_equal(got["ADVS"][cols], whole[cols])
    assert got["ADVS"]["PARAMCD"].tolist() == ["WEIGHT", "WEIGHT", "WEIGHT", "W2", "W2"]


def test_written_dataset_consumes_a_handed_working_frame_and_equals_the_kept_one():
    from cdisc_convert.adam.output import adam_dataset

    spec = AdamSpec.model_validate({"dataset": "ADVS", "label": "V", "keys": ["USUBJID", "PARAMCD"],
                                    "variables": ["USUBJID", "PARAMCD", "AVAL", "ADT"], "steps": [{"derive": "start", "from": "VS"}]})
    frame = pd.DataFrame({"USUBJID": ["2", "1", "1"], "PARAMCD": ["W", "W", "H"], "AVAL": [1.0, 2.0, 3.0],
                          "ADT": D(["2024-01-01", "2024-01-02", None]), "__src": ["VS.VSSEQ=1", "VS.VSSEQ=2", "VS.VSSEQ=3"]})
    kept, kept_lineage = adam_dataset(spec, frame)
    handed = [frame.copy()]
    ds, lineage = adam_dataset(spec, handed)
    assert handed == []
    pd.testing.assert_frame_equal(ds.data, kept.data)
    pd.testing.assert_frame_equal(lineage, kept_lineage)
    assert ds.data["USUBJID"].tolist() == ["1", "1", "2"] and lineage["source"].tolist()[0] == "VS.VSSEQ=3"
