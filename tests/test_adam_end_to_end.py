"""ADaM of the example study: the checks of the ADaM issue, read back with independent readers."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from conftest import STUDY

ADAM = ["adae", "adlb", "adqs", "adsl", "adtte"]
SAS_EPOCH = pd.Timestamp("1960-01-01")


def read(out, name):
    frame = pd.read_sas(out / "adam" / f"{name}.xpt", format="xport", encoding="ascii")
    # pandas' IBM-float reader turns a stored 0.0 (all zero bytes) into 5.4e-79; pyreadstat and
    # SAS read 0.0. Undo that one quirk of the independent reader.
    for col in frame.columns:
        if frame[col].dtype.kind == "f":
            frame[col] = frame[col].mask(frame[col].abs() <= 1e-70, 0.0)
    return frame


def test_adam_datasets_written(example_out):
    assert sorted(p.stem for p in (example_out / "adam").glob("*.xpt")) == ADAM
    assert sorted(p.stem for p in (example_out / "adam").glob("*.json")) == ADAM


@pytest.mark.parametrize("name", ADAM)
def test_adam_xpt_reads_back_equal_to_what_was_written(example_out, name):
    doc = json.loads((example_out / "adam" / f"{name}.json").read_text())
    by_pandas = read(example_out, name)
    by_pyreadstat, meta = pyreadstat.read_xport(str(example_out / "adam" / f"{name}.xpt"))
    assert meta.table_name == name.upper() and len(by_pandas) == doc["records"] == len(by_pyreadstat)
    for k, col in enumerate(doc["columns"]):
        written = [r[k] for r in doc["rows"]]
        got = by_pandas[col["name"]]
        if col["dataType"] == "string":
            assert got.fillna("").tolist() == written, col["name"]
        elif col["dataType"] in ("date", "datetime"):
            assert meta.original_variable_types[col["name"]] in ("DATE9", "DATETIME20")
            stamps = pd.to_datetime(pd.Series(written, dtype=object))
            unit = "D" if col["dataType"] == "date" else "s"
            back = SAS_EPOCH + pd.to_timedelta(got.astype(float), unit=unit)  # SAS numeric date/datetime
            shape = "%Y-%m-%d" if unit == "D" else "%Y-%m-%dT%H:%M:%S"
            assert back.dt.strftime(shape).fillna("").tolist() == stamps.dt.strftime(shape).fillna("").tolist()
        else:
            want = np.array([np.nan if v is None else v for v in written], dtype=float)
            assert np.allclose(got.astype(float), want, equal_nan=True, rtol=1e-12, atol=0), col["name"]


def test_adsl_has_one_record_per_dm_subject(example_out):
    adsl = read(example_out, "adsl")
    dm = pd.read_sas(example_out / "sdtm" / "dm.xpt", format="xport", encoding="ascii")
    assert sorted(adsl.USUBJID) == sorted(dm.USUBJID) and adsl.USUBJID.is_unique


def test_adsl_treatment_disposition_death_and_transplant(example_out):
    adsl = read(example_out, "adsl")
    assert (adsl.SAFFL == "Y").all() and set(adsl.NUMINF) <= {1.0, 2.0, 3.0} and (adsl.NUMINF == 2).any()
    assert adsl.TRT01AN.value_counts().to_dict() == {1.0: 6, 2.0: 6, 4.0: 6}
    assert (adsl.DTHFL == "Y").sum() == 1 and adsl.loc[adsl.DTHFL == "Y", "DTHDT"].notna().all()
    assert adsl.LTXDT.notna().sum() == 1
    assert set(adsl.EOSSTT) == {"COMPLETED", "DISCONTINUED"}
    assert set(adsl.loc[adsl.EOSSTT == "DISCONTINUED", "DCSREAS"]) == {"DEATH", "WITHDRAWAL BY SUBJECT", "OTHER"}
    assert set(adsl.BLCPCL) <= {"A", "B", "C"} and adsl.BLMELD.notna().all()
    assert (adsl.DLTEVLFL == "Y").all()


def test_every_chg_equals_aval_minus_base(example_out):
    for name in ("adlb", "adqs"):
        bds = read(example_out, name)
        has = bds.CHG.notna()
        assert has.any()
        assert np.allclose(bds.loc[has, "CHG"], bds.loc[has, "AVAL"] - bds.loc[has, "BASE"], atol=1e-9)
        assert (bds.AVAL.notna() & bds.BASE.notna() == has).all()


def test_one_baseline_per_subject_and_parameter(example_out):
    adlb = read(example_out, "adlb")
    base = adlb[adlb.ABLFL == "Y"]
    assert not base.duplicated(["USUBJID", "PARAMCD"]).any()
    assert (base.ADT <= base.TRTSDT).all()


def test_treatment_emergent_aes_start_on_or_after_first_dose(example_out):
    adae = read(example_out, "adae")
    te = adae[adae.TRTEMFL == "Y"]
    assert len(te) > 0 and (te.ASTDT >= te.TRTSDT).all()
    assert adae.ASTDTF.isin(["", "D", "M"]).all() and (adae.ASTDTF != "").any()  # partial dates imputed
    assert set(adae.DLTFL) <= {"Y", "N", ""} and (adae.DLTFL == "Y").sum() >= 1


def test_adlb_derived_parameters_and_windows(example_out):
    adlb = read(example_out, "adlb")
    assert {"MELD", "CPSCORE", "CPCLASS"} <= set(adlb.PARAMCD)
    cp = adlb[adlb.PARAMCD == "CPSCORE"]
    assert cp.AVAL.between(5, 15).all()
    anl = adlb[adlb.ANL01FL == "Y"]
    assert not anl.duplicated(["USUBJID", "PARAMCD", "AVISITN"]).any()
    lineage = pd.read_csv(example_out / "adam" / "lineage" / "adlb.csv", dtype=str, keep_default_na=False)
    meld_src = lineage.loc[lineage.PARAMCD == "MELD", "source"]
    assert meld_src.str.count(r"LB\.LBSEQ=").eq(3).all()  # each MELD traced to its 3 LB records


def test_adqs_scores_in_range(example_out):
    adqs = read(example_out, "adqs")
    sf = adqs[adqs.PARAMCD.str.startswith("SF36") & ~adqs.PARAMCD.str[4:].str.isdigit()]
    assert set(sf.PARAMCD) == {"SF36PF", "SF36RP", "SF36RE", "SF36VT", "SF36MH", "SF36SF", "SF36BP", "SF36GH"}
    assert sf.AVAL.between(0, 100).all()
    assert adqs.loc[adqs.PARAMCD == "CLDQOVR", "AVAL"].between(1, 7).all()
    assert adqs.loc[adqs.PARAMCD == "EQ5DIDX", "AVAL"].between(-0.285, 1).all()


def test_adtte_os_and_tfs(example_out):
    adtte = read(example_out, "adtte")
    assert set(adtte.PARAMCD) == {"OS", "TFS"} and len(adtte) == 36
    os_, tfs = adtte[adtte.PARAMCD == "OS"], adtte[adtte.PARAMCD == "TFS"]
    assert (os_.CNSR == 0).sum() == 1 and (tfs.CNSR == 0).sum() == 2  # one death; death or transplant
    assert (adtte.AVAL >= 1).all() and (adtte.loc[adtte.CNSR == 1, "CNSDTDSC"] != "").all()


def test_adam_only_rederives_from_the_sdtm_folder(example_out, tmp_path):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(example_out / "sdtm", out / "sdtm")
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "run", str(STUDY), "--out", str(out), "--adam-only"],
                   check=True, capture_output=True)
    for name in ADAM:
        assert (out / "adam" / f"{name}.xpt").read_bytes() == (example_out / "adam" / f"{name}.xpt").read_bytes(), name


def test_adam_only_needs_no_edc_arms_visits_or_elements(example_out, tmp_path):
    # --adam-only reads SDTM: a study folder with only its identity and ADaM specs is enough
    import shutil
    study = tmp_path / "study"
    shutil.copytree(STUDY / "adam", study / "adam")
    (study / "study.yaml").write_text('study:\n  studyid: NCT05948982\n  created: "2026-01-01T00:00:00"\n'
                                      'constants:\n  STUDYID: NCT05948982\n')
    out = tmp_path / "out"
    shutil.copytree(example_out / "sdtm", out / "sdtm")
    done = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "run", str(study), "--out", str(out),
                           "--adam-only"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "adam" / "adsl.xpt").read_bytes() == (example_out / "adam" / "adsl.xpt").read_bytes()


def test_validate_an_adam_folder_against_a_named_sdtm_folder(example_out, tmp_path):
    import shutil
    adam = tmp_path / "elsewhere" / "adam"
    shutil.copytree(example_out / "adam", adam)  # no sdtm/ beside it: --sdtm names it
    args = [sys.executable, "-m", "cdisc_convert.cli", "validate", str(adam), "--study", str(STUDY),
            "--out", str(tmp_path / "report"), "--fail-on", "error"]
    done = subprocess.run([*args, "--sdtm", str(example_out / "sdtm")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # an SDTM folder without AE and LB: the lineage of ADAE and ADLB now points nowhere
    partial = tmp_path / "partial-sdtm"
    partial.mkdir()
    shutil.copy(example_out / "sdtm" / "dm.xpt", partial / "dm.xpt")
    lost = subprocess.run([*args, "--sdtm", str(partial)], capture_output=True, text=True)
    assert lost.returncode == 1
    findings = json.loads((tmp_path / "report" / "report.json").read_text())["findings"]
    assert {f["dataset"] for f in findings if f["rule"] == "AD0024"} >= {"ADAE", "ADLB"}
    bad = subprocess.run([*args, "--sdtm", str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
