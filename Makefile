# One command each on a fresh machine: `make run` (the demo) and `make test` (the suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 9092

.PHONY: install run test lint bench bench-gpu reliability recovery broker worker demo-model clean

install: $(STAMP)

# torch first, pinned: on these machines pip takes the CPU wheel that lies on disk; a range
# would let pip pull a CUDA build of several GB.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/streamapp demo --port $(PORT)

# Two test files at a time (pytest-xdist; a file's tests stay together, in order): the suite
# mostly waits on broker and worker processes. JOBS=1 runs it serially.
JOBS ?= 2
test: install lint
	$(BIN)/python -m pytest -q $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile)

lint: install
	$(BIN)/ruff check streamapp tests bench reliability

# The benchmark suite (not part of `make test`): BENCHMARKS.md and bench/results.json.
# QUICK=1 runs small counts once, to check the suite itself.
bench: install
	$(BIN)/streamapp bench $(if $(QUICK),--quick --runs 1,)

# The GPU run (not part of `make test`; about 6 minutes on one H200): the BERT-base shape alone
# and through 1, 2 and 4 workers sharing the GPU; the GPU section of BENCHMARKS.md and
# bench/results.json. SMOKE=1 runs it on a CPU with a tiny model (tests/test_bench_tools.py).
bench-gpu: install
	$(BIN)/python -m bench.gpu $(if $(SMOKE),--smoke,--report)

# The fault-injection suite (not part of `make test`): RELIABILITY.md, logs in var/reliability.
# About 30 minutes with the defaults; RUNS=, RECORDS=, BACKLOG=, SLOW_RECORDS= make it shorter.
reliability: install
	$(BIN)/streamapp reliability $(if $(RUNS),--runs $(RUNS),) $(if $(RECORDS),--records $(RECORDS),) \
		$(if $(BACKLOG),--backlog $(BACKLOG),) $(if $(SLOW_RECORDS),--slow-records $(SLOW_RECORDS),)

# Kill -9 one of two workers: how long its partitions stay silent (RELIABILITY.md's recovery
# section; about 10 minutes). RUNS= and SESSION_TIMEOUT_S= size it.
recovery: install
	$(BIN)/python -m reliability.recovery --write $(if $(RUNS),--runs $(RUNS),) \
		$(if $(SESSION_TIMEOUT_S),--session-timeout-s $(SESSION_TIMEOUT_S),)

broker: install
	$(BIN)/streamapp broker --port $(PORT)

worker: install
	$(BIN)/streamapp worker

demo-model: install
	$(BIN)/streamapp demo-model --out var/models/demo

clean:
	rm -rf var .pytest_cache
