"""Subnormal floats flushed to zero on every thread torch computes on (CPU only).

Why: a run at the edge of a learning-rate sweep saturates its sigmoid and tanh gates, and
the gradients through a saturated gate (sigmoid'(x) = s(1 - s), tanh'(x) = 1 - tanh^2) and
the values that follow from them shrink below float32's smallest normal number, 1.2e-38.
Many x86 processors compute on such subnormal numbers in a slow path (microcode), up to
a hundred times slower than on normal ones: on one, a saturated width-256 run took 20x as
long a step as with subnormals flushed (issue 13: 215 s against 11 s for 120 steps);
others (the AMD EPYC of benchmarks/README.md) pay nothing. Flushing them to zero (FTZ:
results; DAZ: inputs) changes a number below 1.2e-38 into 0, nothing else.

``torch.set_flush_denormal`` sets the processor's flag on the calling thread only, and
torch's OpenMP worker threads keep their own: with two threads, an elementwise op flushed
half of a tensor. ``set_flush`` therefore also runs it on every thread of the calling
thread's OpenMP team, through ``GOMP_parallel`` (what ``#pragma omp parallel`` compiles
to) of the libgomp torch loaded; threads created later inherit their creator's flag.
Where no such library is found (a native thread pool), only the calling thread is set:
then the setting is exact with one thread only. ``FlushSubnormals``, a callback every
``LanguageModel`` adds to its Trainer, sets it for a run and restores it after, even
after an exception (the flag also applies to Python's own floats on the calling
thread, and hypothesis, for one, refuses to run under it). The flag is the CPU's: on a GPU the
setting changes nothing of the arithmetic, and costs nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
from collections.abc import Iterator

import lightning as L
import torch

# (void *data) -> void: the function GOMP_parallel runs on each thread of the team.
_TEAM_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def flushing() -> bool:
    """Whether the calling thread flushes subnormals now (a 1e-39 times 1 gives 0)."""
    return bool((subnormals(1) * 1.0).item() == 0.0)


def subnormals(n: int) -> torch.Tensor:
    """(n,) float32 of 1e-39, made from its bits: no float arithmetic that could flush it."""
    return torch.full((n,), 0x000AE398, dtype=torch.int32).view(torch.float32)


def set_flush(on: bool) -> bool:
    """Flush subnormals to zero (``on``) or compute them (not ``on``) on the calling thread
    and every thread of its OpenMP pool, those torch runs on now and any it keeps. Returns the
    calling thread's setting before, for a caller that restores it. Where the CPU has no
    such flag (``torch.set_flush_denormal`` returns False) nothing changes."""
    before = flushing()
    if not torch.set_flush_denormal(on):
        return before  # unsupported here: subnormals are computed, as they were
    gomp, team = _libgomp(), _team_size()
    if gomp is not None and team > 1:
        # Kept in a local for the whole call: ctypes frees the trampoline with the object.
        callback = _TEAM_FN(lambda _data: torch.set_flush_denormal(on))
        gomp.GOMP_parallel(callback, None, ctypes.c_uint(team), ctypes.c_uint(0))
    return before


def _team_size() -> int:
    """At least every thread libgomp's pool holds: the process's threads (it keeps a
    larger team's threads while torch runs on one, and reuses them, flag and all, when
    torch runs on more again), and at least ``torch.get_num_threads()``."""
    try:
        running = len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: the most threads torch would use by default
        running = os.cpu_count() or 1
    return max(torch.get_num_threads(), running)


@contextlib.contextmanager
def flushed(on: bool) -> Iterator[None]:
    """``set_flush(on)`` for the block, then the calling thread's setting before, again."""
    before = set_flush(on)
    try:
        yield
    finally:
        set_flush(before)


class FlushSubnormals(L.Callback):
    """The model's ``flush_subnormals`` (default on) for the span of a Trainer's fit,
    validate or test, on every thread; the process's own setting back at its end, also
    when it raises. ``LanguageModel.configure_callbacks`` adds it to any Trainer."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._before = set_flush(getattr(pl_module.hparams, "flush_subnormals", True))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.restore()  # Lightning calls no teardown hook then

    def restore(self) -> None:
        if hasattr(self, "_before"):
            set_flush(self._before)
            del self._before


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The OpenMP runtime torch uses, opened once; None if torch's backend is not OpenMP or
    no runtime with ``GOMP_parallel`` is found."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    for path in _openmp_candidates():
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same handle, the same thread pool
            lib.GOMP_parallel.restype = None
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _openmp_candidates() -> list[str]:
    """Paths of the OpenMP runtime: the one this process has loaded (Linux), then the ones
    torch ships (``torch/lib``; ``torch.libs`` in manylinux wheels)."""
    names = ("libgomp", "libomp", "libiomp5")  # LLVM's and Intel's export GOMP_* too
    loaded = []
    with contextlib.suppress(OSError):
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith(names) and path not in loaded:
                    loaded.append(path)
    here = os.path.dirname(torch.__file__)
    shipped = [
        path
        for folder in (os.path.join(here, "lib"), os.path.join(here, os.pardir, "torch.libs"))
        for name in names
        for path in sorted(glob.glob(os.path.join(folder, f"{name}*")))
    ]
    return loaded + shipped
