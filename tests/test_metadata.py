"""The project's own standards facts: internally consistent, and equal to ../shared/standards
when that folder carries the CDISC packages."""
from __future__ import annotations

import json

import pytest

from cdisc_convert.metadata import load_ct, load_sdtmig

from conftest import SHARED


def test_sdtmig_names_and_labels_fit_xpt_v5():
    md = load_sdtmig()
    for domain in md.domains.values():
        assert len(domain.label) <= 40, domain.name
        assert set(domain.keys) <= set(domain.names), domain.name
        for v in domain.variables:
            assert len(v.name) <= 8 and v.name.isupper(), (domain.name, v.name)
            assert len(v.label) <= 40 and v.label.isascii(), (domain.name, v.name)
            assert v.type in ("Char", "Num") and v.core in ("Req", "Exp", "Perm")


def test_every_codelist_named_by_a_variable_exists():
    ct = load_ct()
    for domain in load_sdtmig().domains.values():
        for v in domain.variables:
            assert not v.codelist or v.codelist in ct, (domain.name, v.name, v.codelist)


def test_non_extensible_codelists_list_their_terms():
    for cl in load_ct().values():
        if not cl.extensible:
            assert cl.terms, cl.name


STANDARDS = SHARED / "standards"


@pytest.mark.skipif(not STANDARDS.exists(), reason="../shared/standards has not arrived yet")
def test_variable_labels_match_the_published_sdtmig():
    sources = list(STANDARDS.rglob("*sdtmig*.json")) + list(STANDARDS.rglob("*SDTMIG*.json"))
    if not sources:
        pytest.skip("no SDTMIG metadata file in ../shared/standards")
    published = json.loads(sources[0].read_text())
    text = json.dumps(published)
    md = load_sdtmig()
    missing = [f"{d.name}.{v.name}" for d in md.domains.values() if d.name != "SUPPQUAL"
               for v in d.variables if f'"{v.label}"' not in text]
    assert not missing, missing[:20]


@pytest.mark.skipif(not STANDARDS.exists(), reason="../shared/standards has not arrived yet")
def test_codelist_codes_and_terms_match_the_ct_package():
    files = [p for p in STANDARDS.rglob("*") if p.is_file() and "ct" in p.name.lower()]
    if not files:
        pytest.skip("no CT package in ../shared/standards")
    text = "\n".join(p.read_text(errors="replace") for p in files if p.stat().st_size < 200_000_000)
    for cl in load_ct().values():
        if cl.source != "CDISC" or not cl.code.startswith("C"):
            continue
        assert cl.code in text, cl.name
        for term in cl.terms:
            assert term in text, (cl.name, term)


def test_adamig_names_and_labels_fit_xpt_v5():
    from cdisc_convert.adam.output import load_adamig
    for name, (label, kind) in load_adamig().items():
        assert len(name) <= 8 and len(label) <= 40 and label.isascii() and kind in ("Char", "Num"), name


def test_adam_spec_labels_fit_xpt_v5():
    from cdisc_convert.adam.spec import load_adam_specs
    from conftest import STUDY
    for spec in load_adam_specs(STUDY / "adam"):
        assert len(spec.dataset) <= 8 and len(spec.label) <= 40
        for var in spec.variables:
            if not isinstance(var, str) and var.label:
                assert len(var.name) <= 8 and len(var.label) <= 40, var.name


@pytest.mark.skipif(not STANDARDS.exists(), reason="../shared/standards has not arrived yet")
def test_adam_labels_match_the_published_adamig():
    sources = [p for p in STANDARDS.rglob("*") if p.is_file() and "adam" in p.name.lower()]
    if not sources:
        pytest.skip("no ADaMIG metadata file in ../shared/standards")
    from cdisc_convert.adam.output import load_adamig
    text = "\n".join(p.read_text(errors="replace") for p in sources)
    missing = [n for n, (label, _k) in load_adamig().items() if label not in text]
    assert not missing, missing[:20]
