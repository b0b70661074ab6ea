# meshgate — `make run` for the demo, `make test` for everything else (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
# Extra arguments for `make run` (meshgate flags) and `make bench` (bench/run.sh flags).
ARGS ?=

# rustup puts cargo in ~/.cargo/bin, which a non-login shell may not have on PATH.
ifneq ($(wildcard $(HOME)/.cargo/bin/cargo),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif

.PHONY: help deps run build release test fmt lint bench bench-instructions clean

help:
	@echo "make run      build, start a demo upstream on 127.0.0.1:8081 and meshgate (kernel mode) on :10000"
	@echo "make test     install what is needed, build, run all unit and end-to-end tests"
	@echo "make build    debug build of all binaries (meshgate, mg-upstream)"
	@echo "make release  optimised build (target/release/meshgate)"
	@echo "make fmt      cargo fmt"
	@echo "make lint     clippy on every crate and target, warnings are errors"
	@echo "make bench    benchmarks (bench/run.sh; ARGS=\"--quick\" for a short run)"
	@echo "make bench-instructions  instructions per request of the hot paths (bench/callgrind.sh)"
	@echo "make clean    cargo clean"
	@echo "make deps     install system packages only (scripts/install-deps.sh)"

deps:
	scripts/install-deps.sh

run: deps
	scripts/run-demo.sh $(ARGS)

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --release --workspace --bins

# The e2e tests run the built binaries (meshgate, mg-upstream): build them first.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	@if [ -x bench/run.sh ]; then bench/run.sh $(ARGS); \
	else echo "make bench: bench/run.sh does not exist yet (benchmarks are issue 6)" >&2; exit 1; fi

# Callgrind instruction counts (bench/results/instructions.md); ARGS go to bench/callgrind.sh.
bench-instructions:
	bench/callgrind.sh $(ARGS)

clean:
	$(CARGO) clean
