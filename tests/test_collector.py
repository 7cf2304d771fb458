"""The garbage collector's settings after a process's start (streamapp.collector)."""

from __future__ import annotations

import json
import subprocess
import sys

from streamapp.collector import YOUNG_THRESHOLD


def test_after_start_the_objects_alive_are_frozen_and_young_collections_are_rare() -> None:
    # In a child interpreter: the test process keeps its own collector as it is.
    script = ("import gc, json; from streamapp.collector import settle_after_start; "
              "kept = [object() for _ in range(1000)]; before = gc.get_freeze_count(); "
              "settle_after_start(); "
              "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()]))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True).stdout
    before, frozen, threshold = json.loads(out)
    assert before == 0
    assert frozen >= 1000  # the objects alive at start-up, the list above among them
    assert threshold[0] == YOUNG_THRESHOLD


def test_settling_again_frees_the_reference_cycles_frozen_before() -> None:
    # A swapped-out model with a reference cycle, frozen at start: settling again after the
    # swap (ModelManager.maybe_reload does) must hand it back to the collector.
    script = ("import gc, weakref; from streamapp.collector import settle_after_start\n"
              "class Model: pass\n"
              "old = Model(); old.me = old; ref = weakref.ref(old)\n"
              "settle_after_start(); del old; gc.collect()\n"
              "print(ref() is not None, end=' ')\n"
              "settle_after_start()\n"
              "print(ref() is not None)")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["True", "False"]  # kept while frozen, freed once settled again
