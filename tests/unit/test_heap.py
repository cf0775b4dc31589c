"""The garbage collector of a started process: frozen, young collections rarer, cycles still
collected, and its time counted for /metrics."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from oms_platform import heap


@pytest.fixture
def collector() -> Iterator[None]:
    """Puts the collector back as it was after each test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_freezes_what_the_process_holds_and_collects_young_objects_less_often(
    collector: None,
) -> None:
    held = [_Node() for _ in range(100)]
    _, middle, oldest = gc.get_threshold()
    heap.settle(5_000)
    assert gc.get_freeze_count() >= len(held)
    assert gc.get_threshold() == (5_000, middle, oldest)
    # A cycle made after startup is garbage the collector still frees.
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    del a, b
    gc.collect()
    assert alive() is None


def test_zero_leaves_the_collector_as_cpython_set_it(collector: None) -> None:
    before = gc.get_threshold()
    heap.settle(0)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_a_negative_threshold_is_refused_naming_the_setting(collector: None) -> None:
    with pytest.raises(ValueError, match="OMS_GC_YOUNG_THRESHOLD must be 0 or more"):
        heap.settle(-1)
    assert gc.get_freeze_count() == 0


def test_gc_time_counts_each_generations_collections() -> None:
    spent = heap.GcTime().install()
    try:
        for _ in range(3):
            gc.collect()
        families = {f.name: f for f in spent.collect()}
    finally:
        spent.uninstall()
    by_generation = {s.labels["generation"]: s.value for s in families["oms_gc_seconds"].samples}
    assert set(by_generation) == {"0", "1", "2"}
    assert by_generation["2"] > 0
    assert families["oms_gc_frozen_objects"].samples[0].value == gc.get_freeze_count()
