# SPDX-License-Identifier: GPL-2.0
#
# Sourced by the two stages of make kernel-check (scripts/kernel-check.sh, gcc, and
# scripts/kernel-check-kasan.sh, clang with KASAN), after kernel-env.sh: wiring the driver into
# the tree, configuring, building, and the boot in QEMU with its checks. They use kernel-env.sh's
# $src, $cache, $tree, $out and K, and the caller's OPTIONS (and OFF, options to turn off).

# The configuration: tinyconfig plus what the component, KUnit and the sanitizers need.
OPTIONS=(ARM64_16K_PAGES RUST PRINTK TTY SERIAL_AMBA_PL011 SERIAL_AMBA_PL011_CONSOLE BINFMT_ELF
	PROC_FS SYSFS DEVTMPFS BLK_DEV_INITRD ARM_AMBA OF SHMEM DEBUG_FS DRM
	KUNIT KUNIT_DEFAULT_ENABLED RUST_KERNEL_DOCTESTS DRM_ASAHI DRM_ASAHI_KUNIT_TEST
	DRM_ASAHI_FW_STANDIN RUST_DRM_GPUVM RUST_DRM_GEM_SHMEM_HELPER
	DEBUG_KERNEL PROVE_LOCKING DEBUG_ATOMIC_SLEEP KFENCE DEBUG_KMEMLEAK DEBUG_PAGEALLOC
	DEBUG_PAGEALLOC_ENABLE_DEFAULT DEBUG_VM PANIC_ON_OOPS KALLSYMS
	FAULT_INJECTION FAILSLAB FAIL_PAGE_ALLOC FAULT_INJECTION_DEBUG_FS CGROUPS MEMCG
	MEMFD_CREATE UDMABUF)
OFF=(ARM64_4K_PAGES)

