"""One focused test per derivation rule, with tiny frames that show the rule."""
from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdisc_convert.sdtm import derive


def s(*values):
    return pd.Series(list(values), dtype=object)


class TestIso8601:
    def test_complete_date_and_time(self):
        iso, bad = derive.iso8601_datetime(s("08 JAN 2024"), s("09:05"))
        assert iso.tolist() == ["2024-01-08T09:05"] and not bad.any()

    @pytest.mark.parametrize("text,expected", [
        ("UN JAN 2024", "2024-01"), ("UN UNK 2024", "2024"), ("UNK UNK 2024", "2024"), ("2024-03", "2024-03"),
        ("8 feb 2024", "2024-02-08"), ("", ""),
    ])
    def test_partial_dates_truncate(self, text, expected):
        iso, bad = derive.iso8601_date(s(text))
        assert iso.tolist() == [expected] and not bad.any()

    def test_time_dropped_on_partial_date(self):
        iso, _ = derive.iso8601_datetime(s("UN JAN 2024"), s("10:00"))
        assert iso.tolist() == ["2024-01"]

    @pytest.mark.parametrize("text", ["31 FEB 2024", "08 JNA 2024", "2024/13/01", "yesterday", "00 JAN 2024"])
    def test_unparseable_dates_are_flagged(self, text):
        iso, bad = derive.iso8601_date(s(text))
        assert bad.tolist() == [True] and iso.tolist() == [""]

    def test_bad_time_is_flagged(self):
        _, bad = derive.iso8601_datetime(s("08 JAN 2024"), s("24:10"))
        assert bad.tolist() == [True]

    @pytest.mark.parametrize("text,expected", [
        ("2024-02-30", ("", True)), ("2024-00", ("", True)), ("2024-13-01", ("", True)), ("0000-01-01", ("", True)),
        ("1601-03-05", ("1601-03-05", False)), ("UN 13 2024", ("", True)), ("  08-jan-2024 ", ("2024-01-08", False)),
        ("08/JAN/2024", ("2024-01-08", False)), ("\u0662\u0660\u0662\u0664", ("", True)),  # Arabic-Indic digits: not ISO
    ])
    def test_one_value(self, text, expected):
        assert derive.iso8601_date_text(text) == expected

    def test_seconds_kept_and_same_text_once(self):
        iso, bad = derive.iso8601_datetime(s("08 JAN 2024", "08 JAN 2024", ""), s("9:05:07", "9:05:07", "10:00"))
        assert iso.tolist() == ["2024-01-08T09:05:07", "2024-01-08T09:05:07", ""] and not bad.any()
        assert iso.iloc[0] is iso.iloc[1]  # computed once per distinct (date, time)

    @given(st.dates(min_value=date(1000, 1, 1)), st.sampled_from(["{d:02d} {mon} {y}", "{d} {Mon} {y}",
                                                                   "{y}-{m:02d}-{d:02d}", "UN {mon} {y}", "UNK UNK {y}"]))
    def test_every_calendar_date_in_every_edc_form(self, day, form):
        mon = day.strftime("%b")
        text = form.format(d=day.day, m=day.month, y=f"{day.year:04d}", mon=mon.upper(), Mon=mon)
        expected = (day.isoformat() if form[1] != "N" else f"{day.year:04d}-{day.month:02d}" if "mon" in form
                    else f"{day.year:04d}")
        assert derive.iso8601_date_text(text) == (expected, False)

    @given(st.text(alphabet="0123456789 -/:UNKJAFEBDECabc", max_size=14))
    def test_any_text_gives_an_iso_8601_date_or_a_flag(self, text):
        iso, bad = derive.iso8601_date_text(text)
        if bad or not text.strip():
            assert iso == ""
        else:  # a real date, or a year / year-month prefix of one
            assert re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", iso)
            date.fromisoformat((iso + "-01-01")[:10])


class TestStudyDay:
    def test_no_day_zero(self):
        days = derive.study_day(s("2024-01-06", "2024-01-07", "2024-01-08", "2024-01-09"), s(*["2024-01-08T10:00"] * 4))
        assert days.tolist() == [-2.0, -1.0, 1.0, 2.0]
        assert 0 not in days.tolist()

    def test_partial_date_has_no_study_day(self):
        assert np.isnan(derive.study_day(s("2024-01"), s("2024-01-08")).iloc[0])

    def test_missing_reference_has_no_study_day(self):
        assert np.isnan(derive.study_day(s("2024-01-09"), s("")).iloc[0])


