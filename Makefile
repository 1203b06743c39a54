# xdplab: `make setup` prepares the machine, `make run` measures, `make test` checks.
#
# Any configuration key (config/config.yaml, docs/configuration.md) can be given as it
# is written there:   make run target_pps=20000 duration_s=3
#                     make run target_pps=1000,10000 packet_size=18,1458 repeats=3
#                     make run 'target_pps=[1000, 10000]'      (a list with spaces: quote it)
# make run sends traffic for duration_s=10 unless told otherwise; every other key comes
# from config/config.yaml.  A variable make does not know is refused, never ignored.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 1
# extra key=value pairs appended to --config (later keys win); quote lists with spaces
CONFIG ?=
# extra Snakemake command-line arguments, e.g. SNAKEMAKE_ARGS="-n"
SNAKEMAKE_ARGS ?=
# VERBOSE=1: Snakemake's full output on the terminal (job banners and all), as without
# the workflow profile profiles/default; the full log is in .snakemake/log/ either way
VERBOSE ?=
# extra pytest arguments, e.g. PYTEST_ARGS="-k testbed"
PYTEST_ARGS ?=

# -- the command line, checked before anything runs --------------------------------------

# The configuration keys, read from the schema (top-level properties).
CONFIG_KEYS := $(shell awk '/^properties:/{p=1;next} p&&/^[^ \#]/{p=0} \
	p&&/^  [a-z_]+:[ ]*$$/{sub(/^  /,"");sub(/:.*/,"");print}' workflow/schemas/config.schema.yaml)
