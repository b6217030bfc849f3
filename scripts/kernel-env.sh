# SPDX-License-Identifier: GPL-2.0
#
# Sourced by the kernel scripts: where the Linux 7.3 tree lives, and how to get it and the tools
# on a fresh machine. Everything is kept in a cache folder outside the clone ($UAT_KERNEL_CACHE,
# default ~/.cache/asahi-uat), so that later runs are incremental.

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${UAT_KERNEL_CACHE:-$HOME/.cache/asahi-uat}
tree=$cache/linux-7.3 # pristine 7.3 (tag `pristine`) + patches/ + the driver, built in $out
out=$tree/build
series=$cache/series # git worktree of $tree on branch uat-page-api: where the series is edited
bindgen=${BINDGEN:-$HOME/.cargo/bin/bindgen}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
K=(-C "$tree" O="$out" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- RUSTC=/usr/bin/rustc
	RUSTDOC=/usr/bin/rustdoc CLIPPY_DRIVER=/usr/bin/clippy-driver BINDGEN="$bindgen")

log() { printf '%s: %s\n' "${0##*/}" "$*"; }

# Debian packages and bindgen, only what is missing. Linux 7.3 needs libclang >= 17 (bookworm's
# default is 14: libclang-19-dev) and exactly bindgen 0.71.1.
install_tools() {
	local pkgs=()
	[ -x /usr/bin/rustc ] && [ -x /usr/bin/rustdoc ] && [ -d /usr/lib/rustlib/src ] ||
		pkgs+=(rustc-web rust-web-src)
	[ -x /usr/bin/clippy-driver ] || pkgs+=(rust-web-clippy)
	command -v aarch64-linux-gnu-gcc >/dev/null || pkgs+=(gcc-aarch64-linux-gnu)
	command -v qemu-system-aarch64 >/dev/null || pkgs+=(qemu-system-arm)
	command -v dtc >/dev/null || pkgs+=(device-tree-compiler)
	command -v python3 >/dev/null || pkgs+=(python3)
	command -v git >/dev/null || pkgs+=(git)
	for p in flex bison bc cpio perl; do command -v $p >/dev/null || pkgs+=($p); done
	for p in libclang-19-dev libelf-dev libssl-dev; do dpkg -s $p >/dev/null 2>&1 || pkgs+=($p); done
	if [ ${#pkgs[@]} -gt 0 ]; then
		log "installing ${pkgs[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
	fi
	if ! [ -x "$bindgen" ]; then
		log "installing bindgen-cli 0.71.1"
		cargo install -q bindgen-cli --version 0.71.1 --locked
	fi
}

# The pristine tree: Debian's linux-source-7.3 (trixie-backports), fetched through a side apt
# configuration that leaves the system's sources alone, committed to git and tagged `pristine`.
fetch_tree() {
	[ -f "$tree/Makefile" ] && git -C "$tree" rev-parse -q --verify pristine >/dev/null && return
	mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial"
	local uri
	uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
	[ -n "$uri" ] || { log "no Debian archive URI in the system's apt sources"; exit 1; }
	echo "deb $uri trixie-backports main" >"$cache/apt/sources.list"
	local side=(-o Dir::Etc::sourcelist="$cache/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
		-o Dir::State::Lists="$cache/apt/lists" -o Dir::Cache="$cache/apt/cache"
		-o APT::Sandbox::User=root)
	if ! ls "$cache"/linux-source-7.3_*_all.deb >/dev/null 2>&1; then
		log "downloading linux-source-7.3"
		apt-get -qq "${side[@]}" update
		(cd "$cache" && apt-get -qq "${side[@]}" download linux-source-7.3)
	fi
	log "unpacking Linux 7.3 into $tree"
	rm -rf "$tree" "$cache/linux-source-7.3"
	dpkg-deb --fsys-tarfile "$cache"/linux-source-7.3_*_all.deb |
		tar -xO ./usr/src/linux-source-7.3.tar.xz | tar -C "$cache" -xJ
	mv "$cache/linux-source-7.3" "$tree"
	# Debian's .gitignore ignores everything (`/*`): add by force, then the build folder stays
	# out of `git status`.
	git -C "$tree" init -q
	git -C "$tree" add -A -f
	git -C "$tree" -c user.name=kernel-check -c user.email=kernel-check@localhost \
		commit -q -m "Linux 7.3 (Debian linux-source-7.3, pristine)"
	git -C "$tree" tag pristine
}

# The series' patches, in order (the cover letter is not a patch).
series_patches() {
	ls "$src"/patches/0*.patch | grep -v '/0000-cover-letter.patch$'
}
