"""The annotated CRF: annotations derived from the specs, drawn as PDF and HTML, linked from define.xml.

The PDF is read back with independent readers: pypdf for its text and bookmarks, pdfium (pypdfium2)
to render a page to pixels; the HTML is parsed with lxml and rendered in headless Chromium.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from lxml import etree, html as lxml_html

from cdisc_convert.acrf import NOT_SUBMITTED, annotate, load_crf_design
from cdisc_convert.crf import CrfDesign, CrfForm, CrfItem
from cdisc_convert.sdtm.engine import load_specs
from cdisc_convert.spec import DomainSpec, load_study_config

from conftest import REPO, STUDY

pypdf = pytest.importorskip("pypdf")
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1"}


def _texts(notes):
    return {field: [a.text for a in found] for field, found in notes.items()}


# --- the annotation rules, on tiny specs -------------------------------------------------------

def test_findings_results_and_units_are_annotated_per_test():
    design = CrfDesign([CrfForm("LIV", "Liver", [CrfItem("LBDAT", "Date"), CrfItem("ALT", "ALT"),
                                                  CrfItem("ALT_U", "ALT unit"), CrfItem("COMMENT", "Comment")])], {})
    spec = DomainSpec(domain="LB", sources=[{"form": "LIV", "tests": [
        {"testcd": "ALT", "test": "Alanine Aminotransferase", "result": "ALT", "unit": "ALT_U"}]}],
        variables={"LBTESTCD": {"test": "testcd"}, "LBDTC": {"date": "LBDAT"}})
    assert _texts(annotate(design, [spec])["LIV"]) == {
        "LBDAT": ["LBDTC"], "ALT": ["LBORRES when LBTESTCD = ALT"], "ALT_U": ["LBORRESU when LBTESTCD = ALT"],
        "COMMENT": [NOT_SUBMITTED]}


def test_supplemental_qualifier_join_and_topic_of_a_one_event_source():
    design = CrfDesign([
        CrfForm("DM", "Demographics", [CrfItem("ICDAT", "Consent date"), CrfItem("COHORT", "Cohort"),
                                       CrfItem("WEIGHT", "Weight")]),
        CrfForm("EX", "Dosing", [CrfItem("EXDAT", "Date")])], {})
    dm = DomainSpec(domain="DM", sources=[{"form": "DM"}], variables={"RFICDTC": {"date": "ICDAT"}},
                    supp=[{"qnam": "WEIGHT", "qlabel": "Weight", "rule": {"field": "WEIGHT"}}])
    ds = DomainSpec(domain="DS", sources=[
        {"form": "DM", "variables": {"DSDECOD": {"value": "INFORMED CONSENT OBTAINED"}, "DSSTDTC": {"date": "ICDAT"}}},
        {"form": "DS"}], variables={"DSDECOD": {"field": "DSSTAT"}, "DSSTDTC": {"date": "DSDAT"}})
    ex = DomainSpec(domain="EX", sources=[{"form": "EX", "join": [{"form": "DM", "on": ["SUBJECT"], "fields": ["COHORT"]}]}],
                    variables={"EXSTDTC": {"date": "EXDAT"}, "EXDOSE": {"field": "COHORT", "map": {"LOW": 1}}})
    notes = annotate(design, [dm, ds, ex])
    assert _texts(notes["DM"]) == {
        "ICDAT": ["RFICDTC", "DSSTDTC when DSDECOD = INFORMED CONSENT OBTAINED"],
        "COHORT": ["EXDOSE"],  # read through EX's join: annotated where the site enters it
        "WEIGHT": ["WEIGHT in SUPPDM"]}
    assert notes["DM"]["WEIGHT"][0].domain == "SUPPDM" and notes["DM"]["WEIGHT"][0].parent == "DM"
    assert _texts(notes["EX"]) == {"EXDAT": ["EXSTDTC"]}


def test_a_field_read_only_by_a_condition_is_annotated_with_the_variable_it_decides():
    design = CrfDesign([CrfForm("AE", "AE", [CrfItem("AEONGO", "Ongoing?")])], {})
    spec = DomainSpec(domain="AE", sources=[{"form": "AE"}], variables={"AEENRF": {
        "when": [{"if": {"field": "AEONGO", "equals": "Yes"}, "then": {"value": "ONGOING"}}]}})
    assert _texts(annotate(design, [spec])["AE"]) == {"AEONGO": ["AEENRF"]}


# --- the example study's aCRF, as a run writes it ---------------------------------------------

@pytest.fixture(scope="module")
def acrf(example_out):
    reader = pypdf.PdfReader(str(example_out / "acrf.pdf"))
    return reader, [page.extract_text() for page in reader.pages]


@pytest.fixture(scope="module")
def example_notes():
    study = load_study_config(STUDY / "study.yaml")
    design = load_crf_design(study, STUDY)
    return design, annotate(design, load_specs(STUDY))


def test_run_writes_the_acrf_pdf_and_html(example_out):
    assert (example_out / "acrf.pdf").read_bytes().startswith(b"%PDF-")
    assert (example_out / "acrf.html").is_file() and (example_out / "spec.xlsx").is_file()


def test_every_annotated_variable_exists_in_the_output_datasets(example_out, example_notes):
    design, notes = example_notes
    data = {p.stem.upper(): pd.read_sas(p, format="xport", encoding="ascii") for p in (example_out / "sdtm").glob("*.xpt")}
    checked = 0
    for form, fields in notes.items():
        for field, found in fields.items():
            for a in found:
                if not a.domain:
                    continue
                if a.domain.startswith("SUPP"):  # QNAM in SUPPxx: the qualifier has records
                    assert a.variable in set(data[a.domain]["QNAM"]), (form, field, a.text)
                else:
                    assert a.variable in data[a.domain].columns, (form, field, a.text)
                if a.key:  # LBORRES when LBTESTCD = ALT: the test is in the dataset
                    assert a.key in set(data[a.domain][f"{a.domain}TESTCD"]), (form, field, a.text)
                checked += 1
    assert checked > 200


def test_every_mapped_edc_field_has_an_annotation(example_out, example_notes):
    """From the run's own lineage (rules.json, lineage/<dataset>.csv): each field a rule reads, on the
    forms the dataset's records come from, carries an annotation naming that variable."""
    design, notes = example_notes
    rules = json.loads((example_out / "lineage" / "rules.json").read_text())

    def fields(rule) -> set[str]:
        if isinstance(rule, dict):
            found = {rule[k] for k in ("field", "date", "time") if isinstance(rule.get(k), str)}
            return found | {f for v in rule.values() for f in fields(v)}
        if isinstance(rule, list):
            return {f for v in rule for f in fields(v)}
        return set()

    checked = 0
    for dataset, variables in rules.items():
        lineage = pd.read_csv(example_out / "lineage" / f"{dataset.lower()}.csv", dtype=str).fillna("")
        for variable, entries in variables.items():
            if variable == "@tests":  # findings test tables: result (and unit) field per test
                for t in entries:
                    texts = [a.text for a in notes[t["form"]][t["result"]]]
                    assert f"{dataset}ORRES when {dataset}TESTCD = {t['testcd']}" in " ".join(texts), t
                    if t["unit"] and t["unit"] in {i.name for i in design.form(t["form"]).items}:
                        assert f"{dataset}ORRESU when {dataset}TESTCD = {t['testcd']}" in " ".join(
                            a.text for a in notes[t["form"]][t["unit"]]), t
                    checked += 1
                continue
            for entry in entries:
                for form in sorted(set(lineage["form"])):  # the forms this dataset's records come from
                    crf = design.form(form)
                    for field in fields(entry["rule"]) & ({i.name for i in crf.items} if crf else set()):
                        named = {a.variable for a in notes[form][field]}
                        assert named - {""}, (dataset, variable, form, field)
                        checked += 1
        # findings and SUPP records name their field in the lineage
        for form, field in set(zip(lineage["form"], lineage["field"])):
            if field and design.form(form) is not None:
                found = [a.text for a in notes[form][field]]
                assert found and found != [NOT_SUBMITTED], (dataset, form, field)
                checked += 1
    assert checked > 200
    # the fields no rule reads are exactly the ones marked not submitted
    unmapped = {(f, n) for f, fs in notes.items() for n, a in fs.items() if a[0].text == NOT_SUBMITTED}
    assert unmapped == {("DM", "ENROLLED"), ("DTH", "DTHCAUS")}


