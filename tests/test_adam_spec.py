"""ADaM specs: errors name the file and line; bad steps are refused before anything runs."""
from __future__ import annotations

import pytest

from cdisc_convert.adam.spec import load_adam_spec
from cdisc_convert.errors import ConversionError

HEAD = "dataset: ADXX\nlabel: Test\nkeys: [USUBJID]\nvariables: [USUBJID]\nsteps:\n"


def test_unknown_step_names_file_and_line(tmp_path):
    path = tmp_path / "adxx.yaml"
    path.write_text(HEAD + "  - {derive: start, from: DM}\n  - {derive: magic, x: 1}\n")
    with pytest.raises(ConversionError) as err:
        load_adam_spec(path)
    assert err.value.spec == "adxx.yaml:7" and "steps.1" in err.value.message


def test_typo_in_step_parameter(tmp_path):
    path = tmp_path / "adxx.yaml"
    path.write_text(HEAD + "  - {derive: start, from: DM}\n  - {derive: relative_day, refrence: TRTSDT, vars: {ADY: ADT}}\n")
    with pytest.raises(ConversionError, match="steps.1") as err:
        load_adam_spec(path)
    assert err.value.spec == "adxx.yaml:7"


def test_shipped_adam_specs_validate():
    from conftest import STUDY
    from cdisc_convert.adam.spec import load_adam_specs
    assert [s.dataset for s in load_adam_specs(STUDY / "adam")] == ["ADAE", "ADLB", "ADQS", "ADSL", "ADTTE"]
