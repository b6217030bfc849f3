#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make patches: writes the page-API series as `git format-patch` files in patches/, with the
# cover letter of patches/cover-letter.txt (first line: subject; the rest: body).
#
# The series is edited as commits on branch `uat-page-api` of a git worktree of the pristine
# 7.3 tree ($UAT_KERNEL_CACHE/series); on a fresh machine that branch is first made from the
# patches in patches/ (`git am`). Then: edit, commit (`git commit -s`), `make patches`.
set -euo pipefail
. "$(dirname "$0")/kernel-env.sh"

install_tools
fetch_tree
if ! [ -d "$series/.git" ] && ! [ -f "$series/.git" ]; then
	log "creating the series branch in $series from patches/"
	git -C "$tree" worktree prune
	git -C "$tree" branch -f uat-page-api pristine
	git -C "$tree" worktree add -q "$series" uat-page-api
	git -C "$series" am -q $(series_patches)
fi
git -C "$series" diff --quiet HEAD || { log "$series has uncommitted changes"; exit 1; }
desc=$(cat "$src/patches/cover-letter.txt")
git -C "$series" config branch.uat-page-api.description "$desc"
rm -f "$src"/patches/*.patch
git -C "$series" format-patch -q --cover-letter --cover-from-description=subject \
	--subject-prefix=PATCH -o "$src/patches" pristine..uat-page-api
# format-patch dates the cover letter now; date it as its last patch, so that an unchanged series
# writes unchanged files.
last=$(git -C "$series" log -1 --format=%aD uat-page-api)
sed -i "0,/^Date: .*/s//Date: $last/" "$src/patches/0000-cover-letter.patch"
ls "$src/patches"
