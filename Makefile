# kmsg-forwarder: every target installs what it needs itself (fresh machine friendly).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test lint bench bench-core install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the forwarder on this machine's /dev/kmsg, JSON lines on stdout.
run: $(STAMP)
	$(BIN)/kmsg-forwarder run $(ARGS)

## system-deps: Debian packages the tests use (iptables for kernel-made records, getcap, and
## e2fsprogs/mount/util-linux for the real-kernel reports: mkfs.ext4, debugfs, losetup, fsfreeze).
system-deps:
	@command -v iptables >/dev/null 2>&1 || { \
	  echo "installing iptables (Debian package) for the kernel LOG-rule tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables) >/dev/null; }
	@command -v getcap >/dev/null 2>&1 || { \
	  echo "installing libcap2-bin (Debian package) for the image's file-capability test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcap2-bin) >/dev/null; }
	@{ command -v mkfs.ext4 && command -v debugfs; } >/dev/null 2>&1 || { \
	  echo "installing e2fsprogs (Debian package) for the real-kernel ext4 tests (mkfs.ext4, debugfs)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs) >/dev/null; }
	@{ command -v losetup && command -v mount && command -v umount; } >/dev/null 2>&1 || { \
	  echo "installing mount (Debian package) for the real-kernel loop-device tests (losetup)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mount) >/dev/null; }
	@command -v fsfreeze >/dev/null 2>&1 || { \
	  echo "installing util-linux (Debian package) for the real-kernel hung-task test (fsfreeze)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux) >/dev/null; }
	@$(MAKE) --no-print-directory -s helm-lib

## helm-lib: Helm's engine for the chart tests (its wheel declares Python >= 3.12 but works on 3.11;
## cffi is installed with its own dependencies, pycparser among them).
helm-lib: $(STAMP)
	@$(BIN)/python -c 'import helm_sdkpy' 2>/dev/null || { \
	  $(BIN)/pip install --quiet cffi && \
	  $(BIN)/pip install --quiet --no-deps --ignore-requires-python helm-sdkpy; }

lint: $(STAMP)
	$(BIN)/ruff check forwarder tests bench
	$(BIN)/ruff format --check forwarder tests bench
	$(BIN)/mypy forwarder

test: $(STAMP) system-deps lint
	$(BIN)/pytest --cov --cov-report=term:skip-covered $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/capture_bench.py

## bench-core: issue 8's targets in one table (ARGS="--rows replay,idle --records 200000" to narrow).
bench-core: $(STAMP)
	$(BIN)/python bench/core_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
