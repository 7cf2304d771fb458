"""The garbage collector, set for a data path that makes many short-lived objects.

The worker and its model process make a few objects per record (Kafka records, frames,
decoded comments, results) and hold tens of thousands that live as long as the process
(Faust, pydantic, torch, the model). With Python's default thresholds (700, 10, 10) a
young-generation collection ran every hundred or two records, and each older one walked the
long-lived objects again: without a model about 5% of the model process's time and 4% of the
worker's went to the collector (BENCHMARKS.md, probes). After start-up, the objects alive then
are frozen (never scanned again) and the youngest generation is collected every 50,000
allocations: few collections, each of short-lived objects only.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
# Older generations as Python's ratios (10, 10) would make them: a middle collection after
# 20 young ones, a full one after 100 middle ones; with the start-up objects frozen, both
# walk only what was made since.
MIDDLE_THRESHOLD, OLD_THRESHOLD = 20, 100


def settle_after_start() -> None:
    """Call once the process has loaded what it keeps (the model, the app), and again after a
    hot reload: frozen objects are never collected, so what was frozen goes back to the
    collector first, and the swapped-out model's reference cycles, if it has any, are freed.
    A full collection: about 300 ms with the demo model loaded (~450,000 objects, this
    machine), once per start or swap."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
