#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make kernel-check: the component in Linux 7.3 (arm64, 16 KiB pages, Rust, debug options and
# sanitizers), end to end:
#
# 1. the page-API series (patches/) is applied with `git am` to a pristine 7.3 tree: each patch
#    must pass `checkpatch.pl --strict` with 0 errors and 0 warnings, and the kernel must build
#    after each one, warning-free in the files the series touches, with clippy (CLIPPY=1); then
#    `make rustdoc` must not warn about them either;
# 2. the driver (drivers/gpu/drm/asahi) is built in, rustfmt- and clippy-clean;
# 3. QEMU boots it with the built-in KUnit suites (ours, and the kernel crate's doctests, the
#    series' included); kunit.py parses their KTAP output, and the run fails on any failed or
#    crashed test, on fewer tests than KUNIT_MIN (the README's figure), and on any report of
#    lockdep, KFENCE, kmemleak, the page-allocator and VM debug checks, or any oops or WARN.
#
# Step 1 runs again only when patches/ changed; the rest is incremental.
# make kernel-check then runs scripts/kernel-check-kasan.sh: the same, built with clang and KASAN.
set -euo pipefail
. "$(dirname "$0")/kernel-env.sh"
. "$(dirname "$0")/kernel-lib.sh"

# The KUnit test count the README states: fewer means tests went missing.
KUNIT_MIN=${KUNIT_MIN:-$(sed -n 's/.*KUnit: \([0-9]*\) tests.*/\1/p' "$src/README.md" | head -n1)}
start=$(date +%s)

install_tools
fetch_tree

# 1. The series, on pristine 7.3.
stamp=$(cat $(series_patches) | sha256sum | cut -c1-16)
if [ "$(cat "$cache/series.stamp" 2>/dev/null)" != "$stamp" ]; then
	log "applying patches/ to pristine Linux 7.3: checkpatch --strict, then a build, after each"
	git -C "$tree" am --abort >/dev/null 2>&1 || true
	git -C "$tree" reset -q --hard pristine
	wire_kconfig
	unwire_driver
	configure
	for p in $(series_patches); do
		name=$(basename "$p")
		cp=$( (cd "$tree" && perl scripts/checkpatch.pl --strict --color=never "$p") 2>&1 || true)
		if ! grep -q '^total: 0 errors, 0 warnings' <<<"$cp"; then
			printf '%s\n' "$cp"
			log "$name: checkpatch --strict is not clean"
			exit 1
		fi
		log "$name: $(grep '^total:' <<<"$cp")"
		GIT_COMMITTER_NAME=kernel-check GIT_COMMITTER_EMAIL=kernel-check@localhost \
			git -C "$tree" am -q "$p"
		build_clean $(git -C "$tree" diff --name-only HEAD~1 HEAD)
		log "$name: builds with CLIPPY=1, no warning in its files"
	done
	touched=$(git -C "$tree" diff --name-only pristine HEAD)
	rustfmt --edition 2021 --config-path "$tree/.rustfmt.toml" --check \
		$(for f in $touched; do case $f in *.rs) echo "$tree/$f" ;; esac; done)
	make -s "${K[@]}" rustdoc >"$cache/rustdoc.log" 2>&1 || { cat "$cache/rustdoc.log"; exit 1; }
	for f in $touched; do
		if grep -q -- "$f" "$cache/rustdoc.log"; then
			cat "$cache/rustdoc.log"
			log "make rustdoc warns about $f"
			exit 1
		fi
	done
	log "series: rustfmt clean, make rustdoc clean in its files"
	echo "$stamp" >"$cache/series.stamp"
fi

# 2. The driver.
sync_driver
log "building the kernel with the driver (CLIPPY=1)"
build_clean drivers/gpu/drm/asahi
built=$(date +%s)

# 3. Boot QEMU, check KUnit, the uAPI session, the fuzzing and the console.
fail=0
boot_and_check 'lockdep, DEBUG_ATOMIC_SLEEP, KFENCE, kmemleak, DEBUG_PAGEALLOC, DEBUG_VM' \
	'Lock dependency validator' 'kfence: initialized' \
	'kmemleak: Kernel memory leak detector initialized'
log "build $((built - start)) s, boot and tests $((booted - built)) s"
[ $fail = 0 ] || exit 1
log "OK"
