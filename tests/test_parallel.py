"""The second process of a run (cdisc_convert.parallel.Branch): results, errors and progress come
back as if the work had run in this process, and a run gives the same bytes with one or two."""
from __future__ import annotations

import os
import signal

import pandas as pd
import pytest

from cdisc_convert.errors import ConversionError
from cdisc_convert.parallel import Branch, FirstToCome, can_fork

needs_fork = pytest.mark.skipif(not can_fork(), reason="fork is used on Linux only")


@needs_fork
def test_branch_runs_in_another_process_and_returns_its_result():
    seen = []

    def work(report):
        report("write LB")
        report("validate SDTM")
        return {"pid": os.getpid(), "counts": {"error": 0, "warning": 3}}

    branch = Branch(work, seen.append)
    assert branch.forked
    result = branch.join()
    assert result["pid"] != os.getpid()
    assert result["counts"] == {"error": 0, "warning": 3}
    assert seen == ["write LB", "validate SDTM"]  # the child's progress, in its order


@needs_fork
def test_a_task_for_the_first_to_come_goes_to_exactly_one_process():
    for child_first in (True, False):
        task = FirstToCome()
        ready_read, ready_write = os.pipe()

        def work(report, task=task):
            if not child_first:
                os.read(ready_read, 1)  # the parent has come first
            return task.take()

        branch = Branch(work, lambda m: None)
        if child_first:
            child_took = branch.join()
            mine = task.take()
        else:
            mine = task.take()
            os.write(ready_write, b"x")
            child_took = branch.join()
        task.close()
        os.close(ready_read)
        os.close(ready_write)
        assert (child_took, mine) == ((True, False) if child_first else (False, True))


def test_in_one_process_the_first_caller_takes_the_task():
    task = FirstToCome()
    assert [task.take(), task.take(), task.take()] == [True, False, False]
    task.close()
    assert not task.take()


@needs_fork
def test_branch_error_is_raised_in_the_parent_with_what_it_names():
    def work(report):
        raise ConversionError("non-ASCII character in value 'café'", source="lb.csv:12", dataset="LB", field="LBORRES")

    branch = Branch(work, lambda m: None)
    with pytest.raises(ConversionError) as caught:
        branch.join()
    assert "non-ASCII" in str(caught.value)
    assert (caught.value.source, caught.value.dataset, caught.value.field) == ("lb.csv:12", "LB", "LBORRES")


@needs_fork
def test_a_child_that_dies_without_a_result_is_a_one_line_error():
    def work(report):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's out-of-memory killer does

    branch = Branch(work, lambda m: None)
    with pytest.raises(ConversionError, match="ended without a result .signal 9.*--jobs 1"):
        branch.join()


def test_one_process_runs_the_work_at_once_and_joins_the_same_way():
    order = []
    branch = Branch(lambda report: order.append("work") or 7, order.append, parallel=False)
    order.append("after")
    assert not branch.forked
    assert branch.join() == 7
    assert order == ["work", "after"]
    failing = Branch(lambda report: (_ for _ in ()).throw(ConversionError("bad")), order.append, parallel=False)
    with pytest.raises(ConversionError, match="bad"):
        failing.join()


@needs_fork
def test_cancel_stops_the_child():
    import time

    branch = Branch(lambda report: time.sleep(60), lambda m: None)
    pid = branch._pid
    branch.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no such child any more


@needs_fork
def test_objects_are_frozen_from_the_collector_only_while_a_branch_is_out():
    """The child never walks what it inherited; the parent gets its collector back, whole, once
    the last branch is joined (or cancelled), even with two out at once and one failing."""
    import gc
    import time

    gc.unfreeze()  # whatever an earlier test left: this one counts from none
    first = Branch(lambda report: gc.get_freeze_count(), lambda m: None)
    frozen_at_fork = gc.get_freeze_count()
    assert frozen_at_fork > 0
    second = Branch(lambda report: (_ for _ in ()).throw(ConversionError("bad")), lambda m: None)
    assert first.join() >= frozen_at_fork  # the child held everything it inherited frozen
    assert gc.get_freeze_count() > 0  # the second branch is still out
    with pytest.raises(ConversionError, match="bad"):
        second.join()
    assert gc.get_freeze_count() == 0
    sleeping = Branch(lambda report: time.sleep(60), lambda m: None)
    assert gc.get_freeze_count() > 0
    sleeping.cancel()
    assert gc.get_freeze_count() == 0
    assert Branch(lambda report: 1, lambda m: None, parallel=False).join() == 1 and gc.get_freeze_count() == 0