def _form_text(pages, title: str) -> str:
    """The text of a form's pages (its first and its continued pages)."""
    return "\n".join(t for t in pages if t.startswith(title))


def test_pdf_text_read_back_with_pypdf(acrf):
    reader, pages = acrf
    ae = _form_text(pages, "Adverse Events")
    for text in ("AE = Adverse Events", "FA = Findings About", "Adverse event (verbatim term)", "AETERM",
                 "AESTDTC", "AEDLT in SUPPAE", "FAORRES when FATESTCD = DLT", "Not related"):
        assert text in ae, text
    dm = _form_text(pages, "Demographics and Enrolment")
    assert "DSSTDTC when DSDECOD = INFORMED" in dm and NOT_SUBMITTED in dm and "WEIGHT in SUPPDM" in dm
    liv = _form_text(pages, "Liver Function and Coagulation")
    assert "LBORRES when LBTESTCD = ALT" in liv and "LBORRESU when LBTESTCD = ALT" in liv
    assert pages[0].startswith("Annotated Case Report Form")
    # bookmarks by form and by visit
    outline = reader.outline
    titles = [o.title for o in outline if not isinstance(o, list)]
    assert titles == ["Forms", "Visits"]
    forms = [o.title for o in outline[1]]
    assert "Adverse Events (AE)" in forms and len(forms) == 18
    visits = outline[3]
    visit_titles = [o.title for o in visits if not isinstance(o, list)]
    assert visit_titles[:3] == ["SCREENING", "DAY -1", "DAY 1"]
    day1_forms = [o.title for o in visits[visit_titles.index("DAY 1") * 2 + 1]]
    assert day1_forms == ["UC-MSC Infusion", "Cytokines", "Liver Function and Coagulation"]
    assert reader.get_destination_page_number(outline[1][forms.index("Adverse Events (AE)")]) + 1 == \
        next(i for i, t in enumerate(pages, 1) if t.startswith("Adverse Events"))