wire_kconfig() {
	local drmk=$tree/drivers/gpu/drm/Kconfig
	mkdir -p "$tree/drivers/gpu/drm/asahi"
	cmp -s "$src/drivers/gpu/drm/asahi/Kconfig" "$tree/drivers/gpu/drm/asahi/Kconfig" ||
		cp "$src/drivers/gpu/drm/asahi/Kconfig" "$tree/drivers/gpu/drm/asahi/Kconfig"
	grep -q 'drm/asahi/Kconfig' "$drmk" ||
		sed -i '/source "drivers\/gpu\/drm\/tyr\/Kconfig"/a source "drivers/gpu/drm/asahi/Kconfig"' "$drmk"
}
drm_make=$tree/drivers/gpu/drm/Makefile
wire_driver() {
	grep -q 'CONFIG_DRM_ASAHI)' "$drm_make" ||
		sed -i '/^obj-$(CONFIG_DRM_TYR)/a obj-$(CONFIG_DRM_ASAHI) += asahi/' "$drm_make"
}
unwire_driver() {
	sed -i '/CONFIG_DRM_ASAHI/d' "$drm_make"
}
configure() {
	local o missing=0
	for o in "${OPTIONS[@]}"; do
		grep -q "^CONFIG_$o=y" "$out/.config" 2>/dev/null || missing=1
	done
	[ $missing = 0 ] && return
	log "configuring: tinyconfig + ${OPTIONS[*]}"
	make -s "${K[@]}" rustavailable # Rust must be available before configuring, or RUST drops out
	make -s "${K[@]}" tinyconfig
	"$tree/scripts/config" --file "$out/.config" $(printf -- '-d %s ' "${OFF[@]}") \
		$(printf -- '-e %s ' "${OPTIONS[@]}")
	make -s "${K[@]}" olddefconfig
	for o in "${OPTIONS[@]}"; do
		grep -q "^CONFIG_$o=y" "$out/.config" || { log "CONFIG_$o did not stick"; exit 1; }
	done
}
# Builds the kernel with clippy; fails on any warning or error that names one of the files
# given (a pristine 7.3 has warnings of its own, which are not ours to fix).
build_clean() {
	local blog=$cache/build.log f bad=0
	if ! make -s -j"$(nproc)" "${K[@]}" CLIPPY=1 Image >"$blog" 2>&1; then
		cat "$blog"
		log "build failed"
		exit 1
	fi
	for f in "$@"; do
		if grep -q -- "$f" "$blog"; then
			bad=1
		fi
	done
	if [ $bad = 1 ]; then
		cat "$blog"
		log "warnings in our files: $*"
		exit 1
	fi
}
# The driver: copy the files that changed (keeps the build incremental), wire it in, check the
# format.
sync_driver() {
	wire_kconfig
	configure
	local from=$src/drivers/gpu/drm/asahi to=$tree/drivers/gpu/drm/asahi
	[ -d "$from" ] && [ -d "$to" ] || { log "no driver directory"; exit 1; }
	# Subdirectories hold the submodules of a module (pgtable/).
	(cd "$from" && find . -type f -print0) | while IFS= read -r -d '' f; do
		t=$to/${f#./}
		mkdir -p "${t%/*}"
		cmp -s "$from/$f" "$t" || cp "$from/$f" "$t"
	done
	(cd "$to" && find . -type f -print0) | while IFS= read -r -d '' f; do
		[ -e "$from/$f" ] || rm -f "$to/$f"
	done
	find "$to" -mindepth 1 -type d -empty -delete
	wire_driver
	# rustfmt follows the modules from the crate root into the subdirectories.
	rustfmt --edition 2021 --config-path "$tree/.rustfmt.toml" --check "$to"/*.rs
}

# The trace replay's files (tools/qemu/replay.c) in $1: the golden traces of the simulator's tests
# and REPLAY_RANDOM (22) random traces of REPLAY_OPS (1400) operations each, with the simulator's
# results and maps (every REPLAY_MAPS_EVERY (50) operations) for each (`uat-sim --out`), and
# `list`; `initramfs.replay` lists them for the
# initramfs. Sets `replay_want`, the line the client must print.
replay_data() {
	local dir=$1 t name ops=0 n=0 sim=$src/target/release/uat-sim
	rm -rf "$dir" && mkdir -p "$dir"
	(cd "$src" && cargo build --release -q -p uat-sim)
	for t in "$src"/tools/uat-sim/tests/traces/*.jsonl; do
		cp "$t" "$dir/"
	done
	for ((seed = 1; seed <= ${REPLAY_RANDOM:-22}; seed++)); do
		"$sim" --random "${REPLAY_OPS:-1400}" --seed $seed --emit-trace "$dir/random-$seed.jsonl" \
			>/dev/null
	done
	: >"$dir/list"
	printf 'dir /replay 0755 0 0\n' >"$dir/../initramfs.replay"
	for t in "$dir"/*.jsonl; do
		name=$(basename "$t" .jsonl)
		"$sim" "$t" --out "$dir/out" --maps-every "${REPLAY_MAPS_EVERY:-50}" >/dev/null
		mv "$dir/out/results.jsonl" "$dir/$name.expected"
		mv "$dir/out/maps.txt" "$dir/$name.maps"
		echo "$name ${REPLAY_MAPS_EVERY:-50}" >>"$dir/list"
		ops=$((ops + $(wc -l <"$dir/$name.expected")))
		n=$((n + 1))
		for f in jsonl expected maps; do
			printf 'file /replay/%s.%s %s 0644 0 0\n' "$name" $f "$dir/$name.$f" \
				>>"$dir/../initramfs.replay"
		done
	done
	rm -rf "$dir/out"
	printf 'file /replay/list %s 0644 0 0\n' "$dir/list" >>"$dir/../initramfs.replay"
	replay_want="uapi replay: $n traces, $ops ops, kernel == simulator"
}

# Boots QEMU's virt machine with the carve-out of dt-bindings/examples/qemu-virt-uat.dtsi and an
# initramfs whose /init (tools/qemu/init.c) runs, after the built-in KUnit suites, the uAPI
# session, the trace replay, the ioctl fuzzing and the kmemleak scan, then powers off; then
# checks the console.
# $1: the checks' names for the closing line; the rest: banners that must be on the console
# (the sanitizers were there). Sets `fail` to 1 on any failure, and `booted` (the end time).
# QEMU_MEM: the guest's RAM in MiB (512); QEMU_SMP: its CPUs (2, so that the fuzzing's callers
# run at once in the kernel; the console must say they all came up). UAT_FUZZ_SECONDS (10) and
# UAT_FUZZ_SEED (0x5eed): the ioctl fuzzing's length and seed (on the kernel's command line,
# which hands them to /init).
boot_and_check() {
	local what=$1
	shift
	local smp=${QEMU_SMP:-2} mem=${QEMU_MEM:-512}
	local q=(qemu-system-aarch64 -M virt -cpu max -smp "$smp" -m "$mem" -nographic)
	local boot=$cache/boot console=$cache/console.log kunit summary total ours uapi fuzz banner
	# The machine's own device tree names its CPUs and memory: one for each -smp and -m.
	local virt=$boot/virt-${smp}cpu-${mem}M.dts
	mkdir -p "$boot"
	[ -f "$virt" ] || {
		"${q[@]}" -machine dumpdtb="$boot/virt.dtb" >/dev/null 2>&1
		dtc -q -I dtb -O dts -o "$virt.tmp" "$boot/virt.dtb" && mv "$virt.tmp" "$virt"
	}
	cat "$virt" "$src/dt-bindings/examples/qemu-virt-uat.dtsi" >"$boot/board.dts"
	dtc -q -I dts -O dtb -o "$boot/board.dtb" "$boot/board.dts"
	[ -f "$out/usr/include/drm/asahi_drm.h" ] || make -s "${K[@]}" headers
	aarch64-linux-gnu-gcc -static -O2 -Wall -Werror -isystem "$out/usr/include" -o "$boot/init" \
		"$src/tools/qemu/init.c" "$src/tools/qemu/uapi.c" "$src/tools/qemu/memcg.c" \
		"$src/tools/qemu/fuzz.c" "$src/tools/qemu/replay.c"
	replay_data "$boot/replay"
	[ -x "$out/usr/gen_init_cpio" ] || make -s "${K[@]}" usr/gen_init_cpio
	cat >"$boot/initramfs.list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
dir /proc 0755 0 0
file /init $boot/init 0755 0 0
LIST
	cat "$boot/initramfs.replay" >>"$boot/initramfs.list"
	"$out/usr/gen_init_cpio" "$boot/initramfs.list" >"$boot/initramfs.cpio"
	local fuzz_secs=${UAT_FUZZ_SECONDS:-10} fuzz_seed=${UAT_FUZZ_SEED:-0x5eed}
	# Decimal without leading zeros (C's strtoull would read those as octal), or hexadecimal.
	if ! [[ $fuzz_secs =~ ^(0|[1-9][0-9]{0,4})$ && $fuzz_seed =~ ^(0x[0-9a-fA-F]{1,16}|0|[1-9][0-9]{0,18})$ ]] ||
		((fuzz_secs > 86400)); then
		log "UAT_FUZZ_SECONDS must be 0 to 86400 seconds, UAT_FUZZ_SEED a decimal or 0x number"
		return 1
	fi
	log "booting in QEMU (ioctl fuzzing: $fuzz_secs s from seed $fuzz_seed)"
	# The fuzzing waits a minute past its end for a caller stuck in the kernel.
	timeout $((660 + fuzz_secs)) "${q[@]}" -kernel "$out/arch/arm64/boot/Image" \
		-dtb "$boot/board.dtb" -initrd "$boot/initramfs.cpio" -no-reboot \
		-append "console=ttyAMA0 panic=-1 kfence.sample_interval=1 UAT_FUZZ_SECONDS=$fuzz_secs UAT_FUZZ_SEED=$fuzz_seed" \
		</dev/null >"$console" 2>&1 || true
	booted=$(date +%s)

	grep -E 'asahi_uat|# (Totals|asahi)' "$console" | grep -v '^\s*ok ' || true
	fail=${fail:-0}
	# What the doctests print themselves is not KTAP: the workqueue doctest's work item prints
	# when it runs, which can be between two suites, where kunit.py then loses the suite count.
	grep -v '^rust_doctests_kernel: ' "$console" >"$cache/ktap.log" || true
	# (kunit.py changes to the tree's root: absolute paths.)
	kunit=$(python3 "$tree/tools/testing/kunit/kunit.py" parse --json="$cache/kunit.json" \
		"$cache/ktap.log" 2>&1) || fail=1
	summary=$(grep -E 'Testing complete|Ran [0-9]+ tests' <<<"$kunit" | tail -n1 |
		sed 's/\x1b\[[0-9;]*m//g; s/^\[[0-9:]*\] //') || true
	if [ $fail = 1 ] || [ -z "$summary" ]; then
		printf '%s\n' "$kunit" | grep -E 'FAILED|CRASHED|ERROR|\[FAILED\]|error' || true
		log "KUnit: failures, crashes or no results (see $console)"
		fail=1
	fi
	total=$(sed -n 's/.*Ran \([0-9]*\) tests.*/\1/p' <<<"$summary") || true
	log "KUnit: $summary"
	ours=$(python3 - "$cache/kunit.json" <<'PY'
# Our suites, and the doctests of the files the series touches, with their pass counts.
import json, sys
counts = {}
def walk(group):
    for sub in group.get("sub_groups") or []:
        walk(sub)
    for case in group.get("test_cases") or []:
        name = group["name"]
        if name == "rust_doctests_kernel":
            for f in ("page_rs", "io_mem_rs"):
                if f"_kernel_{f}_" in case["name"]:
                    name = f"rust_doctests_kernel ({f.replace('_rs', '.rs')})"
        n, p = counts.get(name, (0, 0))
        counts[name] = (n + 1, p + (case["status"] == "PASS"))
walk(json.load(open(sys.argv[1])))
for name, (n, p) in sorted(counts.items()):
    if name.startswith("asahi_uat") or "(" in name:
        print(f"{name}: {p}/{n} passed")
PY
	) || true
	printf '%s\n' "$ours" | while read -r line; do log "KUnit suite $line"; done
	if [ -n "$KUNIT_MIN" ] && { [ -z "$total" ] || [ "$total" -lt "$KUNIT_MIN" ]; }; then
		log "KUnit ran ${total:-no} tests, the README states $KUNIT_MIN"
		fail=1
	fi
	# The sanitizers and debug checks report on the console; first make sure they were there.
	for banner in "$@" "smp: Brought up 1 node, $smp CPU"; do
		grep -q "$banner" "$console" || { log "not on the console: $banner"; fail=1; }
	done
	local reports='BUG:|WARNING:|Oops|Unable to handle|Kernel panic|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU|sleeping function called from invalid context|KFENCE:|KASAN:|unreferenced object|kmemleak: [0-9]+ new suspected|page_owner|Bad page|list_add corruption|list_del corruption|refcount_t:'
	if grep -E "$reports" "$console"; then
		log "the kernel reported problems (see $console)"
		fail=1
	else
		log "sanitizers: $what: 0 reports"
	fi
	grep -q 'init: kmemleak report end' "$console" || { log "no kmemleak scan ran"; fail=1; }
	# The uAPI session of tools/qemu/uapi.c.
	grep -E '^uapi: (FAILED|.* passed, .* failed)' "$console" || true
	uapi=$(grep -o '^uapi: [0-9]* passed, [0-9]* failed' "$console" | tail -n1) || true
	case "$uapi" in
	"uapi: "*" passed, 0 failed") log "render node: $uapi" ;;
	*) log "render node: the uAPI session failed or did not run (see $console)"; fail=1 ;;
	esac
	# The memory-cgroup session of tools/qemu/memcg.c.
	grep -E '^memcg: ' "$console" || true
	memcg=$(grep -o '^memcg: [0-9]* passed, [0-9]* failed' "$console" | tail -n1) || true
	case "$memcg" in
	"memcg: "*" passed, 0 failed") log "memory cgroup: ${memcg#memcg: }" ;;
	*) log "memory cgroup: the session failed or did not run (see $console)"; fail=1 ;;
	esac
	# The trace replay of tools/qemu/replay.c: the same traces as the simulator, the same results.
	grep -E '^uapi replay: ' "$console" | head -n 20 || true
	if tr -d '\r' <"$console" | grep -xF "$replay_want" >/dev/null; then
		log "trace replay: ${replay_want#uapi replay: }"
	else
		log "trace replay: expected \"$replay_want\" (see $console)"
		fail=1
	fi
	grep -E '^fuzz: ' "$console" | grep -v ' passed, ' || true
	fuzz=$(grep -o '^fuzz: [0-9]* passed, [0-9]* failed' "$console" | tail -n1) || true
	case "$fuzz" in
	"fuzz: "*" passed, 0 failed") log "ioctl fuzzing: ${fuzz#fuzz: }" ;;
	*) log "ioctl fuzzing: unexpected answers or no run (see $console)"; fail=1 ;;
	esac
}
