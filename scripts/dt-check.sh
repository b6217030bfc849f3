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
if [ $fail -ne 0 ]; then
	log "FAILED"
	exit 1
fi
log "ok: ${#schemas[@]} binding(s), their examples and the example boards are valid"
