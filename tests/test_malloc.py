"""
The allocator's tuning at start-up: made unless the environment says
otherwise, reported only when it took.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from proxypypi.service.malloc import (
    ARENAS,
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    MMAP_THRESHOLD,
    glibc_mallopt,
    tune_malloc,
)


class Recorder:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


class TuneTests(SynchronousTestCase):
    def test_both_set(self) -> None:
        mallopt = Recorder()
        made = tune_malloc(mallopt, environ={})
        self.assertEqual(mallopt.calls, [(M_ARENA_MAX, ARENAS), (M_MMAP_THRESHOLD, MMAP_THRESHOLD)])
        self.assertEqual(
            made, [f"MALLOC_ARENA_MAX={ARENAS}", f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}"]
        )

    def test_environment_wins(self) -> None:
        """An operator's MALLOC_ARENA_MAX is left alone; the threshold is still set."""
        mallopt = Recorder()
        made = tune_malloc(mallopt, environ={"MALLOC_ARENA_MAX": "8"})
        self.assertEqual(mallopt.calls, [(M_MMAP_THRESHOLD, MMAP_THRESHOLD)])
        self.assertEqual(made, [f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}"])

    def test_refused_settings_not_reported(self) -> None:
        self.assertEqual(tune_malloc(Recorder(answer=0), environ={}), [])

    def test_this_c_library(self) -> None:
        """On glibc, its mallopt is found and accepts the settings."""
        mallopt = glibc_mallopt()
        if mallopt is None:
            raise self.skipTest("not glibc")
        self.assertEqual(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), 1)
