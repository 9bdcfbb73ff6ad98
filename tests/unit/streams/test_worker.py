"""The worker process's own set-up."""

from __future__ import annotations

import gc

from fraudgraph.streams.worker import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_what_start_up_built_and_collects_less_often():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.isenabled()  # reference cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