@needs_fork
def test_run_gives_the_same_bytes_with_one_or_two_processes(tmp_path, example_out):
    """example_out ran with the default processes (two here); the same study in one gives the same files."""
    from conftest import STUDY

    from cdisc_convert.parallel import default_jobs
    from cdisc_convert.pipeline import run_study

    run_study(STUDY, tmp_path / "one", jobs=1)
    one, two = tmp_path / "one", example_out
    if default_jobs() < 2:  # a one-core machine: example_out was one process too, so run two here
        run_study(STUDY, tmp_path / "two", jobs=2)
        two = tmp_path / "two"
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert len(files) > 50
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f


def test_free_heap_pages_go_back_to_the_system_on_glibc():
    """release_freed_memory (called between phases) returns the pages of freed column buffers that
    glibc would otherwise keep (buffers below its mmap threshold live on the heap)."""
    import sys

    import numpy as np

    from cdisc_convert.memory import release_freed_memory

    if not sys.platform.startswith("linux"):
        assert release_freed_memory() is False
        return

    def resident() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    columns = [np.ones(12_000) for _ in range(2_000)]  # 96 KB each: heap, not mmap
    keep = columns[::100]  # a few survivors scattered through the heap, as in a real run
    del columns
    before = resident()
    assert release_freed_memory() is True
    assert resident() < before - 100 * 2**20  # most of the 190 MB freed: given back
    assert len(keep) == 20


def test_jobs_must_be_a_number_of_processes():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cdisc_convert", "run", "mappings/nct05948982", "--out",
                           "never-written", "--jobs", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--jobs: '0' is not a number of processes" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists("never-written")


def test_fewer_collections_restores_the_collector_even_on_error():
    import gc

    from cdisc_convert.memory import GC_YOUNG_THRESHOLD, fewer_collections

    before = gc.get_threshold()
    seen = []

    @fewer_collections
    def work(fail: bool):
        seen.append(gc.get_threshold()[0])
        if fail:
            raise ValueError("bad input")
        return "done"

    assert work(False) == "done" and gc.get_threshold() == before
    with pytest.raises(ValueError):
        work(True)
    assert gc.get_threshold() == before and seen == [max(before[0], GC_YOUNG_THRESHOLD)] * 2


def _mapped(parallel: bool, fail: tuple[str, ...] = ()):
    """The example's domains mapped in one process or two; the specs of ``fail`` name a missing form."""
    from conftest import STUDY

    from cdisc_convert.metadata import load_sdtmig, load_terminology
    from cdisc_convert.pipeline import map_domains, read_edc
    from cdisc_convert.sdtm.engine import Conversion, load_specs, screen_rows
    from cdisc_convert.spec import load_study_config

    study = load_study_config(STUDY / "study.yaml")
    specs = load_specs(STUDY)
    for spec in specs:
        if spec.domain in fail:
            spec.sources[-1].form = "NO_SUCH_FORM"
    raw, _files = read_edc(study, STUDY)
    run = Conversion()
    forms, run.excluded = screen_rows(raw, study)
    seen: list[str] = []
    map_domains(specs, forms, study, load_terminology(None, STUDY), load_sdtmig(), run, seen.append, parallel)
    return run, seen


@needs_fork
def test_domains_mapped_in_two_processes_are_the_same_records_deviations_and_exclusions():
    one, _ = _mapped(False)
    two, messages = _mapped(True)
    assert list(two.domains) == list(one.domains)  # spec order
    for name in one.domains:
        pd.testing.assert_frame_equal(two.domains[name].data, one.domains[name].data)
    assert two.deviations == one.deviations and two.excluded == one.excluded
    assert two.used_sources == one.used_sources
    assert sorted(messages) == sorted(f"map {n}" for n in one.domains)  # both processes' progress


@needs_fork
@pytest.mark.parametrize("fail", [("AE", "LB"), ("QS",), ("LB", "QS"), ("DM", "QS")])
def test_the_first_failing_spec_is_reported_whichever_process_maps_it(fail):
    with pytest.raises(ConversionError) as one:
        _mapped(False, fail)
    with pytest.raises(ConversionError) as two:
        _mapped(True, fail)
    assert str(two.value) == str(one.value) and one.value.dataset == two.value.dataset
