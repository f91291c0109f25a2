"""Bad input: each gives a clear error (file, row, field, spec line) and leaves no output."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.pipeline import run_study


def replace_in(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, count))


def run_fails(study: Path, out: Path, **kw) -> ConversionError:
    with pytest.raises(ConversionError) as err:
        run_study(study, out, **kw)
    assert not out.exists(), "no partial output may be left"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "temporary folder left behind"
    return err.value


def test_missing_source_column(study_copy, tmp_path):
    replace_in(study_copy / "edc" / "ae.csv", "AESTDAT", "AESTDT")
    err = run_fails(study_copy, tmp_path / "out")
    assert "missing source column 'AESTDAT' in form AE" in err.message
    assert err.field == "AESTDAT" and err.source == "ae.csv" and re.fullmatch(r"ae\.yaml:\d+", err.spec)


def test_unparseable_date(study_copy, tmp_path):
    lines = (study_copy / "edc" / "ae.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[5] = "31 FEB 2024"  # AESTDAT of the second data row
    lines[2] = ",".join(cells)
    (study_copy / "edc" / "ae.csv").write_text("\n".join(lines) + "\n")
    err = run_fails(study_copy, tmp_path / "out")
    assert "unparseable date/time '31 FEB 2024'" in err.message
    assert (err.source, err.field) == ("ae.csv:3", "AESTDAT") and err.spec.startswith("ae.yaml:")


def test_unknown_ct_value(study_copy, tmp_path):
    replace_in(study_copy / "edc" / "ae.csv", ",Mild,", ",Mildish,")
    err = run_fails(study_copy, tmp_path / "out")
    assert "value 'Mildish' is not in non-extensible codelist AESEV" in err.message
    assert err.field == "AESEV" and err.source.startswith("ae.csv:") and err.spec.startswith("ae.yaml:")


def test_ragged_csv_row(study_copy, tmp_path):
    path = study_copy / "edc" / "dm.csv"
    lines = path.read_text().splitlines()
    lines[4] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    err = run_fails(study_copy, tmp_path / "out")
    assert "ragged row" in err.message and err.source == "dm.csv:5"


def test_spec_with_typoed_key(study_copy, tmp_path):
    replace_in(study_copy / "ex.yaml", "EXSTDTC: {date: EXSTDAT, time: EXSTTIM}", "EXSTDTC: {date: EXSTDAT, tiem: EXSTTIM}")
    err = run_fails(study_copy, tmp_path / "out")
    line = next(i for i, l in enumerate((study_copy / "ex.yaml").read_text().splitlines(), 1) if "tiem" in l)
    assert err.spec == f"ex.yaml:{line}" and "variables.EXSTDTC.tiem" in err.message


def test_odm_with_external_entity(study_copy, tmp_path):
    odm = study_copy / "edc" / "nct05948982_odm.xml"
    text = odm.read_text()
    odm.write_text(text.replace('<?xml version="1.0" encoding="UTF-8"?>',
                                '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE ODM [<!ENTITY x SYSTEM "file:///etc/passwd">]>', 1))
    err = run_fails(study_copy, tmp_path / "out", edc=odm)
    assert "refused" in err.message and err.source == "nct05948982_odm.xml:2"


def test_failed_run_keeps_the_previous_output(study_copy, tmp_path):
    out = tmp_path / "out"
    run_study(study_copy, out)
    before = (out / "sdtm" / "dm.xpt").read_bytes()
    replace_in(study_copy / "edc" / "ae.csv", ",Mild,", ",Mildish,")
    with pytest.raises(ConversionError):
        run_study(study_copy, out)
    assert (out / "sdtm" / "dm.xpt").read_bytes() == before


def test_cli_prints_the_error_and_exits_2(study_copy, tmp_path):
    replace_in(study_copy / "edc" / "ae.csv", ",Mild,", ",Mildish,")
    proc = subprocess.run([sys.executable, "-m", "cdisc_convert.cli", "run", str(study_copy), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "[dataset AE; source ae.csv:" in proc.stderr.replace("\n", "") and "spec ae.yaml:" in proc.stderr
