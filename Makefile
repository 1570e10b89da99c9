# Two entry points for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# Six workers on two cores: most of an end-to-end test is waiting on real processes.
# A file's tests share a worker (module fleets are set up once); files go out slowest
# first, in our order (tests/conftest.py), not xdist's.
PYTEST_ARGS ?= -n 6 --dist loadfile --no-loadscope-reorder

.PHONY: setup sync lint test demo bench bench-judge bench-fleet bench-control

setup:
	@./scripts/setup.sh

# Bytecode compiled once here: PYTHONDONTWRITEBYTECODE=1 (set on these machines) would
# otherwise make every process compile every module again, over a second of CPU for each
# `conveyor server` a test starts.
sync: setup
	@$(UV) sync --frozen --all-extras --quiet --compile-bytecode
	@$(UV) run --frozen python -m compileall -q -j 0 src tests bench testbed > /dev/null

lint: sync
	$(UV) run --frozen ruff check src tests bench testbed
	$(UV) run --frozen ruff format --check src tests bench testbed
	$(UV) run --frozen mypy src
	@# the package supports 3.11-3.13: type-checked for the newest too
	$(UV) run --frozen mypy --python-version 3.13 src

test: lint
	@# pytest exits 5 when it collected no test: that is not a failure of the suite.
	$(UV) run --frozen pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

demo: sync
	$(UV) run --frozen conveyor demo

bench: sync
	$(UV) run --frozen python bench/pipeline_overhead.py

# minutes on one core: the canary judge against Flagger- and Kayenta-style judges, one
# step (bench/judge.py), then whole deployments with their watch window (judge_deploy.py)
bench-judge: sync
	$(UV) run --frozen python bench/judge.py
	$(UV) run --frozen python -m bench.judge_deploy

# minutes, 51 agents with their routers and ~6 GiB: apart from `bench` (HOSTS=10 is quicker)
HOSTS ?= 50
bench-fleet: sync
	$(UV) run --frozen python bench/fleet_rolling.py --hosts $(HOSTS)

# a minute or two: 200 readers, 50 long-polling agents and a deployment against one server
bench-control: sync
	$(UV) run --frozen python bench/control_plane.py
