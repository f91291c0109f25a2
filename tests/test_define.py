"""Define-XML 2.1: schema-valid, complete against the data written, rendered and browsable."""
from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from cdisc_convert.define_xml import DEFINE_XSD, validate_define
from cdisc_convert.errors import ConversionError
from cdisc_convert.pipeline import run_study

NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1",
      "xlink": "http://www.w3.org/1999/xlink"}


def parse(path: Path):
    return etree.parse(str(path))


@pytest.mark.parametrize("folder", ["sdtm", "adam"])
def test_define_validates_against_the_define_xml_2_1_schema(example_out, folder):
    schema = etree.XMLSchema(etree.parse(str(DEFINE_XSD)))
    doc = parse(example_out / folder / "define.xml")
    assert schema.validate(doc), schema.error_log.last_error


@pytest.mark.parametrize("folder", ["sdtm", "adam"])
def test_every_dataset_and_variable_is_defined_as_written(example_out, folder):
    import pyreadstat
    doc = parse(example_out / folder / "define.xml")
    for xpt in sorted((example_out / folder).glob("*.xpt")):
        data, meta = pyreadstat.read_xport(str(xpt))
        name = meta.table_name
        igd = doc.find(f".//odm:ItemGroupDef[@OID='IG.{name}']", NS)
        assert igd is not None, name
        assert igd.find("def:leaf", NS).get(f"{{{NS['xlink']}}}href") == xpt.name
        assert igd.find("odm:Description/odm:TranslatedText", NS).text == meta.file_label
        refs = [r.get("ItemOID") for r in igd.findall("odm:ItemRef", NS)]
        assert refs == [f"IT.{name}.{c}" for c in data.columns]
        for col in data.columns:
            it = doc.find(f".//odm:ItemDef[@OID='IT.{name}.{col}']", NS)
            assert it.find("odm:Description/odm:TranslatedText", NS).text == meta.column_names_to_labels[col]
            kind = it.get("DataType")
            if (meta.original_variable_types.get(col) or "").startswith("DATE"):
                assert kind == "integer" and it.get(f"{{{NS['def']}}}DisplayFormat", "").startswith("DATE")
            elif data[col].dtype.kind in "fiu":
                assert kind in ("integer", "float"), (name, col, kind)
            else:
                assert kind in ("text", "date", "datetime", "partialDate", "partialDatetime"), (name, col, kind)
                longest = max(1, int(data[col].fillna("").astype(str).str.len().max() or 1))
                if kind == "text":
                    assert int(it.get("Length")) == longest == meta.variable_storage_width[col], (name, col)
            assert it.find("def:Origin", NS).get("Type") in ("Collected", "Derived", "Assigned", "Protocol",
                                                              "Predecessor")


@pytest.mark.parametrize("folder", ["sdtm", "adam"])
def test_every_codelist_term_in_the_data_is_in_its_codelist(example_out, folder):
    import pyreadstat
    doc = parse(example_out / folder / "define.xml")
    checked = 0
    for it in doc.findall(".//odm:ItemDef", NS):
        ref = it.find("odm:CodeListRef", NS)
        if ref is None or it.get("OID").count(".") > 2:
            continue
        _, ds, var = it.get("OID").split(".")
        data, _ = pyreadstat.read_xport(str(example_out / folder / f"{ds.lower()}.xpt"), usecols=[var])
        cl = doc.find(f".//odm:CodeList[@OID='{ref.get('CodeListOID')}']", NS)
        if cl.find("odm:ExternalCodeList", NS) is not None:  # ISO 3166: a dictionary, no terms listed
            continue
        terms = {i.get("CodedValue") for i in cl.findall("odm:CodeListItem", NS) + cl.findall("odm:EnumeratedItem", NS)}
        present = set(data[var].fillna("").astype(str)) - {""}
        assert present <= terms, (ds, var, present - terms)
        checked += 1
    assert checked > 5


def test_codelists_carry_nci_codes_and_flag_sponsor_extensions(example_out):
    doc = parse(example_out / "sdtm" / "define.xml")
    sex = doc.find(".//odm:CodeList[@OID='CL.SEX']", NS)
    assert sex.find("odm:Alias", NS).get("Name") == "C66731"
    assert {i.get("CodedValue") for i in sex.findall("odm:EnumeratedItem", NS)} == {"F", "M"}
    lbtestcd = doc.find(".//odm:CodeList[@OID='CL.LBTESTCD']", NS)
    extended = {i.get("CodedValue") for i in lbtestcd.findall("odm:CodeListItem", NS) if i.get(f"{{{NS['def']}}}ExtendedValue") == "Yes"}
    assert "TREG" in extended and "ALT" not in extended


