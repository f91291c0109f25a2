"""The example study end to end: CSV and ODM agree, XPT reads back, counts, determinism."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyreadstat
import pytest

from cdisc_convert.pipeline import run_study

from conftest import STUDY

DOMAINS = ["ae", "dm", "ds", "ex", "fa", "lb", "pr", "qs", "relrec", "se", "suppae", "suppdm", "suppex", "sv", "ta", "te",
           "ts", "tv"]


def test_every_dataset_written_as_xpt_and_dataset_json(example_out):
    names = sorted(p.stem for p in (example_out / "sdtm").glob("*.xpt"))
    assert names == DOMAINS
    assert sorted(p.stem for p in (example_out / "sdtm").glob("*.json")) == DOMAINS


def test_csv_and_odm_exports_give_identical_sdtm(example_out, example_out_odm):
    for name in DOMAINS:
        a = (example_out / "sdtm" / f"{name}.xpt").read_bytes()
        b = (example_out_odm / "sdtm" / f"{name}.xpt").read_bytes()
        assert a == b, name


@pytest.mark.parametrize("name", DOMAINS)
def test_xpt_reads_back_with_pandas_and_pyreadstat(example_out, name):
    path = example_out / "sdtm" / f"{name}.xpt"
    written = json.loads((example_out / "sdtm" / f"{name}.json").read_text())
    by_pandas = pd.read_sas(path, format="xport", encoding="ascii")
    by_pyreadstat, meta = pyreadstat.read_xport(str(path))
    columns = [c["name"] for c in written["columns"]]
    assert list(by_pandas.columns) == list(by_pyreadstat.columns) == columns
    assert meta.table_name == name.upper() and meta.file_label == written["label"]
    assert meta.column_names_to_labels == {c["name"]: c["label"] for c in written["columns"]}
    expected = pd.DataFrame(written["rows"], columns=columns)
    for col in written["columns"]:
        got_pd, got_rs, want = by_pandas[col["name"]], by_pyreadstat[col["name"]], expected[col["name"]]
        if col["dataType"] == "string":
            assert got_pd.fillna("").tolist() == want.tolist() == got_rs.fillna("").tolist()
        else:
            assert got_pd.astype(float).tolist() == pytest.approx(want.astype(float).tolist(), nan_ok=True)
            assert got_rs.astype(float).tolist() == pytest.approx(want.astype(float).tolist(), nan_ok=True)


def read(out, name):
    return pd.read_sas(out / "sdtm" / f"{name}.xpt", format="xport", encoding="ascii")


def test_dm_has_18_subjects_6_per_arm(example_out):
    dm = read(example_out, "dm")
    assert len(dm) == 18 and dm["USUBJID"].is_unique
    assert dm["ARMCD"].value_counts().to_dict() == {"LOW": 6, "MEDIUM": 6, "HIGH": 6}


def test_subjects_with_three_infusions_have_three_ex_records(example_out):
    ex = read(example_out, "ex")
    supp = read(example_out, "suppex")
    infusions = supp[supp.QNAM == "INFNUM"].groupby("USUBJID")["QVAL"].nunique()
    counts = ex.groupby("USUBJID").size()
    assert (counts[infusions[infusions == 3].index] == 3).all()
    assert (infusions == 3).sum() >= 16 and (counts <= 3).all()
    assert (infusions < 3).any()  # the subject whose DLT stopped dosing after two infusions


def test_dm_reference_dates_and_death(example_out):
    dm = read(example_out, "dm")
    ex = read(example_out, "ex")
    first = ex.groupby("USUBJID")["EXSTDTC"].min()
    assert (dm.set_index("USUBJID")["RFXSTDTC"] == first).all()
    assert (dm["RFSTDTC"] == dm["RFXSTDTC"]).all()
    dead = dm[dm.DTHFL == "Y"]
    assert len(dead) == 1 and dead["DTHDTC"].str.len().iloc[0] == 10
    ds = read(example_out, "ds")
    assert set(ds.loc[ds.DSCAT == "DISPOSITION EVENT", "DSDECOD"]) >= {"COMPLETED", "DEATH", "WITHDRAWAL BY SUBJECT",
                                                                       "OTHER"}


def test_no_study_day_zero_anywhere(example_out):
    for name in DOMAINS:
        frame = read(example_out, name)
        for col in [c for c in frame.columns if c.endswith("DY") and c != "VISITDY"]:
            assert not (frame[col] == 0).any(), (name, col)


def test_lb_unit_conversion_and_lloq(example_out):
    lb = read(example_out, "lb")
    bili = lb[(lb.LBTESTCD == "BILI") & (lb.LBORRESU == "mg/dL")]
    assert len(bili) > 0
    assert (bili["LBSTRESN"] - bili["LBORRES"].astype(float) * 17.1).abs().max() < 1e-6
    assert set(lb.loc[lb.LBTESTCD == "BILI", "LBSTRESU"]) == {"umol/L"}
    assert set(lb.loc[lb.LBTESTCD == "ALB", "LBSTRESU"]) == {"g/L"}
    hbv = lb[(lb.LBTESTCD == "HBVDNA") & lb.LBORRES.str.startswith("<")]
    assert len(hbv) > 0 and hbv["LBSTRESN"].isna().all() and (hbv["LBSTRESC"] == "<20").all()


def test_baseline_flag_one_per_subject_and_test(example_out):
    lb = read(example_out, "lb")
    flagged = lb[lb.LBLOBXFL == "Y"]
    assert not flagged.duplicated(["USUBJID", "LBTESTCD"]).any()
    dm = read(example_out, "dm").set_index("USUBJID")
    assert (flagged["LBDTC"].str.slice(0, 10) <= flagged["USUBJID"].map(dm["RFXSTDTC"]).str.slice(0, 10)).all()


def test_unscheduled_visits_and_tv_windows(example_out):
    sv = read(example_out, "sv")
    uns = sv[sv.SVUPDES == "Unscheduled visit"]
    assert len(uns) > 0 and uns["VISIT"].str.startswith("UNSCHEDULED").all()
    assert (uns["VISITNUM"] % 1).round(2).eq(0.01).all()
    tv = read(example_out, "tv")
    assert len(tv) == 20 and tv.loc[tv.VISIT == "WEEK 12", "TVSTRL"].item().startswith("Study day 78")


def test_supp_records_link_to_parent_seq(example_out):
    ae, supp = read(example_out, "ae"), read(example_out, "suppae")
    keys = set(zip(ae.USUBJID, ae.AESEQ.map(lambda v: f"{v:g}")))
    assert set(zip(supp.USUBJID, supp.IDVARVAL)) <= keys and (supp.IDVAR == "AESEQ").all()
    assert set(supp.QNAM) == {"AEDLT"} and (supp.QORIG == "CRF").all()


def test_reconciliation_accounts_for_every_source_row(example_out):
    recon = pd.read_csv(example_out / "reconciliation.csv", dtype=str, keep_default_na=False)
    rows = sum(sum(1 for _ in open(p)) - 1 for p in (STUDY / "edc").glob("*.csv")
               if p.name != "data_dictionary.csv")  # the CRF design, not a form
    assert len(recon) == rows and recon["source"].is_unique
    assert set(recon.status) == {"mapped", "excluded"}
    reasons = set(recon.loc[recon.status == "excluded", "detail"])
    assert reasons == {"screen failure", "empty page"}


def test_lineage_ties_every_record_to_source(example_out):
    lb = read(example_out, "lb")
    lineage = pd.read_csv(example_out / "lineage" / "lb.csv", dtype=str, keep_default_na=False)
    assert len(lineage) == len(lb) and (lineage["source"] != "").all()
    first = lineage.iloc[0]
    assert first["source"].startswith("lb") and first["field"]


def test_explain_prints_source_field_and_spec_rule(example_out):
    out = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "explain", "LB",
                          "USUBJID=NCT05948982-01-001", "LBSEQ=3", "--out", str(example_out)],
                         capture_output=True, text=True, check=True).stdout
    assert "source record: lb" in out and "test table row: lb.yaml:" in out
    assert "LBDTC" in out and "ISO 8601 from date field LBDAT and time field LBTIM  [lb.yaml:" in out


def test_manifest_records_inputs_versions_and_counts(example_out):
    manifest = json.loads((example_out / "manifest.json").read_text())
    assert manifest["datasets"]["DM"]["records"] == 18
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert {"python", "pandas", "pyreadstat", "sdtmig"} <= set(manifest["versions"])


def test_rerun_gives_identical_bytes(example_out, tmp_path):
    again = tmp_path / "again"
    run_study(STUDY, again)
    files = sorted(p.relative_to(example_out) for p in example_out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (example_out / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_sdtm_working_frames_are_freed_once_their_dataset_and_lineage_are_built():
    # memory: a domain's working frame (every EDC field carried per record) must not outlive its dataset
    from cdisc_convert.metadata import load_terminology
    from cdisc_convert.pipeline import convert_sdtm, read_edc
    from cdisc_convert.sdtm.engine import load_specs
    from cdisc_convert.spec import load_study_config

    study = load_study_config(STUDY / "study.yaml")
    raw, _files = read_edc(study, STUDY)
    run, datasets, _se = convert_sdtm(study, load_specs(STUDY), raw, ct=load_terminology(None, STUDY))
    assert {n: len(m.data) for n, m in run.domains.items() if n != "DM"} == {n: 0 for n in run.domains if n != "DM"}
    assert all(m.supp is None for n, m in run.domains.items() if n != "DM")
    assert len(run.lineage["LB"]) == len(datasets["LB"].data) and len(run.lineage["SUPPAE"]) == len(datasets["SUPPAE"].data)
    assert "LB" in run.record_sources[run.lineage["LB"]["source"].iloc[0]]
    assert all(list(form.columns) == ["__src"] for form in raw.values())  # the EDC fields went once mapped
    # the transposition's per-test attributes went before the sort: no rule reads them after
    assert not [c for c in run.domains["LB"].data.columns if c.startswith("@") or c in ("__folder", "__source_index")]


def test_sdtm_waits_at_rest_while_adam_derives_and_the_caller_gets_frames(tmp_path, monkeypatch, example_out):
    # memory: once SDTM is written, its datasets wait as codes (cdisc_convert.at_rest); ADaM steps
    # and ADaM validation make a domain whole only when they read it, and a written ADaM dataset
    # waits the same way while the next one derives. The example's datasets are too small to be
    # compacted in a run: here every one is, and the files are the same bytes.
    import cdisc_convert.at_rest as at_rest
    import cdisc_convert.pipeline as pipeline
    from cdisc_convert.at_rest import CompactFrame, FramesAtRest
    from cdisc_convert.writers import Dataset

    monkeypatch.setattr(at_rest, "AT_REST_MIN_RECORDS", 1)

    seen, rested = {}, []
    derive = pipeline.derive_and_write_adam

    def watching(study_dir, sdtm, *args, **kwargs):
        seen["sdtm"] = sdtm
        seen["LB"] = sdtm._frames["LB"]
        return derive(study_dir, sdtm, *args, **kwargs)

    put = Dataset.put_at_rest

    def noting(ds):
        rested.append(ds.name)
        put(ds)

    monkeypatch.setattr(pipeline, "derive_and_write_adam", watching)
    monkeypatch.setattr(Dataset, "put_at_rest", noting)
    result = run_study(STUDY, tmp_path / "out", jobs=1)
    assert isinstance(seen["sdtm"], FramesAtRest) and isinstance(seen["LB"], CompactFrame)
    assert {"LB", "DM", "ADSL", "ADLB", "ADQS"} <= set(rested)
    assert all(isinstance(ds.data, pd.DataFrame) for ds in result.datasets.values())
    lb = pd.read_sas(tmp_path / "out" / "sdtm" / "lb.xpt", format="xport", encoding="utf-8")
    assert result.datasets["LB"].data.shape == lb.shape
    files = sorted(p.relative_to(example_out) for p in example_out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*") if p.is_file())
    for rel in files:
        assert (example_out / rel).read_bytes() == (tmp_path / "out" / rel).read_bytes(), rel
