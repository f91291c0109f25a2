"""MELD and Child-Pugh against values worked out by hand for subjects of the example study and
against the formula's reference cases; RAND-36, CLDQ and EQ-5D-5L scoring rules."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from cdisc_convert.adam import scores


def s(*v):
    return pd.Series(list(v), dtype=float)


class TestMeldReferenceCases:
    def test_all_inputs_at_one_gives_the_constant(self):
        # ln(1) = 0 for every term: MELD = 6.43 (the published minimum, 6 once rounded)
        assert scores.meld_score(s(17.1), s(1.0), s(88.4)).item() == pytest.approx(6.43)

    def test_values_below_one_are_floored_to_one(self):
        assert scores.meld_score(s(5.0), s(0.8), s(40.0)).item() == pytest.approx(6.43)

    def test_creatinine_is_capped_at_four(self):
        capped = 9.57 * math.log(4.0) + 6.43
        assert scores.meld_score(s(17.1), s(1.0), s(8 * 88.4)).item() == pytest.approx(capped)

    def test_result_is_not_rounded(self):
        value = scores.meld_score(s(34.2), s(1.5), s(1.2 * 88.4)).item()
        assert value == pytest.approx(3.78 * math.log(2) + 11.2 * math.log(1.5) + 9.57 * math.log(1.2) + 6.43)
        assert value != round(value)


# Day -1 (DM1 folder) values of the committed example export (edc/lbliv.csv, edc/cirr.csv),
# worked out by hand (6 decimals per step):
#  01-002: BILI 26.1 umol/L = 1.526316 mg/dL, INR 1.05, CREAT 99.2 umol/L = 1.122172 mg/dL
#          3.78*0.422857 + 11.2*0.048790 + 9.57*0.115268 + 6.43 = 1.598400 + 0.546450 + 1.103111 + 6.43 = 9.677961
#          Child-Pugh: BILI <34.2 -> 1, ALB 28.3 g/L -> 2, INR 1.05 -> 1, ascites Mild -> 2, HE Grade 2 -> 2 = 8 (B)
#  01-004: BILI 1.86 mg/dL, INR 1.54, CREAT 0.94 mg/dL -> floored to 1.0
#          3.78*0.620576 + 11.2*0.431782 + 0 + 6.43 = 2.345777 + 4.835958 + 6.43 = 13.611735
#          Child-Pugh: BILI 31.8 umol/L -> 1, ALB 2.41 g/dL = 24.1 g/L -> 3, INR -> 1, ascites None -> 1, HE Grade 2 -> 2 = 8 (B)
#  01-005: BILI 2.55 mg/dL, INR 0.88 -> 1.0, CREAT 0.86 mg/dL -> 1.0
#          3.78*0.936093 + 0 + 0 + 6.43 = 3.538432 + 6.43 = 9.968432
#          Child-Pugh: BILI 43.6 umol/L -> 2, ALB 30.3 g/L -> 2, INR -> 1, ascites Severe -> 3, HE None -> 1 = 9 (B)
#  01-001: BILI 33.0 umol/L = 1.929825 mg/dL, INR 1.69, CREAT 88.2 umol/L -> 0.997738 -> 1.0
#          3.78*0.657429 + 11.2*0.524729 + 0 + 6.43 = 2.485082 + 5.876965 + 6.43 = 14.792047
#          Child-Pugh: BILI -> 1, ALB 27.3 -> 3, INR 1.69 -> 1, ascites Severe -> 3, HE Grade 2 -> 2 = 10 (C)
BY_HAND = {
    "01-002": (9.677961, 8.0, "B"),
    "01-004": (13.611735, 8.0, "B"),
    "01-005": (9.968432, 9.0, "B"),
    "01-001": (14.792047, 10.0, "C"),
}


@pytest.mark.parametrize("subject", sorted(BY_HAND))
def test_meld_and_child_pugh_match_hand_worked_values(example_out, subject):
    adlb = pd.read_sas(example_out / "adam" / "adlb.xpt", format="xport", encoding="ascii")
    usubjid = f"NCT05948982-{subject}"
    day_minus_1 = adlb[(adlb.USUBJID == usubjid) & (adlb.PARAMCD == "INR")]
    # the Day -1 record is the one with VISIT DAY -1
    adt = day_minus_1.loc[day_minus_1.VISIT == "DAY -1", "ADT"].item()
    rec = adlb[(adlb.USUBJID == usubjid) & (adlb.ADT == adt)].set_index("PARAMCD")
    meld, cp, cpclass = BY_HAND[subject]
    assert rec.loc["MELD", "AVAL"] == pytest.approx(meld, abs=5e-5)
    assert rec.loc["CPSCORE", "AVAL"] == cp and rec.loc["CPCLASS", "AVALC"] == cpclass


@pytest.mark.parametrize("score,cls", [(5, "A"), (6, "A"), (7, "B"), (9, "B"), (10, "C"), (15, "C")])
def test_child_pugh_class_boundaries(score, cls):
    assert scores.child_pugh_class(s(score)).item() == cls


@pytest.mark.parametrize("bili,points", [(34.1, 1), (34.2, 2), (51.3, 2), (51.4, 3)])
def test_child_pugh_bilirubin_bands(bili, points):
    p = scores.child_pugh_points(s(bili), s(40.0), s(1.0), pd.Series(["NONE"]), pd.Series(["NONE"]))
    assert p["CPBILI"].item() == points and p["CPSCORE"].item() == 4 + points


def test_child_pugh_needs_all_five_components():
    p = scores.child_pugh_points(s(20.0), s(40.0), s(1.0), pd.Series([""]), pd.Series(["NONE"]))
    assert pd.isna(p["CPSCORE"].item())


def test_rand36_recodes_and_averages_scales():
    items = pd.DataFrame({i: [1] for i in range(1, 37)})
    out = scores.rand36_scales(items).iloc[0]
    # all answers 1: PF items (1 = limited a lot) -> 0; RP/RE (1 = yes, a problem) -> 0;
    # GH items 1, 34, 36 -> 100 and 33, 35 -> 0: mean 60; BP items 21, 22 -> 100
    assert out["SF36PF"] == 0 and out["SF36RP"] == 0 and out["SF36GH"] == 60 and out["SF36BP"] == 100
    assert out["SF36VT"] == 50  # 23, 27 -> 100; 29, 31 -> 0


def test_rand36_leaves_out_missing_items():
    items = pd.DataFrame({i: [2] for i in range(1, 37)})
    items[13] = float("nan")
    assert scores.rand36_scales(items)["SF36RP"].item() == 100


def test_cldq_domains_overall_and_total():
    items = pd.DataFrame({i: [4] for i in range(1, 30)})
    items[1], items[5], items[17] = 1, 1, 1  # abdominal symptoms
    out = scores.cldq_scores(items).iloc[0]
    assert out["CLDQAS"] == 1 and out["CLDQWO"] == 4
    assert out["CLDQTOT"] == 26 * 4 + 3 and out["CLDQOVR"] == pytest.approx((26 * 4 + 3) / 29)


def test_eq5d5l_index_england_value_set():
    levels = pd.DataFrame({"MO": [1, 2, 5], "SC": [1, 1, 5], "UA": [1, 3, 5], "PD": [1, 4, 5], "AD": [1, 1, 5]})
    assert scores.eq5d5l_index(levels).round(3).tolist() == [1.0, round(1 - 0.058 - 0.063 - 0.276, 3), -0.285]