def test_every_lbtestcd_has_value_level_metadata(example_out):
    import pyreadstat
    doc = parse(example_out / "sdtm" / "define.xml")
    lb, _ = pyreadstat.read_xport(str(example_out / "sdtm" / "lb.xpt"), usecols=["LBTESTCD"])
    where = {w.find("odm:RangeCheck/odm:CheckValue", NS).text for w in doc.findall(".//def:WhereClauseDef", NS)
             if w.get("OID").startswith("WC.LB.LBTESTCD.")}
    assert set(lb.LBTESTCD) == where
    vl = doc.find(".//def:ValueListDef[@OID='VL.LB.LBORRES']", NS)
    assert len(vl.findall("odm:ItemRef", NS)) == len(where)
    for name in ("QS", "FA", "SUPPAE"):
        assert doc.find(f".//def:ValueListDef[@OID='VL.{name}.{'QVAL' if name.startswith('SUPP') else name + 'ORRES'}']", NS) is not None
    adam = parse(example_out / "adam" / "define.xml")
    adlb, _ = pyreadstat.read_xport(str(example_out / "adam" / "adlb.xpt"), usecols=["PARAMCD"])
    adam_where = {w.find("odm:RangeCheck/odm:CheckValue", NS).text for w in adam.findall(".//def:WhereClauseDef", NS)
                  if w.get("OID").startswith("WC.ADLB.PARAMCD.")}
    assert set(adlb.PARAMCD) == adam_where


def test_origins_methods_and_display_formats(example_out):
    doc = parse(example_out / "sdtm" / "define.xml")
    aeterm = doc.find(".//odm:ItemDef[@OID='IT.AE.AETERM']/def:Origin", NS)
    assert aeterm.get("Type") == "Collected" and "field AETERM" in aeterm.find("odm:Description/odm:TranslatedText", NS).text
    ref = doc.find(".//odm:ItemGroupDef[@OID='IG.LB']/odm:ItemRef[@ItemOID='IT.LB.LBDY']", NS)
    method = doc.find(f".//odm:MethodDef[@OID='{ref.get('MethodOID')}']", NS)
    assert "study_day" in method.find("odm:Description/odm:TranslatedText", NS).text
    adam = parse(example_out / "adam" / "define.xml")
    trtsdt = adam.find(".//odm:ItemDef[@OID='IT.ADSL.TRTSDT']", NS)
    assert trtsdt.get(f"{{{NS['def']}}}DisplayFormat") == "DATE9." and trtsdt.get("DataType") == "integer"
    assert adam.find(".//odm:ItemDef[@OID='IT.ADSL.SEX']/def:Origin", NS).get("Type") == "Predecessor"
    cls = adam.find(".//odm:ItemGroupDef[@OID='IG.ADAE']/def:Class", NS)
    assert cls.get("Name") == "OCCURRENCE DATA STRUCTURE"


def test_define_command_regenerates_the_same_bytes(example_out, tmp_path):
    from conftest import STUDY
    out = tmp_path / "out"
    shutil.copytree(example_out, out)
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "define", str(STUDY), "--out", str(out)], check=True,
                   capture_output=True)
    for folder in ("sdtm", "adam"):
        assert (out / folder / "define.xml").read_bytes() == (example_out / folder / "define.xml").read_bytes()


def test_changing_a_label_in_a_spec_changes_exactly_that_itemdef(study_copy, tmp_path):
    run_study(study_copy, tmp_path / "before")
    spec = study_copy / "ae.yaml"
    spec.write_text(spec.read_text() + "metadata:\n  AETERM: {label: Verbatim Adverse Event Term}\n")
    run_study(study_copy, tmp_path / "after")
    before = (tmp_path / "before" / "sdtm" / "define.xml").read_text().splitlines()
    after = (tmp_path / "after" / "sdtm" / "define.xml").read_text().splitlines()
    changed = [l for l in difflib.unified_diff(before, after, lineterm="", n=0) if l[:1] in "+-"
               and not l.startswith(("+++", "---"))]
    assert [l[0] + l[1:].strip() for l in changed] == [
        '-<TranslatedText xml:lang="en">Reported Term for the Adverse Event</TranslatedText>',
        '+<TranslatedText xml:lang="en">Verbatim Adverse Event Term</TranslatedText>']
    line = next(i for i, l in enumerate(after) if "Verbatim Adverse Event Term" in l)
    assert any('OID="IT.AE.AETERM"' in l for l in after[line - 3:line])


def test_schema_error_names_element_and_reason(example_out, tmp_path):
    bad = tmp_path / "define.xml"
    lines = (example_out / "sdtm" / "define.xml").read_text().splitlines()
    at = next(i for i, l in enumerate(lines) if "<def:Standards>" in l)
    lines.insert(at, "<Nope/>")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConversionError, match="not valid Define-XML 2.1: Element .*Nope.*not expected") as err:
        validate_define(bad)
    assert err.value.source == f"define.xml:{at + 1}"


