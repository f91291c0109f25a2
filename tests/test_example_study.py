"""The example study generator: seeded, deterministic, any size, the committed export reproduced."""
from __future__ import annotations

import subprocess
import sys

from lxml import etree

from cdisc_convert.example_study import generate_example_export, write_csv_export, write_odm_export

from conftest import REPO, STUDY

ODM_XSD = None


def test_generator_reproduces_the_committed_export_byte_for_byte(tmp_path):
    export = generate_example_export(18)
    write_csv_export(export, tmp_path)
    write_odm_export(export, tmp_path / "nct05948982_odm.xml")
    committed = sorted(p.name for p in (STUDY / "edc").iterdir())
    assert committed == sorted(p.name for p in tmp_path.iterdir())
    for name in committed:
        assert (tmp_path / name).read_bytes() == (STUDY / "edc" / name).read_bytes(), name


def test_any_number_of_subjects_in_three_sequential_cohorts():
    export = generate_example_export(30, seed=7)
    dm = export.rows["DM"]
    enrolled = [r for r in dm if r["ENROLLED"] == "Yes"]
    assert len(enrolled) == 30 and len(dm) == 30 + 30 // 9
    cohorts = [r["COHORT"] for r in enrolled]
    assert cohorts == sorted(cohorts, key=["LOW", "MEDIUM", "HIGH"].index)
    assert {c: cohorts.count(c) for c in set(cohorts)} == {"LOW": 10, "MEDIUM": 10, "HIGH": 10}


def test_export_is_messy_as_real_exports_are():
    export = generate_example_export(18)
    ae_dates = [r["AESTDAT"] for r in export.rows["AE"]]
    assert any(d.startswith("UN ") for d in ae_dates + [r["BRTHDAT"] for r in export.rows["DM"]])
    assert any(r["HBVDNA"].startswith("<") for r in export.rows["LBHBV"])
    assert {r["BILI_U"] for r in export.rows["LBLIV"]} == {"mg/dL", "umol/L"}
    assert {r["ALB_U"] for r in export.rows["LBLIV"]} == {"g/dL", "g/L"}
    assert any(r["FOLDER"].startswith("UNS") for r in export.rows["LBLIV"])
    assert {r["DSSTAT"] for r in export.rows["DS"]} >= {"Completed", "Death", "Withdrawal by subject", "Other",
                                                         "Screen failure"}
    assert len(export.rows["TX"]) == 1 and len(export.rows["DTH"]) == 1
    assert any(all(v == "" for v in r.values() if v not in (r["SITEID"], r["SUBJECT"], r["FOLDER"], r["FORMREPEAT"]))
               for r in export.rows["SF36"])  # an empty page


def test_odm_export_is_schema_valid_odm_1_3_2():
    import odmlib
    from pathlib import Path
    xsd = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    doc = etree.parse(str(STUDY / "edc" / "nct05948982_odm.xml"))
    assert schema.validate(doc), schema.error_log.last_error


def test_example_command_writes_a_runnable_study(tmp_path):
    out = tmp_path / "study"
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "example", "--subjects", "6", "--out", str(out)],
                   check=True, capture_output=True, cwd=REPO)
    assert (out / "study.yaml").exists() and (out / "edc" / "dm.csv").exists() and (out / "adam" / "adsl.yaml").exists()
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "run", str(out), "--out", str(out / "out")], check=True,
                   capture_output=True)
    assert (out / "out" / "sdtm" / "dm.xpt").exists()


def test_export_carries_the_crf_design_as_odm_metadata_and_a_data_dictionary(tmp_path):
    from cdisc_convert.crf import read_data_dictionary, read_odm_design

    odm = read_odm_design(STUDY / "edc" / "nct05948982_odm.xml")
    dictionary = read_data_dictionary(STUDY / "edc" / "data_dictionary.csv")
    assert odm.forms == dictionary.forms and odm.codelists == dictionary.codelists
    ae = odm.form("AE")
    assert ae.title == "Adverse Events"
    aeser = next(i for i in ae.items if i.name == "AESER")
    assert (aeser.question, aeser.length, aeser.codelist) == ("Serious?", 3, "NY")
    assert odm.codelists["ECOG"][0] == ("0", "Fully active")  # decodes, not just codes
    weight = next(i for i in odm.form("DM").items if i.name == "WEIGHT")
    assert weight.unit == "kg"  # MeasurementUnitRef
    assert next(i for i in ae.items if i.name == "AESTDAT").display_format == "DD MON YYYY"
    doc = etree.parse(str(STUDY / "edc" / "nct05948982_odm.xml"))
    ns = {"o": "http://www.cdisc.org/ns/odm/v1.3"}
    assert doc.xpath("count(//o:ItemDef[not(o:Question)])", namespaces=ns) == 0
    # every collected value is a term of its field's codelist and fits its length
    export = generate_example_export(18)
    for form in odm.forms:
        for item in form.items:
            values = {r.get(item.name, "") for r in export.rows.get(form.name, [])} - {""}
            if item.codelist:
                assert values <= {c for c, _d in odm.codelists[item.codelist]}, (form.name, item.name)
            assert all(len(v) <= item.length for v in values), (form.name, item.name)
    # the design is the EDC's, not the data's: the same at any size
    small = tmp_path / "small"
    write_odm_export(generate_example_export(2, seed=3), small / "x.xml")
    assert read_odm_design(small / "x.xml").forms == odm.forms
    import odmlib
    from pathlib import Path
    xsd = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    assert schema.validate(etree.parse(str(small / "x.xml"))), schema.error_log.last_error
