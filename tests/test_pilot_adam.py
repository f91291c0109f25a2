"""The CDISC pilot's ADSL, ADAE and ADVS, derived by `cdisc-convert run mappings/cdiscpilot01` from
the SDTM that run produces, as admiral's templates (ad_adsl.R, ad_adae.R, ad_advs.R) derive
them: each test checks one template rule on the written files, read back with pandas."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lxml import etree

from cdisc_convert.define_xml import DEFINE_XSD


EPOCH = pd.Timestamp("1960-01-01")


@pytest.fixture(scope="module")
def out(pilot_out):
    return pilot_out  # converted once per session (conftest)


def read(out, folder, name):
    frame = pd.read_sas(out / folder / f"{name}.xpt", format="xport", encoding="ascii")
    for col in frame.columns:  # pandas reads a stored 0.0 as 5.4e-79
        if frame[col].dtype.kind == "f":
            frame[col] = frame[col].mask(frame[col].abs() <= 1e-70, 0.0)
    return frame


def day(values):
    return EPOCH + pd.to_timedelta(values, unit="D")


@pytest.fixture(scope="module")
def adsl(out):
    return read(out, "adam", "adsl")


@pytest.fixture(scope="module")
def adae(out):
    return read(out, "adam", "adae")


@pytest.fixture(scope="module")
def advs(out):
    return read(out, "adam", "advs")


def test_written_validated_with_no_error_and_define_schema_valid(out):
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"ADSL", "ADAE", "ADVS"} <= set(manifest["datasets"])
    assert manifest["validation"]["adam"]["error"] == 0
    schema = etree.XMLSchema(etree.parse(str(DEFINE_XSD)))
    assert schema.validate(etree.parse(str(out / "adam" / "define.xml"))), schema.error_log


def test_adsl_one_record_per_dm_subject_with_the_templates_variables(out, adsl):
    dm = read(out, "sdtm", "dm")
    assert sorted(adsl.USUBJID) == sorted(dm.USUBJID) and adsl.USUBJID.is_unique
    assert len(adsl.columns) == 54 and {"LSTALVDT", "DTHCGR1", "LDDTHGR1", "DTHB30FL"} <= set(adsl.columns)


def test_treatment_dates_first_and_last_dose_with_time_imputed(out, adsl):
    ex = read(out, "sdtm", "ex")
    dosed = ex[(ex.EXDOSE > 0) | ((ex.EXDOSE == 0) & ex.EXTRT.str.contains("PLACEBO"))]
    first = pd.to_datetime(dosed.groupby("USUBJID").EXSTDTC.min())
    last = pd.to_datetime(dosed[dosed.EXENDTC != ""].groupby("USUBJID").EXENDTC.max())
    a = adsl.set_index("USUBJID")
    assert (day(a.loc[first.index, "TRTSDT"]) == first).all()
    assert (day(a.loc[last.index, "TRTEDT"]) == last).all()
    # last dose at the end of its day (time imputed "last"), flagged as imputed hours
    end = EPOCH + pd.to_timedelta(a.loc[last.index, "TRTEDTM"], unit="s")
    assert (end.dt.strftime("%H:%M:%S") == "23:59:59").all() and (a.loc[last.index, "TRTETMF"] == "H").all()
    assert (a.TRTDURD.dropna() == (a.TRTEDT - a.TRTSDT + 1).dropna()).all()


def test_disposition_status_and_safety_population(adsl):
    assert adsl.EOSSTT.fillna("").value_counts().to_dict() == {"DISCONTINUED": 144, "COMPLETED": 110, "": 52}
    assert adsl.SAFFL.value_counts().to_dict() == {"Y": 254, "N": 52}
    assert adsl[adsl.SAFFL == "N"].TRTSDT.isna().all()


def test_death_variables_from_ae_then_ds(adsl):
    dead = adsl[adsl.DTHFL == "Y"].set_index("USUBJID")
    assert dead.DTHCAUS.to_dict() == {"01-701-1211": "SUDDEN DEATH", "01-704-1445": "COMPLETED SUICIDE",
                                      "01-710-1083": "MYOCARDIAL INFARCTION"}
    assert (dead.DTHDOM == "AE").all() and (dead.DTHCGR1 == "ADVERSE EVENT").all()
    # elapsed days from last dose, without the added day
    assert (dead.LDDTHELD == dead.DTHDT - dead.TRTEDT).all() and (dead.LDDTHGR1 == "<= 30").all()
    assert (adsl[adsl.DTHFL != "Y"].DTHCGR1.fillna("") == "").all()


def test_last_known_alive_not_before_last_dose(adsl):
    dosed = adsl[adsl.TRTEDT.notna()]
    assert (dosed.LSTALVDT >= dosed.TRTEDT).all()


def test_groupings(adsl):
    assert set(adsl.AGEGR1) <= {"<18", "18-64", ">64"}
    assert (adsl.loc[adsl.AGE > 64, "AGEGR1"] == ">64").all()
    assert (adsl.loc[adsl.RACE == "WHITE", "RACEGR1"] == "White").all()
    assert (adsl.loc[adsl.RACE != "WHITE", "RACEGR1"] == "Non-white").all()
    assert (adsl.REGION1 == "NA").all()  # every pilot site is in the USA


def test_adae_one_record_per_ae_with_every_adsl_variable_equal_to_adsl(out, adae, adsl):
    ae = read(out, "sdtm", "ae")
    assert len(adae) == len(ae)
    merged = adae[["USUBJID", "AGEGR1", "SAFFL", "TRT01A"]].merge(adsl[["USUBJID", "AGEGR1", "SAFFL", "TRT01A"]],
                                                                  on="USUBJID", suffixes=("", "_adsl"))
    for var in ("AGEGR1", "SAFFL", "TRT01A"):
        assert (merged[var].fillna("") == merged[f"{var}_adsl"].fillna("")).all()


def test_adae_partial_start_not_before_first_dose_and_treatment_emergence(adae):
    partial = adae[adae.ASTDTF.fillna("") != ""]
    same_month = partial[day(partial.TRTSDT).dt.to_period("M") == pd.to_datetime(
        partial.AESTDTC.str.slice(0, 7), format="%Y-%m", errors="coerce").dt.to_period("M")]
    assert (same_month.ASTDT >= same_month.TRTSDT).all()
    known = adae[adae.ASTDT.notna() & adae.TRTSDT.notna()]
    emergent = (known.ASTDT >= known.TRTSDT) & (known.ASTDT <= known.TRTEDT + 30)
    assert ((known.TRTEMFL == "Y") == emergent).all()


def test_adae_first_most_severe_occurrence_once_per_subject(adae):
    flagged = adae[adae.AOCCIFL == "Y"]
    assert flagged.USUBJID.is_unique
    assert set(flagged.USUBJID) == set(adae.loc[adae.TRTEMFL == "Y", "USUBJID"])
    worst = adae[adae.TRTEMFL == "Y"].groupby("USUBJID").ASEVN.max()
    assert (flagged.set_index("USUBJID").ASEVN == worst.loc[flagged.USUBJID].values).all()


def test_adae_last_dose_on_or_before_the_event(adae):
    dosed = adae[adae.LDOSEDTM.notna()]
    assert (dosed.LDOSEDTM <= dosed.ASTDTM).all()
    assert ((dosed.ADURN.dropna() >= 1)).all() and (adae.loc[adae.ADURN.notna(), "ADURU"] == "DAYS").all()


def test_advs_derived_parameters_follow_their_formulas(advs):
    vs = advs[advs.DTYPE.fillna("") == ""]
    key = ["USUBJID", "ADT", "VISITNUM", "ATPTN"]
    wide = vs.pivot_table(index=key, columns="PARAMCD", values="AVAL", aggfunc="first")
    both = wide.dropna(subset=["SYSBP", "DIABP", "MAP"])
    assert len(both) > 1000 and np.allclose(both.MAP, (2 * both.DIABP + both.SYSBP) / 3)
    height = vs[vs.PARAMCD == "HEIGHT"].groupby("USUBJID").AVAL.last()
    bmi = vs[vs.PARAMCD == "BMI"].merge(vs[vs.PARAMCD == "WEIGHT"], on=["USUBJID", "ADT", "VISITNUM"],
                                        suffixes=("", "_w"))
    expected = bmi.AVAL_w / (height.loc[bmi.USUBJID].values / 100) ** 2
    assert len(bmi) > 1000 and np.allclose(bmi.AVAL, expected)


def test_advs_averages_per_visit_and_end_of_treatment_record(advs):
    real = advs[advs.DTYPE.fillna("") == ""]
    avg = advs[advs.DTYPE == "AVERAGE"]
    key = ["USUBJID", "PARAMCD", "AVISIT", "ADT"]
    means = real[real.AVAL.notna()].fillna({"AVISIT": ""}).groupby(key).AVAL.mean().rename("MEAN").reset_index()
    both = avg.fillna({"AVISIT": ""}).merge(means, on=key, how="left", validate="one_to_one")
    assert len(avg) == len(means) == 20060 and np.allclose(both.AVAL, both.MEAN)
    lov = advs[advs.DTYPE == "LOV"]
    assert (lov.AVISIT == "End of Treatment").all() and (lov.AVISITN == 99).all()
    assert not lov.duplicated(["USUBJID", "PARAMCD", "ATPTN"]).any()


def test_advs_baseline_and_change_after_baseline_only(advs):
    base = advs[advs.ABLFL == "Y"]
    assert not base.duplicated(["USUBJID", "PARAMCD", "BASETYPE"]).any()
    assert (base.ADT <= base.TRTSDT).all()
    assert advs.loc[~(advs.AVISITN > 0), "CHG"].isna().all()
    post = advs[(advs.AVISITN > 0) & advs.BASE.notna() & advs.AVAL.notna()]
    assert np.allclose(post.CHG, post.AVAL - post.BASE)


def test_advs_aseq_numbers_each_subjects_records(advs):
    for _, g in advs.groupby("USUBJID"):
        assert sorted(g.ASEQ) == list(range(1, len(g) + 1))
