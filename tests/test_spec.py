"""The spec language: validation errors name file, line and key; rules that need no code."""
from __future__ import annotations

import pandas as pd
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.spec import Condition, Rule, load_domain_spec, load_study_config
from cdisc_convert.sdtm.rules import RuleContext, evaluate_rule
from cdisc_convert.metadata import load_ct

from conftest import STUDY


def write(tmp_path, text, name="xx.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_all_shipped_specs_validate():
    load_study_config(STUDY / "study.yaml")
    from cdisc_convert.metadata.ct import load_study_terminology
    assert "LBTESTCD" in load_study_terminology(STUDY / "terminology.yaml").codelists
    for path in sorted(STUDY.glob("*.yaml")):
        if path.name not in ("study.yaml", "terminology.yaml"):
            assert load_domain_spec(path).domain


def test_typo_in_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "domain: AE\nsources:\n  - form: AE\nvariables:\n  AETERM: {feild: AETERM}\n")
    with pytest.raises(ConversionError) as err:
        load_domain_spec(path)
    assert err.value.spec == "xx.yaml:5"
    assert "variables.AETERM.feild" in err.value.message and "Extra inputs" in err.value.message


def test_rule_with_two_kinds_is_rejected(tmp_path):
    path = write(tmp_path, "domain: AE\nsources:\n  - form: AE\nvariables:\n  A: {field: X, value: Y}\n")
    with pytest.raises(ConversionError, match="exactly one of") as err:
        load_domain_spec(path)
    assert err.value.spec == "xx.yaml:5"


def test_unknown_derivation_is_rejected(tmp_path):
    path = write(tmp_path, "domain: AE\nsources:\n  - form: AE\nvariables:\n\n  A: {derive: magic}\n")
    with pytest.raises(ConversionError, match="unknown derivation 'magic'") as err:
        load_domain_spec(path)
    assert err.value.spec == "xx.yaml:6"


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "domain: AE\nsources: [\n")
    with pytest.raises(ConversionError, match="YAML syntax error") as err:
        load_domain_spec(path)
    assert err.value.spec.startswith("xx.yaml:")


def test_duplicate_key_names_its_line(tmp_path):
    # a YAML mapping with the same key twice would silently keep one of them
    path = write(tmp_path, "domain: AE\nsources:\n  - form: AE\nvariables:\n  AETERM: {field: AETERM}\n"
                           "  AETERM: {field: AEDECOD}\n")
    with pytest.raises(ConversionError, match="duplicate key 'AETERM'") as err:
        load_domain_spec(path)
    assert err.value.spec == "xx.yaml:6"


def test_spec_loaded_again_after_an_edit_and_not_shared(tmp_path):
    path = write(tmp_path, "domain: AE\nsources:\n  - form: AE\nvariables:\n  AETERM: {field: AETERM}\n")
    first = load_domain_spec(path)
    first.variables.clear()  # a caller's copy: the next load is whole
    assert list(load_domain_spec(path).variables) == ["AETERM"]
    path.write_text("domain: AE\nsources:\n  - form: AE\nvariables:\n  AEDECOD: {field: AETERM}\n")
    assert list(load_domain_spec(path).variables) == ["AEDECOD"]


def ctx(**columns):
    n = len(next(iter(columns.values())))
    rows = pd.DataFrame({**columns, "__src": [f"f.csv:{i + 2}" for i in range(n)]})
    return RuleContext(rows, pd.DataFrame(index=rows.index), {"STUDYID": "S1"}, load_ct(), "XX", "F",
                       lambda *p: "xx.yaml:9")


def rule(**kw):
    return Rule.model_validate(kw)


def test_assign_from_field_and_hard_coded_value_and_constant():
    c = ctx(A=["x", "y"])
    assert evaluate_rule(rule(field="A"), c, ()).tolist() == ["x", "y"]
    assert evaluate_rule(rule(value="LB"), c, ()).tolist() == ["LB", "LB"]
    assert evaluate_rule(rule(constant="STUDYID"), c, ()).tolist() == ["S1", "S1"]


