"""What a new user runs into (issue 12), one test per case: the user's files are never lost,
every user error is one line and exit 2, and the console says what happened."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cdisc_convert.cli import main
from cdisc_convert.writers import MARKER

from conftest import REPO, STUDY


def cli(*args, cwd=None, stdin_tty=False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdisc_convert", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "80"})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def study(tmp_path) -> Path:
    dst = tmp_path / "study"
    shutil.copytree(STUDY, dst)
    return dst


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ never lose a file

@pytest.mark.parametrize("where", ["study itself", "study's parent", "its EDC export"])
def test_out_may_not_be_or_hold_the_study(study, where):
    out = {"study itself": study, "study's parent": study.parent, "its EDC export": study / "edc"}[where]
    (study.parent / "unrelated.txt").write_text("keep me")
    before = snapshot(study.parent)
    message = one_line_error(cli("run", study, "--out", out))
    assert "is or contains" in message or "not written by cdisc-convert" in message
    assert snapshot(study.parent) == before


def test_run_dot_out_dot_is_refused_at_once(study):
    before = snapshot(study)
    message = one_line_error(cli("run", ".", "--out", ".", cwd=study))
    assert "is or contains" in message and snapshot(study) == before
    assert not [p for p in study.parent.iterdir() if ".tmp-" in p.name]


def test_out_naming_a_file_leaves_the_file_alone(study, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    message = one_line_error(cli("run", study, "--out", notes))
    assert "is a file" in message and notes.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "study"]  # no hidden .notes.txt.old-*


def test_a_folder_the_tool_did_not_write_is_refused(study, tmp_path):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "analysis.sas").write_text("proc print; run;")
    message = one_line_error(cli("run", study, "--out", mine))
    assert MARKER in message and (mine / "analysis.sas").read_text() == "proc print; run;"


def test_an_earlier_output_is_replaced_and_killed_runs_are_cleaned_up(study, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--quiet"]) == 0
    assert (out / MARKER).is_file()  # adam/ inside it is covered by the same marker
    stale = tmp_path / ".out.tmp-999999-abcd"  # a run killed with kill -9 (no such process now)
    (stale / "sdtm").mkdir(parents=True)
    os.umask(0o022)
    assert main(["run", str(study), "--out", str(out), "--quiet"]) == 0
    assert not stale.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert (out.stat().st_mode & 0o777) == 0o755  # the umask, not mkdtemp's 0700


# ------------------------------------------------------------------ bad input: one line, exit 2

def _rewrite_cell(path: Path, row: int, column: str, value: str) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    rows[row][rows[0].index(column)] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")


def test_a_form_with_no_rows_gives_an_empty_dataset_and_a_note(study, tmp_path):
    ae = study / "edc" / "ae.csv"
    ae.write_text(ae.read_text().splitlines()[0] + "\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--quiet"]) == 0
    import pyreadstat
    data, _ = pyreadstat.read_xport(str(out / "sdtm" / "ae.xpt"))
    assert len(data) == 0 and {"AETERM", "AEDECOD", "AESTDTC"} <= set(data.columns)
    report = json.loads((out / "report.json").read_text())
    assert {"type": "empty-form", "dataset": "AE", "form": "AE"}.items() <= report["deviations"][0].items()


def test_a_nul_byte_names_file_row_and_field(study, tmp_path):
    _rewrite_cell(study / "edc" / "ae.csv", 2, "AETERM", "Fe\x00ver")
    message = one_line_error(cli("run", study, "--out", tmp_path / "out"))
    assert "U+0000" in message and "source ae.csv:3" in message and "field AETERM" in message
    assert not (tmp_path / "out").exists()


def test_cp1252_read_as_latin1_is_caught_with_a_hint(study, tmp_path):
    ae = study / "edc" / "ae.csv"
    _rewrite_cell(ae, 2, "AETERM", "Patient\u2019s fever")
    ae.write_bytes(ae.read_text(encoding="utf-8").encode("cp1252"))
    message = one_line_error(cli("run", study, "--out", tmp_path / "out", "--encoding", "latin-1"))
    assert "U+0092" in message and "cp1252" in message and "ae.csv:3" in message


def test_non_ascii_values_name_their_edc_row(study, tmp_path):
    _rewrite_cell(study / "edc" / "ae.csv", 4, "AETERM", "Caf\u00e9 fever")
    message = one_line_error(cli("run", study, "--out", tmp_path / "out"))
    assert "non-ASCII" in message and "source ae.csv:5" in message and "field AETERM" in message


@pytest.mark.parametrize("args, expected", [
    (["run", "{tmp}/no-such-study", "--out", "{tmp}/out"], "study folder not found"),
    (["run", "{study}", "--out", "{tmp}/out", "--encoding", "klingon"], "unknown encoding"),
    (["example", "--subjects", "0", "--out", "{tmp}/ex"], "at least 1"),
    (["example", "--subjects", "-5", "--out", "{tmp}/ex"], "at least 1"),
    (["explain", "LB", "USUBJID", "--out", "{tmp}/out"], "KEY=VALUE"),
    (["validate", "{tmp}/nothing-here"], "not found"),
    (["compare", "{tmp}/a.xpt", "{tmp}/b.xpt"], "not found"),
])
def test_user_errors_are_one_line_and_exit_2(study, tmp_path, args, expected):
    message = one_line_error(cli(*[a.format(tmp=tmp_path, study=study) for a in args]))
    assert expected in message


def test_a_read_only_output_folder_is_one_line(study, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert "Permission" in one_line_error(cli("run", study, "--out", parent / "out"))
    finally:
        parent.chmod(0o755)


def test_a_full_disk_is_one_line(study, tmp_path, monkeypatch, capsys):
    import errno

    from cdisc_convert import xpt

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(xpt, "write_xpt_v5", full)
    assert main(["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = cli("--debug", "run", tmp_path / "missing", "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" in result.stderr


# ------------------------------------------------------------------ what the console says

def test_piped_run_prints_progress_lines_and_ends_with_the_summary(study, tmp_path):
    result = cli("run", study, "--out", tmp_path / "out", "--fail-on", "warning")
    lines = result.stderr.splitlines()
    steps = [line for line in lines if line[:2].isdigit() and line[2] == ":" and "s] " in line]
    assert len(steps) > 10 and any("map AE" in s for s in steps)  # timestamped, as it works
    assert lines[-2].startswith("validation SDTM: 0 error(s)") and lines[-1].startswith("validation ADAM:")
    assert "report: " in lines[-2]
    assert result.returncode == 1  # the example has visit-window warnings, and --fail-on warning
    assert all(len(line) <= 400 for line in lines)


def test_quiet_prints_only_the_summary(study, tmp_path):
    result = cli("run", study, "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 0 and [line.split(":")[0] for line in result.stderr.splitlines()] == \
        ["validation SDTM", "validation ADAM"]


def test_text_output_never_wraps_when_piped(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(STUDY, old, ignore=shutil.ignore_patterns("edc"))
    shutil.copytree(STUDY, new, ignore=shutil.ignore_patterns("edc"))
    long_title = "A very long study title " * 8
    text = (new / "study.yaml").read_text()
    (new / "study.yaml").write_text(text.replace("  title: ", f"  title: {long_title.strip()} ", 1))
    result = cli("diff-spec", old, new)
    assert result.returncode == 1
    # the change is one line however long (it was broken at 80 columns when piped)
    assert any("study / title:" in line and "-> A very long study title A very long study title A very long" in line
               for line in result.stdout.splitlines()), result.stdout


def test_version_description_and_help_for_every_argument():
    from cdisc_convert import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"cdisc-convert {__version__}"
    top = cli("--help").stdout
    assert "ADaM" in top and "Exit codes" in top
    import argparse

    from cdisc_convert import cli as cli_module
    parsers = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)
    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            cli_module.main(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = real
    sub = next(a for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.dest} has no help text"


# ------------------------------------------------------------------ explain, compare, report

def test_explain_follows_an_adam_record_to_the_edc_rows(example_out):
    result = cli("explain", "ADSL", "USUBJID=NCT05948982-01-001", "--out", example_out)
    assert result.returncode == 0, result.stderr
    assert "from: DM.USUBJID=NCT05948982-01-001" in result.stdout
    assert "source record: dm.csv:" in result.stdout  # through DM to the EDC row


def test_compare_takes_two_dataset_files(example_out, tmp_path):
    shutil.copy(example_out / "sdtm" / "dm.xpt", tmp_path / "a.xpt")
    shutil.copy(example_out / "sdtm" / "dm.xpt", tmp_path / "b.xpt")
    result = cli("compare", tmp_path / "a.xpt", tmp_path / "b.xpt")
    assert result.returncode == 0 and "equal" in result.stdout


def test_report_groups_findings_that_repeat(example_out):
    page = (example_out / "validation" / "sdtm" / "report.html").read_text()
    grouped = page[page.index('id="grouped"'):page.index("</table>", page.index('id="grouped"'))]
    assert "NCT05948982-01-006" in grouped and "WEEK 12" in grouped  # the late week-12 visit: one row per dataset
    assert grouped.count("<tr class=") < page.count("<tr class='sev-warning'>")


# ------------------------------------------------------------------ installed as a user installs it

def test_installed_without_editable_mode_runs_example_and_run_from_another_folder(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    build = tmp_path / "src"
    shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(".git", "out", "build", "*.egg-info", "__pycache__"),
                    symlinks=True)
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(build)],
                             capture_output=True, text=True)  # a regular (isolated) build, as pip install . does
    assert install.returncode == 0, install.stderr[-2000:]
    shutil.rmtree(build)  # nothing may be read from the source tree
    work = tmp_path / "elsewhere"
    work.mkdir()
    exe = env_dir / "bin" / "cdisc-convert"
    made = subprocess.run([str(exe), "example", "--subjects", "3", "--out", "st"], cwd=work, capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    ran = subprocess.run([str(exe), "run", "st", "--out", "out"], cwd=work, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (work / "out" / "sdtm" / "define.xml").is_file() and (work / "out" / "validation" / "sdtm" / "report.html").is_file()
    assert "validation SDTM: 0 error(s)" in ran.stderr


def test_sigterm_leaves_no_temporary_folder(study, tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "cdisc_convert", "run", str(study), "--out", str(tmp_path / "out")],
                            stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # the first progress line: the run is under way
    assert "read EDC export" in first
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "interrupted" in err and "Traceback" not in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.") or p.name == "out"]


def test_progress_on_a_terminal_counts_steps_and_gives_an_eta(tmp_path):
    from cdisc_convert.cli import Progress
    from cdisc_convert.pipeline import run_study

    seen = []

    class Status:  # stands in for rich's status line on a terminal
        def update(self, text):
            seen.append(text)
    progress = Progress()
    progress.status = Status()
    run_study(STUDY, tmp_path / "out", progress=progress)
    assert progress.total and abs(progress.steps - progress.total) <= progress.total // 5  # the estimate holds
    assert seen[0].startswith("step 1/") and "elapsed" in seen[0] and "left" in seen[-1]


def test_a_reader_that_goes_away_is_not_an_error(monkeypatch, capfd, tmp_path):
    from cdisc_convert import lineage

    def gone(*a, **k):  # what `cdisc-convert explain ... | head -1` meets once head has exited
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(lineage, "explain_record", gone)
    redirected = []  # the CLI points stdout at /dev/null; not done to the test runner's own stdout
    monkeypatch.setattr(os, "dup2", lambda fd, fd2: redirected.append(fd2))
    assert main(["explain", "LB", "USUBJID=X", "--out", str(tmp_path)]) == 0
    assert "error" not in capfd.readouterr().err and redirected
