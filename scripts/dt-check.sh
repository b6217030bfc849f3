#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make dt-check: validate the device-tree binding and its examples with the device-tree
# project's own tools (dtschema from PyPI, dtc), as `make dt_binding_check` does in the kernel:
# the schema against the meta-schema, the schema's examples and our example boards against the
# schema. Also checks that the committed example DTB (what `make run` boots) is the DTS compiled.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
log() { printf 'dt-check: %s\n' "$*"; }

command -v dtc >/dev/null || {
	log "installing device-tree-compiler"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq device-tree-compiler >/dev/null
}
command -v dt-validate >/dev/null || {
	log "installing dtschema"
	pip install -q dtschema
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # command..., fails on any output
	local out
	out=$("$@" 2>&1) || fail=1
	if [ -n "$out" ]; then
		printf '%s\n' "$out"
		fail=1
	fi
}

schemas=(dt-bindings/*/*.yaml)
for s in "${schemas[@]}"; do
	log "meta-schema: $s"
	check dt-doc-validate -u dt-bindings "$s"
done
dt-mk-schema -j -u dt-bindings >"$tmp/processed.json"
for s in "${schemas[@]}"; do
	name=$(basename "$s" .yaml)
	dt-extract-example "$s" >"$tmp/$name.example.dts"
	check dtc -q -I dts -O dtb -o "$tmp/$name.example.dtb" "$tmp/$name.example.dts"
	log "examples of $s"
	check dt-validate -s "$tmp/processed.json" "$tmp/$name.example.dtb"
done
for d in dt-bindings/examples/*.dts; do
	log "board: $d"
	check dtc -q -I dts -O dtb -o "$tmp/board.dtb" "$d"
	check dt-validate -s "$tmp/processed.json" "$tmp/board.dtb"
	if ! cmp -s "$tmp/board.dtb" "${d%.dts}.dtb"; then
		log "${d%.dts}.dtb is not $d compiled: run dtc -I dts -O dtb -o ${d%.dts}.dtb $d"
		fail=1
	fi
done
# The GPU node and regions `make kernel-check` adds to QEMU's `virt` tree, under a root of QEMU's
# cells (QEMU's own nodes are not ours to validate), and merged into QEMU's tree where QEMU is.
d=dt-bindings/examples/qemu-virt-uat.dtsi
log "board: $d (in a root of QEMU's virt machine)"
{
	printf '/dts-v1/;\n\n/ {\n\t#address-cells = <2>;\n\t#size-cells = <2>;\n'
	printf '\tcompatible = "linux,dummy-virt";\n\tmodel = "QEMU virt";\n};\n\n'
	cat "$d"
} >"$tmp/qemu.dts"
check dtc -q -I dts -O dtb -o "$tmp/qemu.dtb" "$tmp/qemu.dts"
check dt-validate -s "$tmp/processed.json" "$tmp/qemu.dtb"
if command -v qemu-system-aarch64 >/dev/null; then
	qemu-system-aarch64 -M virt -cpu max -m 512 -nographic -machine dumpdtb="$tmp/virt.dtb" \
		>/dev/null 2>&1
	dtc -q -I dtb -O dts -o "$tmp/virt.dts" "$tmp/virt.dtb"
	cat "$tmp/virt.dts" "$d" >"$tmp/merged.dts"
	check dtc -q -I dts -O dtb -o "$tmp/merged.dtb" "$tmp/merged.dts"
	# Only what concerns our nodes: QEMU's nodes have properties our schemas do not describe.
	out=$(dt-validate -s "$tmp/processed.json" "$tmp/merged.dtb" 2>&1 |
		grep -E 'gpu@|mailbox@|uat-|carveout@|reserved-memory' || true)
	if [ -n "$out" ]; then
		printf '%s\n' "$out"
		fail=1
	fi
	log "board: $d merged into QEMU's virt tree"
fi
if [ $fail -ne 0 ]; then
	log "FAILED"
	exit 1
fi
log "ok: ${#schemas[@]} binding(s), their examples and the example boards are valid"