def test_concat_builds_usubjid():
    c = ctx(SUBJECT=["01-001"])
    r = rule(concat=[{"constant": "STUDYID"}, "-", {"field": "SUBJECT"}])
    assert evaluate_rule(r, c, ()).tolist() == ["S1-01-001"]


def test_codelist_recode_through_map():
    assert evaluate_rule(rule(field="SEX", map={"Male": "M", "Female": "F"}, codelist="SEX"),
                         ctx(SEX=["Male", "female"]), ()).tolist() == ["M", "F"]


def test_value_outside_non_extensible_codelist_is_an_error():
    with pytest.raises(ConversionError, match="not in non-extensible codelist SEX") as err:
        evaluate_rule(rule(field="SEX", upper=True, codelist="SEX"), ctx(SEX=["M", "Mle"]), ())
    assert (err.value.source, err.value.field, err.value.spec) == ("f.csv:3", "SEX", "xx.yaml:9")


def test_value_outside_extensible_codelist_is_reported_not_silent():
    c = ctx(R=["INTRAVENOUS", "BY PIGEON"])
    assert evaluate_rule(rule(field="R", codelist="ROUTE"), c, ()).tolist() == ["INTRAVENOUS", "BY PIGEON"]
    assert c.deviations[0]["type"] == "ct-extensible-value" and c.deviations[0]["value"] == "BY PIGEON"


def test_codelist_recodes_collected_text_by_the_ct_synonyms():
    c = ctx(R=["Intravenous", "Oral", "PO"])
    assert evaluate_rule(rule(field="R", codelist="ROUTE"), c, ()).tolist() == ["INTRAVENOUS", "ORAL", "ORAL"]
    assert not c.deviations


def test_unmapped_value_is_an_error_not_passed_through():
    with pytest.raises(ConversionError, match="'Maybe' has no entry in the spec's map"):
        evaluate_rule(rule(field="A", map={"Yes": "Y", "No": "N"}), ctx(A=["Yes", "Maybe"]), ())


def test_conditional_assignment_evaluates_each_branch_on_its_rows():
    r = Rule.model_validate({"when": [{"if": {"field": "A", "in": ["Yes", "No"]},
                                       "then": {"field": "A", "map": {"Yes": "Y", "No": "N"}}}],
                             "else": {"field": "A", "upper": True}})
    assert evaluate_rule(r, ctx(A=["Yes", "Mild", "No"]), ()).tolist() == ["Y", "MILD", "N"]


def test_date_rule_gives_iso8601_and_errors_name_the_row():
    c = ctx(D=["08 JAN 2024", "UN FEB 2024"], T=["09:00", ""])
    assert evaluate_rule(rule(date="D", time="T"), c, ()).tolist() == ["2024-01-08T09:00", "2024-02"]
    with pytest.raises(ConversionError, match="unparseable date/time '32 JAN 2024'") as err:
        evaluate_rule(rule(date="D"), ctx(D=["08 JAN 2024", "32 JAN 2024"]), ())
    assert err.value.source == "f.csv:3" and err.value.field == "D"


def test_numeric_type_rejects_text():
    with pytest.raises(ConversionError, match="'abc' is not a number"):
        evaluate_rule(rule(field="A", type="num"), ctx(A=["1", "abc"]), ())


def test_condition_needs_one_comparison():
    with pytest.raises(ValueError):
        Condition.model_validate({"field": "A"})


def test_yaml_merge_key_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "domain: AE\nsources:\n  - form: AE\nbase: &b {field: AETERM}\nvariables:\n"
                           "  AETERM:\n    <<: *b\n")
    with pytest.raises(ConversionError, match="merge keys") as err:
        load_domain_spec(path)
    assert err.value.spec == "xx.yaml:7"
