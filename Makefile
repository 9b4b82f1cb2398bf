# The two commands of the README's quick start: `make demo` and `make test`.
# Both install whatever is missing (Debian packages, a venv, the package) and are idempotent.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := fuse3 libfuse3-dev pkg-config rsync attr
STAMP := $(VENV)/.installed
# Azurite, the Azure Blob emulator that tests/servers.py starts, installed from npm beside the venv
NODE_DIR := $(VENV)/node
AZURITE := $(NODE_DIR)/node_modules/.bin/azurite-blob

# The Debian packages of $(1) that are not installed yet, installed (apt-get update first).
define apt-install-missing
@missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "installing:$$missing"; \
  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
fi
endef

.PHONY: demo test lint typecheck unit fuse fuzz soak bench crash chaos system-deps venv clean

demo: $(STAMP)
	$(BIN)/python -m mountfs.demo

test: $(STAMP) $(AZURITE) lint typecheck
	$(BIN)/python -m pytest -p no:cacheprovider -ra tests

lint: $(STAMP)
	$(BIN)/ruff check mountfs tests bench
	@same=$$(find tests -name 'test_*.py' -printf '%f\n' | sort | uniq -d); \
	if [ -n "$$same" ]; then echo "test files sharing a name (pytest collects only one): $$same"; exit 1; fi

typecheck: $(STAMP)
	$(BIN)/mypy mountfs

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -ra tests/unit

fuse: $(STAMP) $(AZURITE)
	$(BIN)/python -m pytest -p no:cacheprovider -ra tests/fuse

# The fuzz properties of `make test` (config files, URLs, -o options, key names) with many more inputs,
# fresh ones each run; the figures go to RELIABILITY.md. FUZZ_EXAMPLES=N per property.
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	MOUNTFS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) MOUNTFS_FUZZ_RECORD=1 \
	  $(BIN)/python -m pytest -p no:cacheprovider -ra tests/unit/test_fuzz_config.py

# Minutes of readers and writers on SeaweedFS, fake-gcs-server and Azurite through one mount, every byte
# checked at the end; writes its row of RELIABILITY.md. Not part of `test`. SOAK_S=seconds of load.
SOAK_S ?= 360
soak: $(STAMP) $(AZURITE)
	$(BIN)/python -m tests.reliability.soak --seconds $(SOAK_S)

# Benchmarks against boto3, rclone and s3fs (bench/RESULTS.md), with py-spy samples of the daemon.
# BENCH_ARGS="--quick --repeat 1" for a smoke run.
# Only these two Debian packages: `apt-get install fuse` would remove fuse3.
BENCH_APT_PACKAGES := rclone s3fs
# A venv of its own: the bench's peers (fsspec's s3fs) pin an older boto3 than the daemon's tests use.
BENCH_VENV := .venv-bench
bench: $(STAMP)
	$(call apt-install-missing,$(BENCH_APT_PACKAGES))
	[ -x $(BENCH_VENV)/bin/python ] || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -c 'import mountfs, matplotlib, torch, s3torchconnector, s3fs' 2>/dev/null || \
	  $(BENCH_VENV)/bin/python -m pip install -q -e '.[test,bench]'
	$(BENCH_VENV)/bin/py-spy --version 2>/dev/null | grep -q ' 0.3.14' || \
	  $(BENCH_VENV)/bin/python -m pip install -q py-spy==0.3.14
	$(BENCH_VENV)/bin/python -m bench --profile $(BENCH_ARGS)

system-deps:
	$(call apt-install-missing,$(APT_PACKAGES))
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }

$(STAMP): pyproject.toml | system-deps
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Only when missing (a file target): npm itself comes from Debian when it is not there yet.
$(AZURITE): | $(STAMP)
	@command -v npm >/dev/null 2>&1 || { echo "installing: nodejs npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	npm install --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error azurite@3

venv: $(STAMP) $(AZURITE)

clean:
	rm -rf $(VENV) build *.egg-info

# Reliability suites (not part of `make test`; each writes its rows of RELIABILITY.md).
# kill -9 of the daemon at random points of a write workload, then recovery: CRASH_TRIALS trials.
CRASH_TRIALS ?= 20
crash: $(STAMP)
	CRASH_TRIALS=$(CRASH_TRIALS) $(BIN)/python -m tests.reliability.crash

# Network faults (resets, truncated bodies, 20-40 s stalls, 503 SlowDown, refused connections, endless
# bodies) through tests/faultproxy.py while readers and writers run. CHAOS_ARGS= for the short phases.
CHAOS_ARGS ?= --full
chaos: $(STAMP)
	$(BIN)/python -m tests.reliability.chaos $(CHAOS_ARGS)
