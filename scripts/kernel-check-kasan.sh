#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make kernel-check, second stage: the same kernel (7.3 + patches/ + the driver, the same
# options and debug checks) built with clang and lld 19 (LLVM=-19) and KASAN, generic mode with
# inline checks, and the same boot in QEMU: KUnit, the uAPI session, the ioctl fuzzing, and no
# report of KASAN or of the other checks. Rust with KASAN needs a clang-built kernel
# (init/Kconfig: `depends on !KASAN || CC_IS_CLANG`), hence a second tree and build, kept in
# $UAT_KASAN_CACHE (default ~/.cache/asahi-uat-kasan). The series' own checks (checkpatch, a
# build after each patch, rustdoc) are the first stage's; here it is applied with `git am` when
# patches/ changed, and the rest is incremental.
set -euo pipefail
export UAT_KERNEL_CACHE=${UAT_KASAN_CACHE:-$HOME/.cache/asahi-uat-kasan}
. "$(dirname "$0")/kernel-env.sh"
. "$(dirname "$0")/kernel-lib.sh"

K=(-C "$tree" O="$out" ARCH=arm64 LLVM=-19 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
	CLIPPY_DRIVER=/usr/bin/clippy-driver BINDGEN="$bindgen")
OPTIONS+=(KASAN KASAN_GENERIC KASAN_INLINE)
OFF+=(SLUB_TINY) # tinyconfig's; KASAN depends on !SLUB_TINY
# KASAN takes an eighth of the RAM for its shadow, and more for redzones and its quarantine of
# freed objects: with 512 MiB, the fuzzing's large buffers exhaust it, and the OOM killer has no
# process to kill but init. 1 GiB leaves more than the first stage's 512 MiB do.
QEMU_MEM=1024
KUNIT_MIN=${KUNIT_MIN:-$(sed -n 's/.*KUnit: \([0-9]*\) tests.*/\1/p' "$src/README.md" | head -n1)}
start=$(date +%s)

install_tools
for t in clang-19 ld.lld-19 llvm-ar-19; do
	command -v $t >/dev/null || {
		log "installing clang-19 lld-19 llvm-19"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-19 lld-19 llvm-19 >/dev/null
		break
	}
done
fetch_tree

# 1. The series, when patches/ changed.
stamp=$(cat $(series_patches) | sha256sum | cut -c1-16)
if [ "$(cat "$cache/series.stamp" 2>/dev/null)" != "$stamp" ]; then
	log "applying patches/ to pristine Linux 7.3"
	git -C "$tree" am --abort >/dev/null 2>&1 || true
	git -C "$tree" reset -q --hard pristine
	for p in $(series_patches); do
		GIT_COMMITTER_NAME=kernel-check GIT_COMMITTER_EMAIL=kernel-check@localhost \
			git -C "$tree" am -q "$p"
	done
	echo "$stamp" >"$cache/series.stamp"
fi

# 2. The driver, and the build: no warning of clang's, rustc's or clippy's in the series' files
#    or the driver's.
sync_driver
log "building the kernel with clang 19 and KASAN (CLIPPY=1)"
build_clean $(git -C "$tree" diff --name-only pristine HEAD) drivers/gpu/drm/asahi
built=$(date +%s)

# 3. The same boot and checks as the first stage's, with KASAN's banner.
fail=0
boot_and_check 'KASAN, lockdep, DEBUG_ATOMIC_SLEEP, KFENCE, kmemleak, DEBUG_PAGEALLOC, DEBUG_VM' \
	'KernelAddressSanitizer initialized' 'Lock dependency validator' 'kfence: initialized' \
	'kmemleak: Kernel memory leak detector initialized'
log "build $((built - start)) s, boot and tests $((booted - built)) s"
[ $fail = 0 ] || exit 1
log "OK"