def test_user_stylesheet_is_applied(example_out, tmp_path):
    from conftest import STUDY
    xsl = tmp_path / "mine.xsl"
    xsl.write_text('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
                   '<xsl:template match="/"><html><body><p id="mine">custom view</p></body></html></xsl:template>'
                   '</xsl:stylesheet>')
    out = tmp_path / "out"
    shutil.copytree(example_out, out)
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "define", str(STUDY), "--out", str(out),
                    "--stylesheet", str(xsl)], check=True, capture_output=True)
    assert "custom view" in (out / "sdtm" / "define.html").read_text()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_define_html_in_headless_chromium_links_each_dataset_to_its_variables(example_out, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed and .ci/run could not install it (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    page = (example_out / "sdtm" / "define.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    html = etree.HTML(dom)
    links = html.xpath("//table[@id='dataset-table']//a[@class='dataset-link']")
    names = sorted(p.stem.upper() for p in (example_out / "sdtm").glob("*.xpt"))
    assert sorted(a.text for a in links) == names
    for a in links:
        target = html.xpath(f"//*[@id='{a.get('href')[1:]}']")
        assert target and target[0].tag == "h2", a.text
        table = target[0].getnext()
        assert table.tag == "table" and len(table.xpath(".//tr")) > 2, a.text
    shot = tmp_path / "lb.png"
    subprocess.run([browser, *flags, "--window-size=1200,900", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_documents_and_comments_from_config_and_specs(study_copy, tmp_path):
    (study_copy / "study.yaml").write_text((study_copy / "study.yaml").read_text() + (
        "\ndocuments:\n  - {id: acrf, title: Annotated CRF, href: ../acrf.pdf, type: acrf}\n"
        "  - {id: csdrg, title: Reviewer's Guide, href: ../csdrg.pdf}\n"))
    spec = study_copy / "ae.yaml"
    spec.write_text(spec.read_text().replace("AETERM: {field: AETERM}",
                                             "AETERM: {field: AETERM, comment: Verbatim as entered by the site}"))
    run_study(study_copy, tmp_path / "out")
    doc = parse(tmp_path / "out" / "sdtm" / "define.xml")
    leaves = {l.get("ID"): l.get(f"{{{NS['xlink']}}}href") for l in doc.findall(".//odm:MetaDataVersion/def:leaf", NS)}
    assert leaves == {"LF.acrf": "../acrf.pdf", "LF.csdrg": "../csdrg.pdf"}
    assert doc.find(".//def:AnnotatedCRF/def:DocumentRef", NS).get("leafID") == "LF.acrf"
    origin = doc.find(".//odm:ItemDef[@OID='IT.AE.AETERM']/def:Origin", NS)
    assert origin.find("def:DocumentRef", NS).get("leafID") == "LF.acrf"
    comment_oid = doc.find(".//odm:ItemDef[@OID='IT.AE.AETERM']", NS).get(f"{{{NS['def']}}}CommentOID")
    comment = doc.find(f".//def:CommentDef[@OID='{comment_oid}']/odm:Description/odm:TranslatedText", NS)
    assert comment.text == "Verbatim as entered by the site"


def test_ct_release_chosen_with_ct_gives_term_codes_and_its_date(example_out, tmp_path):
    from conftest import STUDY
    from cdisc_convert.pipeline import run_define
    ct_dir = tmp_path / "ct"
    ct_dir.mkdir()
    (ct_dir / "SDTM Terminology 2024-12-20.txt").write_text(
        "Code\tCodelist Code\tCodelist Extensible (Yes/No)\tCodelist Name\tCDISC Submission Value\t"
        "CDISC Synonym(s)\tCDISC Definition\tNCI Preferred Term\n"
        "C66731\t\tNo\tSex\tSEX\t\t\t\nC16576\tC66731\t\tSex\tF\tFemale\t\t\nC20197\tC66731\t\tSex\tM\tMale\t\t\n")
    out = tmp_path / "out"
    shutil.copytree(example_out, out)
    study = tmp_path / "study"  # without terminology.yaml, whose extensions need the full package
    shutil.copytree(STUDY, study, ignore=shutil.ignore_patterns("edc", "terminology.yaml"))
    run_define(study, out, ct=[ct_dir])
    doc = parse(out / "sdtm" / "define.xml")
    male = doc.find(".//odm:CodeList[@OID='CL.SEX']/odm:EnumeratedItem[@CodedValue='M']", NS)
    assert male.find("odm:Alias", NS).get("Name") == "C20197"
    assert doc.find(".//def:Standard[@Type='CT']", NS).get("Version") == "2024-12-20"
    bundled = parse(example_out / "sdtm" / "define.xml")
    assert bundled.find(".//def:Standard[@Type='CT']", NS).get("Version") == "2025-03-28"


def test_every_sdtm_item_ref_carries_its_role_and_country_is_iso_3166(example_out):
    doc = parse(example_out / "sdtm" / "define.xml")
    refs = doc.findall(".//odm:ItemGroupDef/odm:ItemRef", NS)
    assert refs and all(r.get("Role") for r in refs)
    ref = doc.find(".//odm:ItemGroupDef[@Name='DM']/odm:ItemRef[@ItemOID='IT.DM.USUBJID']", NS)
    assert ref.get("Role") == "Identifier"
    country = doc.find(".//odm:CodeList[@OID='CL.COUNTRY']", NS)
    assert country.find("odm:ExternalCodeList", NS).get("Dictionary") == "ISO 3166-1 alpha-3"
    assert country.get("{http://www.cdisc.org/ns/def/v2.1}StandardOID") is None
