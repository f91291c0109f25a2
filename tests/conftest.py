"""Shared fixtures: the example study converted once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cdisc_convert.pipeline import run_study

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "mappings" / "nct05948982"
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def example_out(tmp_path_factory) -> Path:
    """The example study (committed CSV export) converted into a fresh folder."""
    out = tmp_path_factory.mktemp("run") / "out"
    run_study(STUDY, out)
    return out


@pytest.fixture(scope="session")
def example_out_odm(tmp_path_factory) -> Path:
    """The same study converted from its ODM 1.3.2 export."""
    out = tmp_path_factory.mktemp("run_odm") / "out"
    run_study(STUDY, out, edc=STUDY / "edc" / "nct05948982_odm.xml")
    return out


@pytest.fixture(scope="session")
def pilot_out(tmp_path_factory) -> Path:
    """The CDISC pilot study (SDTM and ADaM) converted once for the pilot tests."""
    out = tmp_path_factory.mktemp("pilot") / "out"
    run_study(REPO / "mappings" / "cdiscpilot01", out)
    return out


@pytest.fixture
def study_copy(tmp_path) -> Path:
    """A writable copy of the example study folder (specs + export), for bad-input tests."""
    dst = tmp_path / "study"
    shutil.copytree(STUDY, dst)
    return dst
