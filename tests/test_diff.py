"""diff-spec and compare on real spec edits of the example study."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


from cdisc_convert.diff import compare_folders, diff_specs, read_spec_folder
from cdisc_convert.pipeline import run_study

from conftest import STUDY


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cdisc_convert.cli", *args], capture_output=True, text=True, cwd=cwd)


def edited(tmp_path, name: str, file: str, old: str, new: str) -> Path:
    target = tmp_path / name
    shutil.copytree(STUDY, target, ignore=shutil.ignore_patterns("out"))
    path = target / file
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return target


def changes_of(a: Path, b: Path) -> list[str]:
    return [c.text() for c in diff_specs(read_spec_folder(a), read_spec_folder(b))]


def sdtm_compare(example_out, study: Path, tmp_path):
    out = tmp_path / f"out-{study.name}"
    run_study(study, out)
    return compare_folders(example_out / "sdtm", out / "sdtm")


def changed_datasets(cmp):
    return {d.name for d in cmp.datasets if not d.equal} | set(cmp.added_datasets) | set(cmp.removed_datasets)


def test_changed_recode_entry(example_out, tmp_path):
    new = edited(tmp_path, "recode", "ds.yaml", "    field: DSSTAT\n", "    field: DSSTAT\n    map: {Other: PHYSICIAN DECISION}\n")
    assert changes_of(STUDY, new) == ['ds.yaml: variables / DSDECOD / map: added {"Other": "PHYSICIAN DECISION"}']
    cmp = sdtm_compare(example_out, new, tmp_path)
    assert changed_datasets(cmp) == {"DS"}
    ds = next(d for d in cmp.datasets if d.name == "DS")
    assert ds.records_added == ds.records_removed == 1  # DSDECOD is a key of DS
    assert ds.added_examples[0]["DSDECOD"] == "PHYSICIAN DECISION" and ds.removed_examples[0]["DSDECOD"] == "OTHER"


def test_new_supp_variable(example_out, tmp_path):
    new = edited(tmp_path, "supp", "ae.yaml", "supp:\n",
                 "supp:\n  - {qnam: AEONGO, qlabel: Ongoing at End of Study, rule: {field: AEONGO}}\n")
    assert changes_of(STUDY, new) == [
        'ae.yaml: supp / AEONGO: added {"qlabel": "Ongoing at End of Study", "qnam": "AEONGO", "rule": {"field": "AEONGO"}}']
    cmp = sdtm_compare(example_out, new, tmp_path)
    assert changed_datasets(cmp) == {"SUPPAE"}
    supp = next(d for d in cmp.datasets if d.name == "SUPPAE")
    ae_records = next(d for d in cmp.datasets if d.name == "AE").base_records
    assert supp.records_added == ae_records and supp.records_removed == 0 and not supp.values


def test_changed_visit_window(example_out, tmp_path):
    new = edited(tmp_path, "window", "study.yaml", "day: 85,  window: [78, 92]", "day: 85,  window: [75, 95]")
    assert changes_of(STUDY, new) == ["study.yaml: visits / W12 / window: [78, 92] -> [75, 95]"]
    cmp = sdtm_compare(example_out, new, tmp_path)
    assert changed_datasets(cmp) == {"TV"}
    tv = next(d for d in cmp.datasets if d.name == "TV")
    assert {v: x["count"] for v, x in tv.values.items()} == {"TVSTRL": 1, "TVENRL": 1}
    assert tv.values["TVENRL"]["examples"][0] == {"keys": {"STUDYID": "NCT05948982", "VISITNUM": 17.0, "ARMCD": ""},
                                                  "base": "Study day 92", "new": "Study day 95"}


def test_changed_label(example_out, tmp_path):
    new = edited(tmp_path, "label", "ae.yaml", "supp:\n", "metadata:\n  AETERM: {label: Verbatim Adverse Event Term}\nsupp:\n")
    assert changes_of(STUDY, new) == ['ae.yaml: metadata: added {"AETERM": {"label": "Verbatim Adverse Event Term"}}']
    cmp = sdtm_compare(example_out, new, tmp_path)
    assert changed_datasets(cmp) == {"AE"}
    ae = next(d for d in cmp.datasets if d.name == "AE")
    assert ae.attributes == [{"variable": "AETERM", "attribute": "label", "base": "Reported Term for the Adverse Event",
                              "new": "Verbatim Adverse Event Term"}]
    assert not ae.values and not ae.records_added and not ae.records_removed


def test_reordered_and_reformatted_yaml_is_no_difference(tmp_path):
    new = tmp_path / "reformatted"
    shutil.copytree(STUDY, new, ignore=shutil.ignore_patterns("edc"))
    spec = new / "pr.yaml"
    lines = spec.read_text().splitlines()
    head = [l for l in lines if not l.startswith("  ")]
    # block style instead of flow style, keys in another order
    spec.write_text("\n".join([
        "domain: PR", "variables:", "  PRSTDY:", "    of: PRSTDTC", "    derive: study_day",
        "  STUDYID:", "    constant: STUDYID", "  DOMAIN: {value: PR}",
        "  USUBJID: {concat: [{constant: STUDYID}, '-', {field: SUBJECT}]}", "  PRSEQ: {derive: seq}",
        "  PRTRT: {field: TXPROC}", "  PRDECOD: {value: LIVER TRANSPLANTATION}", "  EPOCH: {derive: epoch, of: PRSTDTC}",
        "  PRSTDTC: {date: TXDAT}", "sources:", "  - form: TX", ""]))
    assert head  # the original was flow style
    assert diff_specs(read_spec_folder(STUDY), read_spec_folder(new)) == []


def test_two_runs_compare_equal_and_exit_codes(example_out, tmp_path):
    again = tmp_path / "again"
    run_study(STUDY, again)
    same = cli("compare", str(example_out / "sdtm"), str(again / "sdtm"))
    assert same.returncode == 0 and "datasets are equal" in same.stdout
    assert cli("compare", str(example_out / "adam"), str(again / "adam")).returncode == 0
    missing = cli("compare", str(example_out / "sdtm"), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert cli("diff-spec", str(STUDY), str(STUDY)).returncode == 0
    assert cli("diff-spec", str(STUDY), str(tmp_path / "nowhere")).returncode == 2


def test_compare_writes_json_and_html(example_out, tmp_path):
    new = edited(tmp_path, "window2", "study.yaml", "day: 85,  window: [78, 92]", "day: 85,  window: [75, 95]")
    out = tmp_path / "o"
    run_study(new, out)
    proc = cli("compare", str(example_out / "sdtm"), str(out / "sdtm"), "--json", str(tmp_path / "c.json"),
               "--html", str(tmp_path / "c.html"))
    assert proc.returncode == 1
    import json
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["equal"] is False and any(d["name"] == "TV" and d["values"] for d in doc["datasets"])
    assert "TVSTRL" in (tmp_path / "c.html").read_text()


def test_git_revisions_read_with_git_show(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(STUDY, repo / "mappings" / "s1", ignore=shutil.ignore_patterns("edc"))

    def git(*a):
        subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    ds = repo / "mappings" / "s1" / "ds.yaml"
    ds.write_text(ds.read_text().replace("    field: DSSTAT\n", "    field: DSSTAT\n    map: {Other: PHYSICIAN DECISION}\n"))
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "two")
    ds.write_text(ds.read_text() + "# an uncommitted edit in the working tree\n")
    proc = cli("diff-spec", "--rev", "HEAD~1", "--rev", "HEAD", "--repo", str(repo), "--study", "mappings/s1")
    assert proc.returncode == 1
    assert 'ds.yaml: variables / DSDECOD / map: added {"Other": "PHYSICIAN DECISION"}' in proc.stdout
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True).stdout
    assert status.strip() == "M mappings/s1/ds.yaml"  # the working tree is as the user left it
    bad = cli("diff-spec", "--rev", "no-such-rev", "--rev", "HEAD", "--repo", str(repo), "--study", "mappings/s1")
    assert bad.returncode == 2 and "no-such-rev" in bad.stderr


def test_impact_runs_both_versions_on_the_same_export(tmp_path):
    new = edited(tmp_path, "impact", "ds.yaml", "    field: DSSTAT\n", "    field: DSSTAT\n    map: {Other: PHYSICIAN DECISION}\n")
    proc = cli("diff-spec", str(STUDY), str(new), "--impact", "--json", str(tmp_path / "i.json"))
    assert proc.returncode == 1
    import json
    impact = json.loads((tmp_path / "i.json").read_text())["impact"]
    changed = {d["name"] for d in impact["datasets"] if d["values"] or d["records_added"] or d["records_removed"]}
    assert changed == {"DS", "ADSL"}  # ADSL.DCSREAS follows DS
