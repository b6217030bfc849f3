#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make kernel-check: build this tree's rust/ and drivers/ inside Linux 6.12 (arm64, 16 KiB pages,
# Rust), boot it in QEMU and require the self-test summary "asahi_uat: N passed, 0 failed".
#
# The kernel tree and its build live in a cache folder outside the clone
# ($UAT_KERNEL_CACHE, default ~/.cache/asahi-uat), so later runs are incremental.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cache=${UAT_KERNEL_CACHE:-$HOME/.cache/asahi-uat}
tree=$cache/linux-6.12
out=$tree/build
bindgen=${BINDGEN:-$HOME/.cargo/bin/bindgen}
start=$(date +%s)

log() { printf 'kernel-check: %s\n' "$*"; }

# 1. Tools (Debian packages, bindgen from crates.io), only what is missing.
pkgs=()
[ -f /usr/src/linux-source-6.12.tar.xz ] || pkgs+=(linux-source-6.12)
[ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src ] || pkgs+=(rustc-web rust-web-src)
[ -x /usr/bin/clippy-driver ] || pkgs+=(rust-web-clippy)
command -v aarch64-linux-gnu-gcc >/dev/null || pkgs+=(gcc-aarch64-linux-gnu)
command -v qemu-system-aarch64 >/dev/null || pkgs+=(qemu-system-arm)
for p in flex bison bc cpio; do command -v $p >/dev/null || pkgs+=($p); done
for p in libclang-dev libelf-dev libssl-dev; do dpkg -s $p >/dev/null 2>&1 || pkgs+=($p); done
if [ ${#pkgs[@]} -gt 0 ]; then
	log "installing ${pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if ! [ -x "$bindgen" ]; then
	log "installing bindgen-cli 0.71.1"
	cargo install -q bindgen-cli --version 0.71.1 --locked
fi

# 2. The kernel tree.
if ! [ -f "$tree/Makefile" ]; then
	log "unpacking Linux 6.12 into $tree"
	mkdir -p "$cache"
	rm -rf "$cache/linux-source-6.12"
	tar -C "$cache" -xf /usr/src/linux-source-6.12.tar.xz
	mv "$cache/linux-source-6.12" "$tree"
fi

# 3. Overlay: copy files that changed (keeps the build incremental), wire in the directory.
overlay() {
	local from=$1 to=$2
	mkdir -p "$(dirname "$to")"
	cmp -s "$from" "$to" || cp "$from" "$to"
}
for f in rust/kernel/delay.rs rust/kernel/memremap.rs rust/kernel/owned.rs rust/kernel/page.rs \
	rust/helpers/page.c rust/bindings/bindings_helper.h; do
	overlay "$src/$f" "$tree/$f"
done
for f in "$src"/drivers/gpu/drm/asahi/*; do
	overlay "$f" "$tree/drivers/gpu/drm/asahi/$(basename "$f")"
done
# Our new kernel-crate modules, where rustfmt's ordering of lib.rs wants them.
lib=$tree/rust/kernel/lib.rs
grep -q '^pub mod delay;' "$lib" || sed -i 's/^pub mod device;/pub mod delay;\npub mod device;/' "$lib"
grep -q '^pub mod memremap;' "$lib" || sed -i 's/^pub mod list;/pub mod list;\npub mod memremap;/' "$lib"
grep -q '^pub mod owned;' "$lib" || sed -i 's/^pub mod page;/pub mod owned;\npub mod page;/' "$lib"
# The Kconfig goes inside drivers/gpu/drm/Kconfig's `if DRM` block, after nouveau's.
drmk=$tree/drivers/gpu/drm/Kconfig
if ! grep -A1 'drm/nouveau/Kconfig' "$drmk" | grep -q 'drm/asahi/Kconfig'; then
	sed -i '/drm\/asahi\/Kconfig/d' "$drmk"
	sed -i '/source "drivers\/gpu\/drm\/nouveau\/Kconfig"/a source "drivers/gpu/drm/asahi/Kconfig"' "$drmk"
fi
grep -q 'DRM_ASAHI_UAT' "$tree/drivers/gpu/drm/Makefile" ||
	echo 'obj-$(CONFIG_DRM_ASAHI_UAT) += asahi/' >>"$tree/drivers/gpu/drm/Makefile"

# 4. Configure once, build incrementally.
K=(-C "$tree" O="$out" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- RUSTC=/usr/bin/rustc
	BINDGEN="$bindgen")
if ! grep -q '^CONFIG_DRM_ASAHI_UAT_SELFTEST=y' "$out/.config" 2>/dev/null ||
	! grep -q '^CONFIG_DRM=y' "$out/.config"; then
	log "configuring (tinyconfig + Rust, 16K pages, console, DRM, UAT self-tests)"
	make -s "${K[@]}" tinyconfig
	"$tree/scripts/config" --file "$out/.config" -e ARM64_16K_PAGES -d ARM64_4K_PAGES -e RUST \
		-e PRINTK -e TTY -e SERIAL_AMBA_PL011 -e SERIAL_AMBA_PL011_CONSOLE -e BINFMT_ELF \
		-e PROC_FS -e ARM_AMBA -e OF -e DRM -e DRM_ASAHI_UAT -e DRM_ASAHI_UAT_SELFTEST
	make -s "${K[@]}" olddefconfig
	make -s "${K[@]}" rustavailable
	grep -q '^CONFIG_DRM_ASAHI_UAT_SELFTEST=y' "$out/.config" && grep -q '^CONFIG_DRM=y' "$out/.config" ||
		{ log "the UAT options did not stick in .config"; exit 1; }
fi
log "building"
make -s -j"$(nproc)" "${K[@]}" Image
# The kernel's own Rust checks on our files: rustfmt and a clippy build of the module.
make -s "${K[@]}" rustfmtcheck
rm -f "$out/drivers/gpu/drm/asahi/asahi_uat.o"
make -s -j"$(nproc)" "${K[@]}" CLIPPY=1 CLIPPY_DRIVER=/usr/bin/clippy-driver drivers/gpu/drm/asahi/asahi_uat.o 2>&1 | tee "$cache/clippy.log"
if grep -q 'warning\|error' "$cache/clippy.log"; then
	log "clippy reported problems"
	exit 1
fi
make -s -j"$(nproc)" "${K[@]}" Image
built=$(date +%s)

# 5. Boot and read the summary. `mem=496M` of the 512 MiB leaves 0x5f000000.. out of System RAM:
# the self-tests use it as the reserved-memory carve-out (see asahi_uat.rs).
log "booting in QEMU"
console=$cache/console.log
timeout 120 qemu-system-aarch64 -M virt -cpu max -m 512 -kernel "$out/arch/arm64/boot/Image" \
	-nographic -append "console=ttyAMA0 panic=-1 mem=496M" -no-reboot </dev/null >"$console" 2>&1 || true
grep 'asahi_uat' "$console" || true
summary=$(grep -o 'asahi_uat: [0-9]* passed, [0-9]* failed' "$console" | tail -n1 || true)
if [ -z "$summary" ]; then
	log "no self-test summary on the console (see $console)"
	exit 1
fi
log "build $((built - start)) s, boot $(($(date +%s) - built)) s"
case "$summary" in
*" 0 failed") log "$summary" ;;
*) log "FAILED: $summary"; exit 1 ;;
esac