def test_age_at_consent_counts_completed_years():
    assert derive.age_in_years(s("1960-05-20", "1960-05-19"), s("2024-05-19", "2024-05-19")).tolist() == [63.0, 64.0]


def test_age_with_partial_birth_date_is_not_overstated():
    assert derive.age_in_years(s("1960"), s("2024-12-31")).tolist() == [64.0]
    assert derive.age_in_years(s("1960"), s("2024-06-30")).tolist() == [63.0]


class TestResults:
    def test_less_than_lloq_keeps_text_and_no_number(self):
        out = derive.standard_results(s("<20"), s("IU/mL"), s("HBVDNA"), s("IU/mL"), {})
        assert out["STRESC"].tolist() == ["<20"] and np.isnan(out["STRESN"].iloc[0])

    def test_greater_than_converted_with_factor(self):
        out = derive.standard_results(s(">2"), s("mg/dL"), s("BILI"), s("umol/L"), {("BILI", "mg/dL", "umol/L"): 17.1})
        assert out["STRESC"].tolist() == [">34.2"]

    @pytest.mark.parametrize("testcd,value,unit,std,factor,expected", [
        ("BILI", "2.0", "mg/dL", "umol/L", 17.1, 34.2),
        ("ALB", "3.5", "g/dL", "g/L", 10, 35.0),
        ("CREAT", "1.1", "mg/dL", "umol/L", 88.4, 97.24),
    ])
    def test_unit_conversion_to_standard_units(self, testcd, value, unit, std, factor, expected):
        out = derive.standard_results(s(value), s(unit), s(testcd), s(std), {(testcd, unit, std): factor})
        assert out["STRESN"].iloc[0] == pytest.approx(expected)
        assert out["STRESU"].iloc[0] == std and out["STRESC"].iloc[0] == f"{expected:g}"

    def test_result_in_standard_unit_is_kept(self):
        out = derive.standard_results(s("38.5"), s("umol/L"), s("BILI"), s("umol/L"), {})
        assert out["STRESN"].tolist() == [38.5] and not out["unconverted"].any()

    def test_undeclared_unit_is_flagged_not_guessed(self):
        out = derive.standard_results(s("2.0"), s("mmol/L"), s("BILI"), s("umol/L"), {})
        assert out["unconverted"].tolist() == [True] and np.isnan(out["STRESN"].iloc[0])

    def test_character_results_upper_cased(self):
        out = derive.standard_results(s("Negative"), s(""), s("HIVAB"), s(""), {})
        assert out["STRESC"].tolist() == ["NEGATIVE"]


def test_reference_range_indicator():
    nrind = derive.reference_range_indicator(pd.Series([5.0, 10.0, 100.0, 101.0]), pd.Series([10.0] * 4),
                                             pd.Series([100.0] * 4))
    assert nrind.tolist() == ["LOW", "NORMAL", "NORMAL", "HIGH"]


def test_reference_range_indicator_without_range_is_empty():
    assert derive.reference_range_indicator(pd.Series([5.0]), pd.Series([np.nan]), pd.Series([np.nan])).tolist() == [""]


class TestBaselineFlag:
    def frame(self, dtcs, results, ref="2024-01-10T10:00"):
        return pd.DataFrame({"USUBJID": ["1"] * len(dtcs), "TESTCD": ["ALT"] * len(dtcs), "DTC": dtcs,
                             "REF": [ref] * len(dtcs), "ORRES": results})

    def test_last_non_missing_before_first_dose(self):
        f = self.frame(["2024-01-01", "2024-01-09", "2024-01-10T08:00", "2024-01-11"], ["1", "2", "", "4"])
        assert derive.baseline_flag(f, ["USUBJID", "TESTCD"], "DTC", "REF", "ORRES").tolist() == ["", "Y", "", ""]

    def test_same_day_sample_before_infusion_time_is_baseline(self):
        f = self.frame(["2024-01-09", "2024-01-10T08:00", "2024-01-10T11:00"], ["1", "2", "3"])
        assert derive.baseline_flag(f, ["USUBJID", "TESTCD"], "DTC", "REF", "ORRES").tolist() == ["", "Y", ""]

    def test_missing_baseline_gives_no_flag(self):
        f = self.frame(["2024-01-12", "2024-01-20"], ["1", "2"])
        assert derive.baseline_flag(f, ["USUBJID", "TESTCD"], "DTC", "REF", "ORRES").tolist() == ["", ""]

    def test_untreated_subject_gets_no_flag(self):
        f = self.frame(["2024-01-01"], ["1"], ref="")
        assert derive.baseline_flag(f, ["USUBJID", "TESTCD"], "DTC", "REF", "ORRES").tolist() == [""]