def test_define_crf_origins_point_to_the_pages_holding_the_annotation(example_out, acrf):
    _reader, pages = acrf
    doc = etree.parse(str(example_out / "sdtm" / "define.xml"))
    assert doc.find(".//def:AnnotatedCRF/def:DocumentRef", NS).get("leafID") == "LF.acrf"
    leaf = doc.find(".//def:leaf[@ID='LF.acrf']", NS)
    assert leaf.get("{http://www.w3.org/1999/xlink}href") == "../acrf.pdf"
    refs = doc.xpath("//odm:ItemDef[def:Origin/def:DocumentRef/def:PDFPageRef]", namespaces=NS)
    assert len(refs) > 100
    for item in refs:
        page_refs = item.find("def:Origin/def:DocumentRef/def:PDFPageRef", NS)
        assert page_refs.get("Type") == "PhysicalRef"
        name, oid = item.get("Name"), item.get("OID")
        for page in page_refs.get("PageRefs").split():
            text = pages[int(page) - 1]
            if name == "QVAL":  # a SUPP--'s QVAL: QNAM in SUPPxx (value level: that QNAM)
                dataset = oid.split(".")[1]
                qnam = oid.split(".")[-1] if oid.count(".") == 3 else ""
                assert f"{qnam} in {dataset}" in text, (oid, page)
            elif oid.count(".") == 3:  # a findings result for one test
                dom, testcd = oid.split(".")[1], oid.split(".")[3]
                assert f"{name} when {dom}TESTCD = {testcd}" in text.replace("\n", " "), (oid, page)
            else:
                assert name in text, (oid, page)
    aeterm = doc.find(".//odm:ItemDef[@OID='IT.AE.AETERM']/def:Origin/def:DocumentRef/def:PDFPageRef", NS)
    assert pages[int(aeterm.get("PageRefs")) - 1].startswith("Adverse Events")


def test_define_html_crf_links_open_the_right_acrf_page(example_out, acrf):
    _reader, pages = acrf
    page = lxml_html.parse(str(example_out / "sdtm" / "define.html")).getroot()
    links = page.xpath("//a[@class='acrf']")
    assert len(links) > 100
    for a in links:
        href = a.get("href")
        assert href.startswith("../acrf.pdf#page=")
        number = int(href.split("=")[1])
        row = a.xpath("ancestor::tr[1]")[0]
        dataset, name = row.get("id").split(".")[1:3]  # IT.<dataset>.<variable>[.<value>]
        text = pages[number - 1].replace("\n", " ")
        if dataset.startswith("SUPP"):
            assert f"in {dataset}" in text, (row.get("id"), number)
        else:
            assert name in text, (row.get("id"), number)
    # the path from define.html reaches the PDF the run wrote
    assert (example_out / "sdtm" / "../acrf.pdf").resolve() == (example_out / "acrf.pdf").resolve()


