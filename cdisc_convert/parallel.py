"""Run an independent part of a conversion in a second process while this one goes on.

A run has two branches that need only the SDTM datasets: writing and validating SDTM, and deriving,
writing and validating ADaM. On a machine with two cores they run side by side: the branch is a
forked child (it shares the parent's datasets without copying or pickling them) that writes its own
files into the run's temporary folder and sends back, through a pipe, its progress messages as they
happen and one small result (timings, counts). Its files are the same bytes a single process writes.

Fork is used on Linux only (macOS and Windows start processes by spawning, which would copy every
dataset); elsewhere, and with ``jobs=1``, the branch runs in this process, in order.
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import struct
import sys
from typing import Callable, Generic, TypeVar

from .errors import ConversionError

T = TypeVar("T")


def can_fork() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


# Above this many SDTM records a run uses one process unless told otherwise: the second process
# saves wall time (about a quarter at 18 subjects, a tenth at 2,000) but costs CPU and memory, as
# each touches pages they shared; for a large study memory is the scarcer resource.
PARALLEL_RECORDS = 1_000_000


def default_jobs(records: int = 0) -> int:
    """2 when this process may use two cores, can fork and the study is not large, else 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 and can_fork() and records <= PARALLEL_RECORDS else 1


class FirstToCome:
    """A task for whichever process of the run comes to it first (the one that finished its own
    work sooner, so the two end together): a one-byte token in a pipe that both hold after the
    fork. A read from a pipe is atomic, so exactly one of them gets it; in one process, the first
    caller does.
    """

    def __init__(self):
        self._read, write = os.pipe()
        os.write(write, b"1")
        os.close(write)  # once the token is taken, a read finds the end of the pipe at once

    def take(self) -> bool:
        """True for the first caller of any process; False ever after."""
        return self._read is not None and os.read(self._read, 1) == b"1"

    def close(self) -> None:
        if self._read is not None:
            os.close(self._read)
            self._read = None


_open_branches = [0]  # forked and not yet joined


def _freeze_for_fork() -> None:
    """Move every object the collector tracks out of its reach while a branch is out: the child
    then never walks what it inherited (nor copies the pages its collections would write to),
    and neither process walks the datasets both keep (the example: 0.1 s of collections in each
    process). Objects are still freed when their last reference goes."""
    _open_branches[0] += 1
    gc.freeze()


def _thaw_after_fork() -> None:
    """Give the collector back everything frozen once the last branch is joined."""
    _open_branches[0] -= 1
    if _open_branches[0] == 0:
        gc.unfreeze()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Branch(Generic[T]):
    """``work(progress)`` started now; :meth:`join` gives its result or raises its error.

    In a child process when ``parallel`` (and fork is available), else run at once in this one.
    The child's progress messages reach ``progress`` whenever :meth:`poll` or :meth:`join` is called.
    """

    def __init__(self, work: Callable[[Callable[[str], None]], T], progress: Callable[[str], None],
                 parallel: bool = True):
        self._progress, self._pid, self._fd, self._buffer = progress, None, None, b""
        self._result: tuple[str, object] | None = None
        if not (parallel and can_fork()):
            try:
                self._result = ("ok", work(progress))
            except Exception as exc:  # raised by join, where the parallel branch raises it too
                self._result = ("error", exc)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        _freeze_for_fork()
        try:
            pid = os.fork()
        except BaseException:
            _thaw_after_fork()
            raise
        if pid == 0:  # the child: do the work, report, and leave without running the parent's cleanup
            status = 0
            try:
                os.close(read_end)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child; the parent cleans up

                def report(message: str) -> None:
                    _write_all(write_end, b"P" + message.replace("\n", " ").encode("utf-8", "replace") + b"\n")
                try:
                    result: tuple[str, object] = ("ok", work(report))
                except Exception as exc:
                    result = ("error", exc)
                try:
                    payload = pickle.dumps(result)
                except Exception as exc:  # an error that cannot be pickled: its text still gets through
                    payload = pickle.dumps(("error", ConversionError(str(result[1]) or repr(exc))))
                _write_all(write_end, b"R" + struct.pack(">Q", len(payload)) + payload)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self._pid, self._fd = pid, read_end

    @property
    def forked(self) -> bool:
        """True while the work runs (or ran) in a child process."""
        return self._fd is not None or self._pid is not None

    def poll(self) -> None:
        """Pass on the progress messages the child has sent so far (never waits)."""
        if self._fd is None:
            return
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buffer += chunk
        self._forward()

    def _forward(self) -> None:
        while self._buffer.startswith(b"P") and b"\n" in self._buffer:
            line, self._buffer = self._buffer[1:].split(b"\n", 1)
            self._progress(line.decode("utf-8", "replace"))

    def join(self) -> T:
        """Wait for the branch; its result, or its error raised here."""
        if self._fd is not None:
            os.set_blocking(self._fd, True)
            while True:
                chunk = os.read(self._fd, 1 << 20)
                if not chunk:
                    break
                self._buffer += chunk
                self._forward()
            os.close(self._fd)
            self._fd = None
            _pid, status = os.waitpid(self._pid, 0)
            self._pid = None
            _thaw_after_fork()
            self._forward()
            if self._buffer.startswith(b"R") and len(self._buffer) >= 9:
                size = struct.unpack(">Q", self._buffer[1:9])[0]
                self._result = pickle.loads(self._buffer[9:9 + size])
            else:
                signal_name = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                               else f"exit code {os.waitstatus_to_exitcode(status)}")
                raise ConversionError(f"the second process of the run ended without a result ({signal_name}; "
                                      f"out of memory?); run again with --jobs 1")
        assert self._result is not None
        status_word, value = self._result
        if status_word == "error":
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop the child (the run failed or was interrupted); nothing it wrote is kept by the caller."""
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGTERM)
                os.waitpid(self._pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self._pid = None
            _thaw_after_fork()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