def test_sequence_restarts_per_subject():
    assert derive.sequence_number(pd.DataFrame({"USUBJID": ["a", "a", "b", "b", "b"]})).tolist() == [1, 2, 1, 2, 3]


def test_unscheduled_visit_follows_last_planned_visit():
    visits = pd.DataFrame({"folder": ["SCRN", "D1", "D7", "D28"], "visitnum": [1.0, 3.0, 6.0, 7.0],
                           "visit": ["SCREENING", "DAY 1", "DAY 7", "DAY 28"], "day": [-14, 1, 7, 28]})
    out = derive.visit_of(s("UNS1", "D28", "UNS2"), pd.Series([12.0, 28.0, -3.0]), visits)
    assert out["VISITNUM"].tolist() == [6.01, 7.0, 1.01]
    assert out["VISIT"].tolist() == ["UNSCHEDULED 6.01", "DAY 28", "UNSCHEDULED 1.01"]


def test_epoch_from_subject_elements():
    se = pd.DataFrame({"USUBJID": ["1"] * 3, "EPOCH": ["SCREENING", "TREATMENT", "FOLLOW-UP"],
                       "SESTDTC": ["2024-01-01", "2024-01-10T10:00", "2024-04-05"],
                       "SEENDTC": ["2024-01-10T10:00", "2024-04-05", "2024-12-01"]})
    f = pd.DataFrame({"USUBJID": ["1"] * 5, "DTC": ["2024-01-09", "2024-01-10", "2024-04-06", "2024-02", "2024-01"]})
    # a partial date gets the epoch its whole month lies in (February), none when it spans two (January)
    assert derive.epoch_of(f, "DTC", se).tolist() == ["SCREENING", "TREATMENT", "FOLLOW-UP", "TREATMENT", ""]


_SOME_DATES = ["2024-01-01", "2024-01-05", "2024-01-10T10:00", "2024-01-31", "2024-02-15", "2024-01",
               "2024-02", "2024-12", "2024", "2023", "", "2024-13", "2024-02-30"]


def _epoch_by_hand(se: list[dict], subject: str, dtc: str) -> str:
    """The EPOCH rule one record at a time: the latest-starting element whose span holds the day
    (the subject's last-starting element runs on past its end), for both ends of a partial date."""
    def day(text):
        try:
            return date.fromisoformat(text[:10]) if len(text) >= 10 else None
        except ValueError:
            return None

    def span(text):
        if day(text):
            return day(text), day(text)
        if re.fullmatch(r"\d{4}-\d{2}", text) and 1 <= int(text[5:]) <= 12:
            y, m = int(text[:4]), int(text[5:])
            following = date(y + 1, 1, 1) if m == 12 else date(y, m + 1, 1)
            return date(y, m, 1), date.fromordinal(following.toordinal() - 1)
        if re.fullmatch(r"\d{4}", text) and int(text) > 0:
            return date(int(text), 1, 1), date(int(text), 12, 31)
        return None, None

    mine = [(day(e["SESTDTC"]), i, e) for i, e in enumerate(se) if e["USUBJID"] == subject and day(e["SESTDTC"])]
    latest = max((s for s, _, _ in mine), default=None)

    def at(d):
        holding = [(s, i, e["EPOCH"]) for s, i, e in mine if d is not None and s <= d and
                   (day(e["SEENDTC"]) is None or d <= day(e["SEENDTC"]) or s == latest)]
        return max(holding)[2] if holding else ""
    lo, hi = span(dtc)
    return at(lo) if at(lo) == at(hi) else ""


@given(st.lists(st.fixed_dictionaries({"USUBJID": st.sampled_from(["1", "2"]),
                                       "EPOCH": st.sampled_from(["SCREENING", "TREATMENT", "FOLLOW-UP"]),
                                       "SESTDTC": st.sampled_from(_SOME_DATES),
                                       "SEENDTC": st.sampled_from(_SOME_DATES)}), max_size=6),
       st.lists(st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(_SOME_DATES)), max_size=8))
def test_epoch_is_the_element_holding_the_date_record_by_record(se, records):
    elements = pd.DataFrame(se, columns=["USUBJID", "EPOCH", "SESTDTC", "SEENDTC"])
    frame = pd.DataFrame(records, columns=["USUBJID", "DTC"])
    assert derive.epoch_of(frame, "DTC", elements).tolist() == [_epoch_by_hand(se, u, d) for u, d in records]
