# SPDX-License-Identifier: GPL-2.0
#
# Host build of the drm/asahi UAT component. `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
CARGO ?= cargo
# Long enough in CI to matter; the seed is fixed (UAT_SEED) so that any failure replays.
UAT_CASES ?= 4000
export UAT_CASES

.PHONY: help run test lint bench kernel-check patches dt-check fuzz

help:
	@echo "make run           the demonstration / simulator on the simulated SoC"
	@echo "make test          rustfmt, clippy -D warnings, and the whole host test suite"
	@echo "make bench         map/unmap benchmark against aarch64-paging and the store floor"
	@echo "make kernel-check  apply patches/ to Linux 7.3, build the driver in, run the KUnit suites in QEMU (gcc, then clang + KASAN)"
	@echo "make patches       write the page-API series (branch uat-page-api of the kernel cache) to patches/"
	@echo "make dt-check      validate the apple,agx binding and the example device trees (dtschema, dtc)"
	@echo "make fuzz          short libFuzzer runs (cargo fuzz, nightly) of the tools' parsers from their corpus"

run:
	$(CARGO) run --release -q -p uat-sim --bin uat-sim

lint:
	$(CARGO) fmt --all --check
	rustfmt --edition 2021 --check drivers/gpu/drm/asahi/*.rs
	$(CARGO) clippy --all-targets --release -q -- -D warnings

test: lint
	mkdir -p target
	$(CARGO) test --profile checked --workspace 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' \
		target/test.log | tee target/test-summary

bench:
	$(CARGO) bench -q -p uat-tests --bench pgtable

kernel-check:
	scripts/kernel-check.sh
	scripts/kernel-check-kasan.sh

patches:
	scripts/make-patches.sh

dt-check:
	scripts/dt-check.sh

fuzz:
	scripts/fuzz-corpus.sh
