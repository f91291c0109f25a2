"""Readers: CSV (BOM, Latin-1, ragged rows), ODM 1.3.2 (safe parsing), SAS datasets."""
from __future__ import annotations

import pandas as pd
import pyreadstat
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.readers import read_csv_form, read_csv_forms, read_odm_forms, read_sas_forms

from conftest import STUDY


def test_csv_with_and_without_bom_read_the_same(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"SUBJECT,X\n01,1\n")
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbfSUBJECT,X\n01,1\n")
    a, b = read_csv_form(tmp_path / "a.csv"), read_csv_form(tmp_path / "b.csv")
    assert list(a.columns) == list(b.columns) == ["SUBJECT", "X", "__src"]
    assert a.drop(columns="__src").equals(b.drop(columns="__src"))


def test_latin1_on_request(tmp_path):
    (tmp_path / "ae.csv").write_bytes("SUBJECT,AETERM\n01,Fièvre\n".encode("latin-1"))
    with pytest.raises(ConversionError, match="not valid utf-8.*latin-1") as err:
        read_csv_form(tmp_path / "ae.csv")
    assert err.value.source == "ae.csv:2"
    assert read_csv_form(tmp_path / "ae.csv", "latin-1")["AETERM"].tolist() == ["Fièvre"]


def test_ragged_row_names_file_and_line(tmp_path):
    (tmp_path / "lb.csv").write_text("SUBJECT,A,B\n01,1,2\n02,1\n")
    with pytest.raises(ConversionError, match="ragged row: 2 fields where the header has 3") as err:
        read_csv_form(tmp_path / "lb.csv")
    assert err.value.source == "lb.csv:3"


def test_every_row_keeps_its_source_pointer():
    forms = read_csv_forms(STUDY / "edc")
    assert forms["AE"]["__src"].iloc[0] == "ae.csv:2"
    odm = read_odm_forms(STUDY / "edc" / "nct05948982_odm.xml")
    assert odm["AE"]["__src"].iloc[0].startswith("nct05948982_odm.xml#SubjectData[@SubjectKey='01-")


def test_odm_and_csv_hold_the_same_forms():
    csv_forms = read_csv_forms(STUDY / "edc", ignore=["data_dictionary.csv"])  # the CRF design, not a form
    odm_forms = read_odm_forms(STUDY / "edc" / "nct05948982_odm.xml")
    assert sorted(csv_forms) == sorted(odm_forms)
    for name in csv_forms:
        pd.testing.assert_frame_equal(csv_forms[name].drop(columns="__src"), odm_forms[name].drop(columns="__src"))


ODM_HEAD = '<?xml version="1.0"?>\n'
ODM_BODY = ('<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"><ClinicalData StudyOID="S" MetaDataVersionOID="M">'
            '<SubjectData SubjectKey="1"><StudyEventData StudyEventOID="E"><FormData FormOID="F">'
            '<ItemGroupData ItemGroupOID="F"><ItemData ItemOID="F.X" Value="{value}"/></ItemGroupData></FormData>'
            '</StudyEventData></SubjectData></ClinicalData></ODM>')


def test_odm_external_entity_is_refused(tmp_path):
    evil = tmp_path / "evil.xml"
    evil.write_text(ODM_HEAD + '<!DOCTYPE ODM [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
                    + ODM_BODY.format(value="&xxe;"))
    with pytest.raises(ConversionError, match="DOCTYPE/ENTITY.*refused") as err:
        read_odm_forms(evil)
    assert err.value.source == "evil.xml:2"


def test_odm_entity_expansion_bomb_is_refused(tmp_path):
    lol = "".join(f'<!ENTITY l{i} "{"&l%d;" % (i - 1) * 10 if i else "lol"}">' for i in range(10))
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(ODM_HEAD + f"<!DOCTYPE ODM [{lol}]>\n" + ODM_BODY.format(value="&l9;"))
    with pytest.raises(ConversionError, match="refused"):
        read_odm_forms(bomb)


def test_odm_malformed_xml_names_the_line(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text(ODM_HEAD + ODM_BODY.format(value="1").replace("</ODM>", ""))
    with pytest.raises(ConversionError, match="not well-formed") as err:
        read_odm_forms(bad)
    assert err.value.source.startswith("bad.xml:")


def test_odm_reader_reads_items_without_metadata(tmp_path):
    ok = tmp_path / "ok.xml"
    ok.write_text(ODM_HEAD + ODM_BODY.format(value="42"))
    form = read_odm_forms(ok)["F"]
    assert form[["SUBJECT", "FOLDER", "X"]].values.tolist() == [["1", "E", "42"]]


def test_sas_datasets_read_through_pyreadstat(tmp_path):
    frame = pd.DataFrame({"SUBJECT": ["01-001", "01-002"], "WEIGHT": [61.5, 70.0]})
    pyreadstat.write_xport(frame, str(tmp_path / "vs.xpt"), file_format_version=5, table_name="VS")
    forms = read_sas_forms(tmp_path)
    assert forms["VS"][["SUBJECT", "WEIGHT"]].values.tolist() == [["01-001", "61.5"], ["01-002", "70"]]
    assert forms["VS"]["__src"].tolist() == ["vs.xpt:1", "vs.xpt:2"]
