# xdplab: `make setup` prepares the machine, `make run` measures, `make test` checks.
# Override on the command line, e.g.  make run CONFIG="duration_s=60"  or  make run TARGET_PPS=20000
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 1
TARGET_PPS ?= 10000
DURATION_S ?= 10
# extra key=value pairs appended to --config (later keys win)
CONFIG ?=
# extra Snakemake command-line arguments, e.g. SNAKEMAKE_ARGS="-n"
SNAKEMAKE_ARGS ?=
# extra pytest arguments, e.g. PYTEST_ARGS="-k testbed"
PYTEST_ARGS ?=

.PHONY: setup run test bench clean-testbed agent

setup:
	@bash envs/setup.sh

run: setup
	PATH=$(VENV)/bin:$$PATH $(SNAKEMAKE) --cores $(CORES) $(SNAKEMAKE_ARGS) \
		--config target_pps=$(TARGET_PPS) duration_s=$(DURATION_S) $(CONFIG)

test: setup
	PYTHONPATH=$(CURDIR)/workflow $(PYTHON) -m pytest -v $(PYTEST_ARGS) tests

bench: setup
	@set -e; shopt -s nullglob; found=0; \
	for f in benchmarks/bench_*.py; do \
		found=1; echo "== $$f"; \
		PYTHONPATH=$(CURDIR)/workflow $(PYTHON) "$$f"; \
	done; \
	[ $$found -eq 1 ] || echo "no benchmarks/bench_*.py to run"

# The DUT agent as one file: the package plus bpf/collector.bpf.c and
# bpf/xdplab.h inside (read with pkgutil, nothing is extracted).
AGENT_PYZ := dist/xdplab-agent.pyz
AGENT_SRC := $(wildcard workflow/xdplab/agent/*.py) workflow/xdplab/agent/API.md \
	bpf/collector.bpf.c bpf/xdplab.h

agent: $(AGENT_PYZ)

$(AGENT_PYZ): $(AGENT_SRC)
	@rm -rf dist/.agent-build && mkdir -p dist/.agent-build/xdplab/agent/bpf
	@echo '# xdplab: only the DUT agent is in this archive' > dist/.agent-build/xdplab/__init__.py
	cp workflow/xdplab/agent/*.py workflow/xdplab/agent/API.md dist/.agent-build/xdplab/agent/
	cp bpf/collector.bpf.c bpf/xdplab.h dist/.agent-build/xdplab/agent/bpf/
	/usr/bin/python3 -m zipapp dist/.agent-build -o $@.tmp -p /usr/bin/python3 \
		-m xdplab.agent.__main__:main -c
	@mv $@.tmp $@ && rm -rf dist/.agent-build
	@echo "built $@ ($$(stat -c %s $@) bytes)"

clean-testbed:
	PYTHONPATH=$(CURDIR)/workflow $$( [ -x $(PYTHON) ] && echo $(PYTHON) || echo /usr/bin/python3 ) -m xdplab.testbed down
