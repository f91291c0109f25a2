"""One test per ADaM derivation, each with a small frame that shows its rule."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdisc_convert.adam import derive
from cdisc_convert.adam.derive import AnalysisWindow, TteSource

D = pd.to_datetime


def test_merge_takes_last_record_in_order_and_keeps_unmatched():
    adsl = pd.DataFrame({"USUBJID": ["1", "2"]})
    ds = pd.DataFrame({"USUBJID": ["1", "1"], "DSSTDTC": ["2024-01-01", "2024-05-01"], "DSDECOD": ["A", "B"]})
    out = derive.derive_vars_merged(adsl, ds, ["USUBJID"], {"EOSDECOD": "DSDECOD"}, order=["DSSTDTC"])
    assert out["EOSDECOD"].tolist()[0] == "B" and pd.isna(out["EOSDECOD"].iloc[1])


def test_merge_without_order_refuses_duplicates():
    with pytest.raises(ValueError, match="not unique"):
        derive.derive_vars_merged(pd.DataFrame({"USUBJID": ["1"]}),
                                  pd.DataFrame({"USUBJID": ["1", "1"], "X": [1, 2]}), ["USUBJID"], ["X"])


@pytest.mark.parametrize("dtc,imputation,expected,flag", [
    ("2024-03-15", "first", "2024-03-15", ""),
    ("2024-03", "first", "2024-03-01", "D"),
    ("2024-03", "last", "2024-03-31", "D"),
    ("2024-02", "last", "2024-02-29", "D"),  # leap year
    ("2024", "first", "2024-01-01", "M"),
    ("2024", "last", "2024-12-31", "M"),
])
def test_partial_dates_imputed_with_flag(dtc, imputation, expected, flag):
    date, imputed = derive.impute_dtc_date(pd.Series([dtc]), imputation)
    assert date.dt.strftime("%Y-%m-%d").iloc[0] == expected and imputed.iloc[0] == flag


def test_highest_imputation_day_leaves_year_only_dates_missing():
    date, flag = derive.impute_dtc_date(pd.Series(["2024"]), "first", highest_imputation="D")
    assert pd.isna(date.iloc[0]) and flag.iloc[0] == ""


def test_datetime_imputes_missing_time_and_flags_it():
    out = derive.derive_vars_dtm(pd.DataFrame({"X": ["2024-01-05T09:30", "2024-01-05"]}), "X", "A")
    assert out["ADTM"].dt.strftime("%H:%M").tolist() == ["09:30", "00:00"] and out["ATMF"].tolist() == ["", "H"]


def test_relative_day_has_no_day_zero():
    f = pd.DataFrame({"TRTSDT": D(["2024-01-10"] * 3), "ADT": D(["2024-01-09", "2024-01-10", "2024-01-11"])})
    assert derive.derive_vars_dy(f, "TRTSDT", {"ADY": "ADT"})["ADY"].tolist() == [-1.0, 1.0, 2.0]


def test_extreme_flag_ties_go_to_the_later_record_in_input_order():
    f = pd.DataFrame({"USUBJID": ["1"] * 3, "ATOXGRN": [3.0, 3.0, 1.0]})
    assert derive.derive_var_extreme_flag(f, ["USUBJID"], ["ATOXGRN"], "W")["W"].tolist() == ["", "Y", ""]
    assert derive.derive_var_extreme_flag(f, ["USUBJID"], ["ATOXGRN"], "F", mode="first")["F"].tolist() == ["", "", "Y"]


class TestBaseline:
    def frame(self):
        return pd.DataFrame({"USUBJID": ["1", "1", "1", "2", "2"], "PARAMCD": ["ALT"] * 5,
                             "AVAL": [30.0, np.nan, 40.0, 50.0, 55.0], "AVALC": ["30", "", "40", "50", "55"],
                             "ADT": D(["2024-01-01", "2024-01-09", "2024-02-01", "2024-03-02", "2024-03-09"]),
                             "TRTSDT": D(["2024-01-10"] * 3 + ["2024-03-01"] * 2)})

    def test_last_non_missing_before_dose(self):
        out = derive.derive_var_ablfl(self.frame(), ["USUBJID", "PARAMCD"])
        assert out["ABLFL"].tolist() == ["Y", "", "", "", ""]

    def test_missing_baseline_gives_missing_base_and_chg(self):
        out = derive.derive_var_ablfl(self.frame(), ["USUBJID", "PARAMCD"])
        out = derive.derive_var_chg(derive.derive_var_base(out, ["USUBJID", "PARAMCD"]))
        assert out["BASE"].tolist()[:3] == [30.0, 30.0, 30.0] and out["CHG"].tolist()[2] == 10.0
        assert out.loc[3:, "BASE"].isna().all() and out.loc[3:, "CHG"].isna().all()

    def test_same_day_record_after_dose_time_is_not_baseline(self):
        f = pd.DataFrame({"USUBJID": ["1", "1"], "PARAMCD": ["ALT"] * 2, "AVAL": [1.0, 2.0], "AVALC": ["1", "2"],
                          "ADT": D(["2024-01-10", "2024-01-10"]), "ADTM": D(["2024-01-10 08:00", "2024-01-10 11:00"]),
                          "TRTSDT": D(["2024-01-10"] * 2), "TRTSDTM": D(["2024-01-10 10:00"] * 2)})
        out = derive.derive_var_ablfl(f, ["USUBJID", "PARAMCD"], datetime="ADTM", reference_dtm="TRTSDTM")
        assert out["ABLFL"].tolist() == ["Y", ""]


def test_pchg_undefined_for_zero_baseline():
    out = derive.derive_var_pchg(pd.DataFrame({"AVAL": [15.0, 3.0], "BASE": [10.0, 0.0]}))
    assert out["PCHG"].iloc[0] == 50.0 and pd.isna(out["PCHG"].iloc[1])


def test_anrind_bnrind_and_shift():
    f = pd.DataFrame({"USUBJID": ["1", "1"], "PARAMCD": ["ALT"] * 2, "AVAL": [30.0, 80.0], "ANRLO": [7.0] * 2,
                      "ANRHI": [40.0] * 2, "ABLFL": ["Y", ""]})
    f = derive.derive_var_anrind(f)
    f = derive.derive_var_base(f, ["USUBJID", "PARAMCD"], "ANRIND", "BNRIND")
    assert derive.derive_var_shift(f)["SHIFT1"].tolist() == ["NORMAL to NORMAL", "NORMAL to HIGH"]


class TestAnalysisWindows:
    windows = [AnalysisWindow(1, "DAY 28", 28, 15, 28), AnalysisWindow(2, "WEEK 12", 85, 75, 112)]

    def test_closest_to_target_then_latest(self):
        f = pd.DataFrame({"USUBJID": ["1"] * 3, "PARAMCD": ["ALT"] * 3, "ADY": [80.0, 90.0, 88.0]})
        out = derive.derive_vars_analysis_window(f, self.windows, ["USUBJID", "PARAMCD"])
        assert out["ANL01FL"].tolist() == ["", "", "Y"]

    def test_tie_on_distance_goes_to_the_later_record(self):
        f = pd.DataFrame({"USUBJID": ["1"] * 2, "PARAMCD": ["ALT"] * 2, "ADY": [95.0, 75.0]})
        out = derive.derive_vars_analysis_window(f, self.windows, ["USUBJID", "PARAMCD"])
        assert out["ANL01FL"].tolist() == ["Y", ""]

    def test_records_outside_every_window_are_not_assigned(self):
        f = pd.DataFrame({"USUBJID": ["1"] * 2, "PARAMCD": ["ALT"] * 2, "ADY": [-5.0, 200.0]})
        out = derive.derive_vars_analysis_window(f, self.windows, ["USUBJID", "PARAMCD"])
        assert out["AVISIT"].tolist() == ["", ""] and out["ANL01FL"].tolist() == ["", ""]


def test_treatment_emergent_window_and_partial_start():
    f = pd.DataFrame({"ASTDT": D(["2024-01-09", "2024-02-18", "2024-02-19", None]),
                      "AENDT": D([None, None, None, "2024-01-05"]),
                      "TRTSDT": D(["2024-01-10"] * 4), "TRTEDT": D(["2024-01-21"] * 4)})
    assert derive.derive_var_trtemfl(f, end_window=28)["TRTEMFL"].tolist() == ["", "Y", "", ""]


def test_param_computed_only_where_all_inputs_exist_and_keeps_lineage():
    f = pd.DataFrame({"USUBJID": ["1"] * 5, "ADT": [1, 1, 1, 2, 2], "PARAMCD": ["A", "B", "C", "A", "B"],
                      "AVAL": [1.0, 2.0, 3.0, 4.0, 5.0], "__src": [f"LB.LBSEQ={i}" for i in range(1, 6)]})
    out = derive.derive_param_computed(f, ["USUBJID", "ADT"], ["A", "B", "C"], lambda w: w["A"] + w["B"] + w["C"],
                                       "SUM", "Sum")
    assert out[["ADT", "AVAL", "__src"]].values.tolist() == [[1, 6.0, "LB.LBSEQ=1 + LB.LBSEQ=2 + LB.LBSEQ=3"]]


def test_time_to_event_takes_first_event_else_last_censoring():
    adsl = pd.DataFrame({"USUBJID": ["1", "2", "3"], "TRTSDT": D(["2024-01-01", "2024-01-01", None]),
                         "DTHDT": D(["2024-06-01", None, None]), "LTXDT": D(["2024-03-01", None, None]),
                         "LSTALVDT": D(["2024-06-01", "2024-12-31", "2024-12-31"])})
    tte = derive.derive_param_tte(
        adsl, {"ADSL": adsl},
        [TteSource("ADSL", "DTHDT", "DEATH", 0), TteSource("ADSL", "LTXDT", "LIVER TRANSPLANTATION", 0)],
        [TteSource("ADSL", "LSTALVDT", "LAST DATE KNOWN ALIVE", 1)], "TRTSDT", "TFS", "TFS")
    assert tte[["USUBJID", "AVAL", "CNSR", "EVNTDESC"]].values.tolist() == [
        ["1", 61.0, 0, "LIVER TRANSPLANTATION"], ["2", 366.0, 1, "LAST DATE KNOWN ALIVE"]]
    assert tte["CNSDTDSC"].tolist() == ["", "LAST DATE KNOWN ALIVE"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1", "2", None]), st.sampled_from([1.0, 2.0, float("nan")]),
                          st.text(alphabet="ab+ ", max_size=3)), max_size=12),
       st.booleans(), st.booleans())
def test_lineage_of_computed_parameters_joins_sources_like_groupby(rows, two_keys, dropna):
    """joined_by_group (the source records of a computed parameter) is what pandas' groupby-join gives:
    groups in order of first appearance, records in their order, missing keys dropped or kept."""
    from cdisc_convert.text import joined_by_group

    frame = pd.DataFrame(rows, columns=["USUBJID", "ADT", "SRC"]).astype({"USUBJID": object, "SRC": object})
    by = ["USUBJID", "ADT"] if two_keys else ["USUBJID"]
    want = frame.groupby(by, sort=False, dropna=dropna)["SRC"].agg(" + ".join)
    got = joined_by_group(frame, by, "SRC", dropna=dropna)
    pd.testing.assert_series_equal(got, want, check_dtype=False, check_index_type=False)


def test_indicators_and_shifts_hold_one_object_per_distinct_value():
    """ANRIND, SHIFT1 and concatenated PARAMs of a million records cost a pointer each, not a string each."""
    n = 3000
    f = pd.DataFrame({"AVAL": np.tile([1.0, 5.0, 9.0], n // 3), "ANRLO": 2.0, "ANRHI": 8.0,
                      "BNRIND": np.tile(["NORMAL", "LOW", ""], n // 3).astype(object)})
    out = derive.derive_var_shift(derive.derive_var_anrind(f))
    assert out["ANRIND"].tolist()[:3] == ["LOW", "NORMAL", "HIGH"]
    assert out["SHIFT1"].tolist()[:3] == ["NORMAL to LOW", "LOW to NORMAL", ""]
    for col in ("ANRIND", "SHIFT1"):
        assert len({id(v) for v in out[col].tolist()}) == out[col].nunique()


def test_base_joins_only_the_keys_and_adds_one_column_at_the_end():
    """derive_var_base: the other columns are the input's own (not copied by a join of the whole
    dataset); an existing BASE is replaced and, as before, placed last."""
    from cdisc_convert.adam.derive import derive_var_base

    f = pd.DataFrame({"USUBJID": ["1", "1", "2", "2"], "PARAMCD": ["A", "A", "A", "B"], "BASE": [0.0] * 4,
                      "AVAL": [10.0, 12.0, 7.0, 3.0], "ABLFL": ["Y", "", "", "Y"], "NOTE": list("wxyz")},
                     index=[5, 6, 7, 8])
    out = derive_var_base(f, ["USUBJID", "PARAMCD"])
    assert out["BASE"].fillna(-1).tolist() == [10.0, 10.0, -1.0, 3.0]  # subject 2, A: no baseline record
    assert list(out.columns) == ["USUBJID", "PARAMCD", "AVAL", "ABLFL", "NOTE", "BASE"] and list(out.index) == [5, 6, 7, 8]
    assert np.shares_memory(out["AVAL"].to_numpy(), f["AVAL"].to_numpy())