def test_html_and_pdf_show_the_same_annotations_on_the_same_page(example_out, example_notes, acrf):
    """Each HTML row shows the field's annotations and names its PDF page; read back with pypdf,
    that page holds the question and every one of those annotations."""
    _reader, pages = acrf
    design, notes = example_notes
    page = lxml_html.parse(str(example_out / "acrf.html")).getroot()
    for form in design.forms:
        for item in form.items:
            row = page.get_element_by_id(f"F.{form.name}.{item.name}")
            expected = [a.text for a in notes[form.name][item.name]]
            assert [s.text_content() for s in row.xpath(".//span[contains(@class, 'note')]")] == expected
            number = int(row.get("data-page"))
            text = " ".join(pages[number - 1].split())
            assert " ".join(item.question.split()[:2]) in text, (form.name, item.name, number)
            for annotation in expected:
                assert annotation in text, (form.name, item.name, annotation, number)
    nav = [a.get("href") for a in page.xpath("//nav//a")]
    assert "#F.AE" in nav and len(nav) > 18  # forms, then each visit's forms


def test_acrf_is_byte_stable_and_the_same_from_csv_and_odm(example_out, example_out_odm, tmp_path):
    for name in ("acrf.pdf", "acrf.html"):
        assert (example_out / name).read_bytes() == (example_out_odm / name).read_bytes(), name
    subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "acrf", str(STUDY), "--out", str(tmp_path / "a")],
                   check=True, capture_output=True, cwd=REPO)
    for name in ("acrf.pdf", "acrf.html"):
        assert (tmp_path / "a" / name).read_bytes() == (example_out / name).read_bytes(), name


def test_a_rendered_page_shows_domain_boxes_and_annotations(example_out, acrf):
    """pdfium draws the AE page: the blue AE and yellow FA boxes are there, in the annotation column."""
    pdfium = pytest.importorskip("pypdfium2")
    _reader, pages = acrf
    number = next(i for i, t in enumerate(pages) if t.startswith("Adverse Events"))
    image = pdfium.PdfDocument(str(example_out / "acrf.pdf"))[number].render(scale=1).to_pil().convert("RGB")
    assert image.size == (612, 792)  # US Letter at 72 dpi: pixel = point
    width, height = image.size
    pixels = image.load()

    def count(colour, x0, x1):
        return sum(1 for x in range(x0, x1, 2) for y in range(0, height, 2) if pixels[x, y] == colour)

    blue, yellow = (0xBF, 0xFF, 0xFF), (0xFF, 0xFF, 0x96)
    assert count(blue, 406, 572) > 1000  # AE annotations fill the right-hand column
    assert count(yellow, 406, 572) > 50  # FA annotations (FAOBJ, FADTC, FAORRES)
    assert count(blue, 0, 240) > 50 and count(yellow, 0, 400) > 50  # the domain boxes at the top
    assert count(blue, 240, 400) == 0  # nothing coloured in the field column
    dark = sum(1 for x in range(40, 240) for y in range(100, height - 60) if sum(pixels[x, y]) < 450)
    assert dark > 1000  # the question text is drawn


def test_acrf_html_in_headless_chromium(example_out, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed and .ci/run could not install it (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (example_out / "acrf.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    page = etree.HTML(dom)
    assert page.xpath("//tr[@id='F.AE.AEDLT']//span[contains(@class,'note')]/text()") == \
        ["AEDLT in SUPPAE", "FAORRES when FATESTCD = DLT"]
    shot = tmp_path / "acrf.png"
    subprocess.run([browser, *flags, "--window-size=1200,900", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = {image.getpixel((x, y)) for x in range(0, image.width, 4) for y in range(0, image.height, 4)}
    assert (0xBF, 0xFF, 0xFF) in colours  # the AE domain colour is on screen


# --- bad input --------------------------------------------------------------------------------

def test_acrf_command_without_a_crf_design_is_one_line_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "acrf", str(REPO / "mappings" / "cdiscpilot01"),
                          "--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "no CRF design" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()


def test_bad_data_dictionary_names_file_and_line(study_copy, tmp_path):
    dictionary = study_copy / "edc" / "data_dictionary.csv"
    lines = dictionary.read_text().splitlines()
    lines[3] = lines[3].replace(",11,", ",eleven,", 1)
    dictionary.write_text("\n".join(lines) + "\n")
    run = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "run", str(study_copy), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "data_dictionary.csv:4" in run.stderr and "LENGTH" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()
    dictionary.unlink()
    run = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "run", str(study_copy), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "data_dictionary.csv" in run.stderr and not (tmp_path / "o").exists()


def test_acrf_out_naming_a_file_is_refused_and_the_file_kept(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    run = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "acrf", str(STUDY), "--out", str(notes)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "is a file" in run.stderr and "Traceback" not in run.stderr
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
