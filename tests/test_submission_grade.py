"""The defects an independent conformance engine and the schemas found in the example output
(issue 11), each shown fixed on the output or on a tiny study."""
from __future__ import annotations

import json

import pandas as pd
import pyreadstat
import pytest
from lxml import etree

from cdisc_convert.errors import ConversionError
from cdisc_convert.pipeline import run_study
from cdisc_convert.sdtm import derive

from conftest import SHARED
from test_engine import AE_YAML, make_study

NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1"}


def xpt(out, folder, name):
    return pyreadstat.read_xport(str(out / folder / f"{name}.xpt"))[0]


def test_no_record_is_dated_after_the_end_of_participation(example_out):
    dm = xpt(example_out, "sdtm", "dm").set_index("USUBJID")
    for name in ("lb", "qs", "fa", "sv", "ae", "ex"):
        frame = xpt(example_out, "sdtm", name)
        dates = [c for c in frame.columns if c.endswith("DTC") and c.startswith(name.upper())]
        for col in dates:
            value = frame[col].str.slice(0, 10)
            end = frame.USUBJID.map(dm.RFPENDTC).str.slice(0, 10)
            assert not ((value != "") & (value > end)).any(), (name, col)
    assert derive.last_contact(pd.Series(["1"]), [pd.DataFrame({"USUBJID": ["1"], "QSDTC": ["2025-03-19"]}),
                                                  pd.DataFrame({"USUBJID": ["1"], "DSSTDTC": ["2025-03-06"]})]
                               ).tolist() == ["2025-03-19"]


def test_ts_has_what_an_interventional_study_needs(example_out):
    ts = xpt(example_out, "sdtm", "ts")
    present = set(ts.TSPARMCD)
    assert {"INTTYPE", "PCLAS", "SSTDTC", "SENDTC", "ACTSUB", "FCNTRY", "SPONSOR", "TCNTRL", "DOSE", "DOSU"} <= present
    dm = xpt(example_out, "sdtm", "dm")
    value = ts.set_index("TSPARMCD").TSVAL
    assert value["SSTDTC"] == min(dm.RFICDTC.str.slice(0, 10)) and value["ACTSUB"] == str(len(dm))
    doses = ts[ts.TSPARMCD == "DOSE"].set_index("TSGRPID").TSVAL.to_dict()
    assert doses == {"LOW": "1", "MEDIUM": "2", "HIGH": "4"}


def test_fa_links_to_ae_both_ways_with_relrec(example_out):
    ae, fa = xpt(example_out, "sdtm", "ae"), xpt(example_out, "sdtm", "fa")
    relrec = xpt(example_out, "sdtm", "relrec")
    assert relrec[["RDOMAIN", "IDVAR", "RELTYPE", "RELID"]].values.tolist() == [
        ["AE", "AELNKID", "ONE", "AEFA"], ["FA", "FALNKID", "MANY", "AEFA"]]
    links = fa[fa.FALNKID != ""][["USUBJID", "FALNKID"]].drop_duplicates()
    assert len(links) and set(map(tuple, links.values)) <= set(zip(ae.USUBJID, ae.AELNKID))


def test_not_done_records_say_why_and_partial_dates_get_the_epoch_they_lie_in(example_out):
    lb = xpt(example_out, "sdtm", "lb")
    assert (lb.loc[lb.LBSTAT == "NOT DONE", "LBREASND"] == "NOT RECORDED ON CRF").all()
    assert (lb.loc[lb.LBSTAT != "NOT DONE", "LBREASND"] == "").all()
    se = pd.DataFrame({"USUBJID": ["1", "1"], "EPOCH": ["SCREENING", "TREATMENT"],
                       "SESTDTC": ["2024-01-01", "2024-01-10"], "SEENDTC": ["2024-01-10", "2024-06-01"]})
    epochs = derive.epoch_of(pd.DataFrame({"USUBJID": ["1"] * 3, "AESTDTC": ["2024-03", "2024-01", "2024"]}),
                             "AESTDTC", se)
    assert epochs.tolist() == ["TREATMENT", "", ""]


