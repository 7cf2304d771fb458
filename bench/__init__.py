"""`make bench`: the benchmark suite (suite: orchestration,
measures, report) and the loader benchmark (loader). Not shipped in
the package; it measures streamapp from outside, as a user would."""