MAKE_VARIABLES := CORES CONFIG SNAKEMAKE_ARGS VERBOSE PYTEST_ARGS
GIVEN := $(strip $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
UNKNOWN := $(strip $(filter-out $(CONFIG_KEYS) $(MAKE_VARIABLES),$(GIVEN)))
ifneq ($(UNKNOWN),)
$(error xdplab: make does not know $(foreach v,$(UNKNOWN),'$(v)=$($(v))'); configuration keys: $(CONFIG_KEYS); make variables: $(MAKE_VARIABLES) (docs/configuration.md))
endif

comma := ,
# Commas renamed, so that the patterns below can name a trailing one.
nocomma = $(subst $(comma),:comma:,$(1))
digits = $(strip $(subst 0,,$(subst 1,,$(subst 2,,$(subst 3,,$(subst 4,,$(subst 5,,$(subst 6,,$(subst 7,,$(subst 8,,$(subst 9,,$(1))))))))))))
# A word the shell cut off a list written with spaces: '[1000,', '2000]', '2000,', '2000'.
list_piece = $(or $(findstring [,$(1)),$(findstring ],$(1)),$(filter %:comma:,$(1)),$(if $(call digits,$(1)),,x))
QUOTE_HINT := a list with spaces must be quoted, e.g. make run 'target_pps=[1000, 2000]', or written without spaces: target_pps=1000,2000
SPLIT_GOALS := $(strip $(foreach g,$(MAKECMDGOALS),$(if $(call list_piece,$(call nocomma,$(g))),$(g))))
ifneq ($(SPLIT_GOALS),)
$(error xdplab: '$(firstword $(SPLIT_GOALS))' is not a make target: the shell split a list; $(QUOTE_HINT))
endif
# key=value with unbalanced brackets or a trailing comma: the rest of the list was cut off.
unbalanced = $(if $(findstring [,$(1)),$(if $(findstring ],$(1)),,x),$(findstring ],$(1)))$(filter %:comma:,$(lastword $(1)))
SPLIT_VALUES := $(strip $(foreach k,$(filter $(CONFIG_KEYS),$(GIVEN)),$(if $(call unbalanced,$(call nocomma,$($(k)))),$(k))))
ifneq ($(SPLIT_VALUES),)
$(error xdplab: $(firstword $(SPLIT_VALUES))=$($(firstword $(SPLIT_VALUES))) is cut off: the shell split a list; $(QUOTE_HINT))
endif
# CONFIG goes to the shell as written: without quotes in it, each word must be key=value.
ifeq ($(findstring ',$(CONFIG))$(findstring ",$(CONFIG)),)
SPLIT_CONFIG := $(strip $(foreach w,$(call nocomma,$(CONFIG)),$(if $(findstring =,$(w)),$(if $(call unbalanced,$(w)),$(w)),$(w))))
ifneq ($(SPLIT_CONFIG),)
$(error xdplab: CONFIG holds '$(subst :comma:,$(comma),$(firstword $(SPLIT_CONFIG)))', not key=value: a list with spaces must be quoted inside CONFIG, e.g. CONFIG="'target_pps=[1000, 2000]'", or written without spaces: target_pps=1000,2000)
endif
endif

duration_s ?= 10

# 'key=value' for every key given (and duration_s), quoted for the shell.
shell_quote = '$(subst ','\'',$(1))'
RUN_CONFIG := $(strip $(foreach k,$(CONFIG_KEYS),$(if $(filter command line file override,$(origin $(k))),$(call shell_quote,$(k)=$($(k))))))
RUN_ARGS := $(strip --cores $(CORES) $(if $(VERBOSE),--workflow-profile none) $(SNAKEMAKE_ARGS) --config $(RUN_CONFIG) $(CONFIG))

.PHONY: setup run test bench clean-testbed agent source

setup:
	@bash envs/setup.sh

run: setup source
	@echo "snakemake $(RUN_ARGS)"
	@PATH=$(VENV)/bin:$$PATH $(SNAKEMAKE) $(RUN_ARGS)

test: setup source
	PYTHONPATH=$(CURDIR)/workflow $(PYTHON) -m pytest -v $(PYTEST_ARGS) tests

# Figures, not pass/fail: benchmarks/results/<UTC date>.json and .md (benchmarks/README.md).
bench: setup agent source
	PYTHONPATH=$(CURDIR)/workflow $(PYTHON) benchmarks/run.py

# The DUT agent as one file: the package plus bpf/collector.bpf.c,
# bpf/exceptions.bpf.c and bpf/xdplab.h inside (read with pkgutil, nothing is extracted), and the capture
# checker (standard library) it runs where the captures are written.
AGENT_PYZ := dist/xdplab-agent.pyz
AGENT_SRC := $(wildcard workflow/xdplab/agent/*.py) workflow/xdplab/agent/API.md \
	bpf/collector.bpf.c bpf/exceptions.bpf.c bpf/xdplab.h workflow/xdplab/pcapcheck.py \
	workflow/xdplab/sourcehost/wire.py

agent: $(AGENT_PYZ)

$(AGENT_PYZ): $(AGENT_SRC)
	@rm -rf dist/.agent-build && mkdir -p dist/.agent-build/xdplab/agent/bpf
	@echo '# xdplab: only the DUT agent (and the capture checker it runs) is in this archive' \
		> dist/.agent-build/xdplab/__init__.py
	cp workflow/xdplab/agent/*.py workflow/xdplab/agent/API.md dist/.agent-build/xdplab/agent/
	cp workflow/xdplab/pcapcheck.py dist/.agent-build/xdplab/
	@mkdir -p dist/.agent-build/xdplab/sourcehost && echo '# the payload header (wire.py), shared with the source host' \
		> dist/.agent-build/xdplab/sourcehost/__init__.py
	cp workflow/xdplab/sourcehost/wire.py dist/.agent-build/xdplab/sourcehost/
	cp bpf/collector.bpf.c bpf/exceptions.bpf.c bpf/xdplab.h dist/.agent-build/xdplab/agent/bpf/
	/usr/bin/python3 -m zipapp dist/.agent-build -o $@.tmp -p /usr/bin/python3 \
		-m xdplab.agent.__main__:main -c
	@mv $@.tmp $@ && rm -rf dist/.agent-build
	@echo "built $@ ($$(stat -c %s $@) bytes)"

# The source host's programs as one file, standard library only: the generator (send),
# the pre-flight check (preflight) and the host facts (facts), uploaded over SSH and
# run with the source's python3 (>= 3.8).  The controller rebuilds it when it is
# older than its sources (xdplab.source.source_pyz).
# Compiled modules ride along (.pyc, unchecked: the archive never changes), so that a
# source whose python3 is the same version skips compiling at every start; another
# version ignores them and compiles the sources, as without them.
SOURCE_PYZ := dist/xdplab-source.pyz
SOURCE_SRC := $(wildcard workflow/xdplab/sourcehost/*.py)

source: $(SOURCE_PYZ)

$(SOURCE_PYZ): $(SOURCE_SRC)
	@mkdir -p dist && build=$$(mktemp -d dist/.source-build.XXXXXX) && \
	mkdir -p $$build/xdplab/sourcehost && \
	echo '# xdplab: only the programs of the source host are in this archive' > $$build/xdplab/__init__.py && \
	cp $(SOURCE_SRC) $$build/xdplab/sourcehost/ && \
	/usr/bin/python3 -m compileall -q -b --invalidation-mode unchecked-hash $$build && \
	/usr/bin/python3 -m zipapp $$build -o $$build.pyz -m xdplab.sourcehost.__main__:main -c && \
	mv $$build.pyz $@ && rm -rf $$build && echo "built $@ ($$(stat -c %s $@) bytes)"

clean-testbed:
	PYTHONPATH=$(CURDIR)/workflow $$( [ -x $(PYTHON) ] && echo $(PYTHON) || echo /usr/bin/python3 ) -m xdplab.testbed down