def test_define_xml_types_partial_dates_gives_every_origin_a_source_and_reads_as_text(example_out):
    for folder in ("sdtm", "adam"):
        doc = etree.parse(str(example_out / folder / "define.xml"))
        assert (example_out / folder / "define2-1.xsl").is_file()  # the stylesheet define.xml names
        for origin in doc.iterfind(".//def:Origin", NS):
            if origin.get("Type") != "Predecessor":
                assert origin.get("Source") in ("Investigator", "Sponsor", "Subject", "Vendor"), origin.get("Type")
        for method in doc.iterfind(".//odm:MethodDef/odm:Description/odm:TranslatedText", NS):
            assert "{" not in method.text and '":' not in method.text, method.text
    doc = etree.parse(str(example_out / "sdtm" / "define.xml"))
    types = {i.get("Name"): i.get("DataType") for i in doc.iterfind(".//odm:ItemDef", NS) if i.get("OID").count(".") == 2
             and i.get("OID").startswith("IT.AE.")}
    assert types["AESTDTC"] == "partialDate"  # the example has AE start dates with month or year only
    ae = xpt(example_out, "sdtm", "ae")
    assert (ae.AESTDTC.str.len().between(1, 9)).any()


def test_adam_keys_identify_records(example_out):
    doc = etree.parse(str(example_out / "adam" / "define.xml"))
    for group in doc.iterfind(".//odm:ItemGroupDef", NS):
        keyed = sorted((int(r.get("KeySequence")), r.get("ItemOID").split(".")[-1])
                       for r in group.iterfind("odm:ItemRef", NS) if r.get("KeySequence"))
        data = xpt(example_out, "adam", group.get("Name").lower())
        assert not data.duplicated([k for _, k in keyed]).any(), group.get("Name")


def test_dataset_json_matches_define_and_types_whole_numbers_as_integer(example_out):
    for folder, kind in (("sdtm", "SDTM"), ("adam", "ADAM")):
        doc = etree.parse(str(example_out / folder / "define.xml"))
        study_oid = doc.find(".//odm:Study", NS).get("OID")
        mdv_oid = doc.find(".//odm:MetaDataVersion", NS).get("OID")
        types = {i.get("OID"): i.get("DataType") for i in doc.iterfind(".//odm:ItemDef", NS)}
        for path in sorted((example_out / folder).glob("*.json")):
            data = json.loads(path.read_text())
            assert (data["studyOID"], data["metaDataVersionOID"]) == (study_oid, mdv_oid) and kind in mdv_oid
            for column in data["columns"]:
                if types.get(column["itemOID"]) == "integer" and "displayFormat" not in column:
                    assert column["dataType"] == "integer", (path.name, column["name"])
                if column["dataType"] in ("date", "datetime"):
                    assert column["displayFormat"].startswith(("DATE", "DATETIME", "E8601")), column
    adsl = json.loads((example_out / "adam" / "adsl.json").read_text())
    assert {c["name"]: c["dataType"] for c in adsl["columns"]}["TRT01AN"] == "integer"


def test_dataset_json_is_valid_against_the_schema(example_out):
    jsonschema = pytest.importorskip("jsonschema")
    schema_file = SHARED / "standards" / "dataset-json" / "schema" / "dataset.schema.json"
    if not schema_file.exists():
        pytest.skip("the Dataset-JSON 1.1 schema is not in ../shared/standards")
    raw = schema_file.read_bytes()
    schema = json.loads(raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig"))
    for path in [*(example_out / "sdtm").glob("*.json"), *(example_out / "adam").glob("*.json")]:
        jsonschema.validate(json.loads(path.read_text()), schema)


@pytest.mark.parametrize("edit, message", [
    ("LBTEST: Alanine Aminotransferase Measurement In Serum Of The Subject", "at most 40"),
    ("LBTESTCD: ALTALTALT", "at most 8"),
])
def test_test_tables_keep_codes_and_names_within_sdtmig_limits(tmp_path, edit, message):
    lb = ("domain: LB\nsources:\n  - form: AE\n    tests:\n      - {testcd: %s, test: %s, result: AETERM}\n"
          "variables:\n  STUDYID: {constant: STUDYID}\n  DOMAIN: {value: LB}\n"
          "  USUBJID: {concat: [{constant: STUDYID}, \"-\", {field: SUBJECT}]}\n  LBSEQ: {derive: seq}\n"
          "  LBTESTCD: {test: testcd}\n  LBTEST: {test: test}\n")
    code = edit.split(": ", 1)[1] if edit.startswith("LBTESTCD") else "ALT"
    name = edit.split(": ", 1)[1] if edit.startswith("LBTEST:") else "Alanine Aminotransferase"
    study = make_study(tmp_path, **{"lb.yaml": lb % (code, name), "ae.yaml": AE_YAML})
    with pytest.raises(ConversionError, match=message) as err:
        run_study(study, tmp_path / "out")
    assert err.value.spec.startswith("lb.yaml:5")
