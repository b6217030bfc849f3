// SPDX-License-Identifier: GPL-2.0

//! Writing mappings: `map` of contiguous memory, of one page repeated and of a scatter list,
//! `prealloc` (the tables a later map will need, allocated ahead so that the map cannot fail),
//! and `reprot`, which rewrites the attributes of pages already mapped.
//!
//! A map checks every table it will write (`EEXIST` for an occupied entry, `EIO` for a corrupt
//! one) and allocates every table it lacks before it writes the first descriptor. `reprot`
//! requires every page to be mapped instead, and allocates nothing.

use super::{PageTable, PhysRange, Step, TableNeeds, TableReserve, Tables};
use crate::desc_run::{all_zero, fill, scan_leaves, Entries};
use crate::geometry::{
    Level, VaRange, LEAF_LEVEL, PTES_PER_TABLE, TOP_LEVEL, UAT_PGBIT, UAT_PGMSK, UAT_PGSZ,
};
use crate::occupancy::{Held, Occupancy};
use crate::page_source::{Contiguous, PageSource, Repeat, Scatter};
use crate::pte::{pa_aligned, LeafCheck, Prot, PteTemplate};
use crate::tlb::Gather;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::io::PhysAddr;
use kernel::prelude::*;

impl PageTable {
    /// Allocates what a map needs before it writes anything, `needed` zeroed table pages and the
    /// occupancies of the second-level tables in `mids`, and installs the latter. All or nothing.
    fn alloc_for_map(&mut self, mids: u64, needed: usize) -> Result<TableReserve> {
        let mut reserve = TableReserve::new();
        let needs = TableNeeds {
            pages: needed,
            counts: self.counts_missing(mids),
        };
        reserve.top_up(&self.cfg, needs)?;
        self.install_counts(mids, &mut reserve)?;
        Ok(reserve)
    }

    /// The count arrays that installing counts for the top-level entries in `mask` takes from a
    /// reserve: one for each entry without counts.
    fn counts_missing(&self, mask: u64) -> usize {
        self.occ
            .iter()
            .enumerate()
            .filter(|&(idx, c)| idx < 64 && mask & (1 << idx) != 0 && c.len() != PTES_PER_TABLE)
            .count()
    }

    /// Installs empty occupancies, taken from `reserve`, for every top-level entry in `mask` (whose
    /// second-level table a map is about to create) before anything is written, so that the map
    /// cannot fail later. `EIO`, with nothing installed, if the reserve lacks them: callers
    /// check [`TableReserve::covers`] first.
    fn install_counts(&mut self, mask: u64, reserve: &mut TableReserve) -> Result {
        if reserve.counts.len() < self.counts_missing(mask) {
            return Err(EIO);
        }
        let mut left = mask;
        while left != 0 {
            let idx = left.trailing_zeros() as usize;
            left &= left - 1;
            let Some(c) = self.occ.get_mut(idx) else {
                continue;
            };
            if c.len() == PTES_PER_TABLE {
                c.iter().for_each(Occupancy::clear);
                continue;
            }
            // Counted above: there is one.
            if let Some(counts) = reserve.counts.pop() {
                // INVARIANT: `PTES_PER_TABLE` empty occupancies (`TableReserve`'s invariants),
                // for a second-level table about to be created empty.
                *c = counts;
            }
        }
        Ok(())
    }

    /// Records, for a missing-table step of a map's check walk, the tables to allocate.
    fn note_missing(&self, level: Level, sub: VaRange, needed: &mut usize, mids: &mut u64) {
        *needed += self.tables_needed(level, sub);
        if level == TOP_LEVEL {
            *mids |= 1 << self.cfg.geometry.index(sub.start, TOP_LEVEL);
        }
    }

    /// Number of tables needed below `level` to map `range`, none of which exists.
    fn tables_needed(&self, level: Level, range: VaRange) -> usize {
        let g = self.cfg.geometry;
        (level..LEAF_LEVEL)
            .map(|l| ((range.last >> g.shift(l)) - (range.start >> g.shift(l)) + 1) as usize)
            .sum()
    }

    /// The pages mapped where `sub` meets the leaf table `t`, which holds `o`, checked: `EIO` if
    /// a descriptor there is neither invalid nor a page, or if there are more pages than the
    /// table's count. Only the entries the span of `o` allows are read: a table whose count is
    /// zero is known empty and not read at all.
    #[inline]
    fn occupied(&self, t: &Entries, o: Held, sub: VaRange) -> Result<usize> {
        let Some((run, live)) = self.live_run(t, o, sub) else {
            return Ok(0);
        };
        // Zero first: the cheapest test, and the common answer of a map.
        if all_zero(run) {
            return Ok(0);
        }
        self.occupied_scan(run, o.pages(), live)
    }

    /// Validates a physical page argument: `EINVAL` if unaligned, `ERANGE` beyond the OAS.
    #[inline]
    fn check_phys(&self, pa: PhysAddr, len: u64) -> Result {
        if !pa_aligned(pa) || len & UAT_PGMSK != 0 || len == 0 {
            return Err(EINVAL);
        }
        let last = pa.checked_add(len - 1).ok_or(ERANGE)?;
        if !self.cfg.oas.fits(last) {
            return Err(ERANGE);
        }
        Ok(())
    }

    /// Maps `range` to the pages of `src`, all checks done by the caller except the tables'.
    /// Every page of the range must be unmapped (`EEXIST`).
    ///
    /// One walk checks the whole range (corruption, occupancy) and counts the missing tables;
    /// they are allocated (with the occupancies of new second-level tables); a second walk
    /// links them and writes. A range inside one existing leaf table is checked and written in
    /// the first walk. Only the entries the span of a leaf table's [`Occupancy`] allows are read:
    /// a table whose count is zero is known empty and is not read at all.
    ///
    /// Everything that can fail is checked before the first descriptor is written: the source
    /// must cover the range (`EINVAL`). Should writing fail anyway (a missing table or page: a
    /// bug), it warns, clears the range, and fails with `EIO`.
    pub(super) fn map_pages(
        &mut self,
        range: VaRange,
        prot: Prot,
        mut src: impl PageSource,
    ) -> Result {
        if !src.covers(range.size() >> UAT_PGBIT) {
            return Err(EINVAL);
        }
        let tmpl = PteTemplate::new(prot, !self.cfg.global);
        let single = self.single_leaf(range);
        // Writes the part of the leaf table `t` that maps `sub`, which maps nothing yet, and
        // updates its occupancy `occ`.
        let g = self.cfg.geometry;
        // `o` is what the table holds.
        let mut write = |t: &Entries, occ: &Occupancy, o: Held, sub: VaRange| -> Result {
            let (first, last) = (
                g.index(sub.start, LEAF_LEVEL),
                g.index(sub.last, LEAF_LEVEL),
            );
            src.write_run(&t[first..=last], tmpl)?;
            occ.set(o.added(first, last, last - first + 1));
            Ok(())
        };
        let mut needed = 0usize;
        let mut mids = 0u64;
        let mut written = false;
        let mut write_failed = false;
        let mut on_leaf = |t: &Entries, occ: &Occupancy, sub: VaRange| -> Result {
            let o = occ.get();
            if self.occupied(t, o, sub)? != 0 {
                return Err(EEXIST);
            }
            if single {
                write_failed = true;
                write(t, occ, o, sub)?;
                write_failed = false;
                written = true;
            }
            Ok(())
        };
        let mut leaf = 0;
        let checked = match if single {
            self.cached_leaf(range)
        } else {
            None
        } {
            // SAFETY: The cache only names a leaf table of ours, linked where it maps `range`.
            Some(pa) => unsafe { self.with_leaf(pa, range, |t, c| on_leaf(t, c, range)) },
            None => self
                .walk(range, &mut Tables::Existing, &mut |step| match step {
                    Step::Missing(level, sub) => {
                        self.note_missing(level, sub, &mut needed, &mut mids);
                        Ok(())
                    }
                    Step::Leaf(t, occ, sub) => on_leaf(t, occ, sub),
                })
                .map(|out| leaf = out.leaf)
                .map_err(Error::from),
        };
        if let Err(e) = checked {
            return Err(if write_failed {
                self.undo_map(range, e)
            } else {
                e
            });
        }
        if written {
            self.cache_leaf(range, leaf);
            return Ok(());
        }
        let mut reserve = self.alloc_for_map(mids, needed)?;
        let created = self.walk(
            range,
            &mut Tables::Create(&mut reserve.pages),
            &mut |step| {
                let Step::Leaf(t, occ, sub) = step else {
                    return Err(EIO);
                };
                write(t, occ, occ.get(), sub)
            },
        );
        match created {
            Ok(out) => {
                debug_assert!(reserve.pages.is_empty());
                if single {
                    self.cache_leaf(range, out.leaf);
                }
                let delta = self.finish_walk(out);
                self.account(delta);
            }
            Err(failed) => {
                // The tables it linked stay, counted, and are cleared below.
                let e = self.finish_failed_walk(failed);
                return Err(self.undo_map(range, e));
            }
        }
        Ok(())
    }

    /// After writing a map failed with `e` (a bug: everything was checked before): warns,
    /// clears every descriptor of `range` (the tables linked so far stay, empty; the caller has
    /// counted them), notes the range for [`PageTable::gather_undone`] and returns `EIO`.
    fn undo_map(&mut self, range: VaRange, e: Error) -> Error {
        pr_warn!(
            "map of {:#x}..={:#x} failed while writing ({:?}), undone\n",
            range.start,
            range.last,
            e
        );
        self.undone = Some(self.undone.map_or(range, |r| r.hull(&range)));
        let _ = self.walk(range, &mut Tables::Existing, &mut |step| {
            if let Step::Leaf(t, occ, sub) = step {
                fill(self.run(t, sub), 0);
                let (n, _) = scan_leaves(t, LeafCheck::new(self.cfg.oas));
                occ.set(Held::anywhere(n));
            }
            Ok(())
        });
        EIO
    }

    /// Adds to `gather` the range of the maps that failed with `EIO` while writing (a bug)
    /// since the last call, if any. Such a map clears what it wrote before it returns, but the
    /// GPU may have cached those descriptors meanwhile: the caller must flush `gather` before it
    /// lets go of the pages the map was given. (Nor is anything flushed from the firmware's data
    /// cache: a protection the firmware caches would need the flush protocol, which runs on
    /// mappings still in place. No map of the render node uses one.)
    pub fn gather_undone(&mut self, gather: &mut Gather) {
        if let Some(range) = self.undone.take() {
            gather.add_range(range);
        }
    }

    /// Maps `size` bytes at `iova` to the physically contiguous memory at `pa`.
    ///
    /// Fails with `EINVAL` (unaligned, empty or wrapping), `ERANGE` (outside the table's VA
    /// range or the OAS), `EEXIST` (a page of the range is mapped), `EIO` (corrupt tables) or
    /// `ENOMEM`, and then changes nothing.
    pub fn map(&mut self, iova: u64, pa: PhysAddr, size: u64, prot: Prot) -> Result {
        let range = self.check_range(iova, size)?;
        self.check_phys(pa, size)?;
        self.map_pages(range, prot, Contiguous(pa))
    }

    /// Maps `size` bytes at `iova` to the same page `pa` repeated (SINGLE_PAGE binds).
    pub fn map_repeat(&mut self, iova: u64, pa: PhysAddr, size: u64, prot: Prot) -> Result {
        let range = self.check_range(iova, size)?;
        self.check_phys(pa, UAT_PGSZ)?;
        self.map_pages(range, prot, Repeat(pa))
    }

    /// Maps `size` bytes at `iova` to the memory described by the scatter list `sg`, starting
    /// `skip` bytes into it. Only the entries the mapping uses are looked at, so a caller that
    /// finds the first entry by binary search maps any part of a huge list in time proportional
    /// to the part.
    pub fn map_sg(
        &mut self,
        iova: u64,
        size: u64,
        sg: &[PhysRange],
        skip: u64,
        prot: Prot,
    ) -> Result {
        let (range, src) = self.check_sg(iova, size, sg, skip)?;
        self.map_pages(range, prot, src)
    }

    /// Validates the arguments of a scatter-list map and returns the range and the page source.
    fn check_sg<'s>(
        &self,
        iova: u64,
        size: u64,
        sg: &'s [PhysRange],
        skip: u64,
    ) -> Result<(VaRange, Scatter<'s>)> {
        let range = self.check_range(iova, size)?;
        if skip & UAT_PGMSK != 0 {
            return Err(EINVAL);
        }
        // Skip whole entries, then check every entry the mapping will use.
        let mut first = 0;
        let mut off = skip;
        while let Some(r) = sg.get(first) {
            self.check_phys(r.addr, r.len)?;
            if off < r.len {
                break;
            }
            off -= r.len;
            first += 1;
        }
        let used = &sg[first.min(sg.len())..];
        let mut covered = 0u64;
        for (i, r) in used.iter().enumerate() {
            if i > 0 {
                self.check_phys(r.addr, r.len)?;
            }
            covered = covered.saturating_add(r.len);
            if covered - off >= size {
                break;
            }
        }
        if covered.saturating_sub(off) < size {
            return Err(EINVAL);
        }
        Ok((range, Scatter { ranges: used, off }))
    }

    /// Preallocates every table `size` bytes at `iova` need, so that a map of that range (with
    /// no unmap in between) cannot fail with `ENOMEM`. Mapped pages in the range are fine.
    /// Allocates under `&mut self`; see [`PageTable::prealloc_from`] for a caller that must not.
    pub fn prealloc(&mut self, iova: u64, size: u64) -> Result {
        let range = self.check_range(iova, size)?;
        let (mids, needs) = self.prealloc_check(range)?;
        if needs.pages == 0 {
            return Ok(());
        }
        let mut reserve = TableReserve::new();
        reserve.top_up(&self.cfg, needs)?;
        self.create_tables(range, mids, &mut reserve)
    }

    /// [`PageTable::prealloc`] with the tables taken from `reserve`, for a caller that allocates
    /// them without the lock that serializes this table. If the reserve falls short, changes
    /// nothing and returns what the map needs: the caller tops the reserve up, with that lock
    /// released, and calls again. Pages the map does not take stay in the reserve.
    pub fn prealloc_from(
        &mut self,
        iova: u64,
        size: u64,
        reserve: &mut TableReserve,
    ) -> Result<Option<TableNeeds>> {
        let range = self.check_range(iova, size)?;
        let (mids, needs) = self.prealloc_check(range)?;
        if needs.pages == 0 {
            return Ok(None);
        }
        if !reserve.covers(needs) {
            return Ok(Some(needs));
        }
        self.create_tables(range, mids, reserve)?;
        Ok(None)
    }

    /// The check walk of a preallocation: the top-level entries whose second-level table is
    /// missing, and what creating the missing tables takes. A range inside one leaf table that
    /// the caches know needs nothing: it is not walked, only the part of its run inside the
    /// table's span checked (`EIO` on a corrupt descriptor, as the walk would report).
    fn prealloc_check(&self, range: VaRange) -> Result<(u64, TableNeeds)> {
        if self.single_leaf(range) {
            if let Some(leaf) = self.cached_leaf(range).or_else(|| self.mid_leaf(range)) {
                let check = |t: &Entries, occ: &Occupancy| self.occupied(t, occ.get(), range);
                // SAFETY: The caches only name tables of ours, linked where they map `range`.
                unsafe { self.with_leaf(leaf, range, check) }?;
                return Ok((0, TableNeeds::default()));
            }
        }
        let mut needed = 0usize;
        let mut mids = 0u64;
        self.walk(range, &mut Tables::Existing, &mut |step| {
            match step {
                Step::Missing(level, sub) => self.note_missing(level, sub, &mut needed, &mut mids),
                Step::Leaf(t, occ, sub) => {
                    self.occupied(t, occ.get(), sub)?;
                }
            }
            Ok(())
        })?;
        let needs = TableNeeds {
            pages: needed,
            counts: self.counts_missing(mids),
        };
        Ok((mids, needs))
    }

    /// Creates the missing tables of `range` (those of the second-level tables in `mids` among
    /// them) from `reserve`, which covers them.
    fn create_tables(&mut self, range: VaRange, mids: u64, reserve: &mut TableReserve) -> Result {
        self.install_counts(mids, reserve)?;
        let created = self.walk(range, &mut Tables::Create(&mut reserve.pages), &mut |_| {
            Ok(())
        });
        match created {
            Ok(out) => {
                let delta = self.finish_walk(out);
                self.account(delta);
                Ok(())
            }
            // A corrupt descriptor on the way (the check found none: a bug). The tables linked
            // before it stay, empty, and are counted.
            Err(failed) => Err(self.finish_failed_walk(failed)),
        }
    }

    /// Changes the protection of every page of `size` bytes at `iova`, keeping the addresses.
    /// Every page must be mapped (`ENOENT` otherwise, and nothing changes). The range goes into
    /// `gather`, for the TLB invalidation.
    ///
    /// The descriptors are rewritten in place, valid throughout, with no break-before-make: the
    /// output address never changes, and the one user, the firmware cache flush, needs the
    /// firmware to keep reaching the range while it goes from cached to uncached, and back when
    /// the flush fails (the hardware protocol remaps it uncached, then flushes;
    /// `uat-hardware.md`).
    pub fn reprot(&mut self, iova: u64, size: u64, prot: Prot, gather: &mut Gather) -> Result {
        let range = self.check_range(iova, size)?;
        let single = self.single_leaf(range);
        let tmpl = PteTemplate::new(prot, !self.cfg.global);
        let check = |t: &Entries, occ: &Occupancy, sub: VaRange| -> Result {
            let len = self.run(t, sub).len();
            // Pages missing from the span are holes: `occupied_full` reads the span's part.
            let o = occ.get();
            if o.pages() < len || self.occupied_full(t, o, sub)? != len {
                return Err(ENOENT);
            }
            Ok(())
        };
        let write = |run: &[AtomicU64]| {
            for e in run {
                let raw = u64::from_le(e.load(Ordering::Relaxed));
                e.store(tmpl.reprot(raw).to_le(), Ordering::Relaxed);
            }
        };
        self.walk(range, &mut Tables::Existing, &mut |step| {
            let Step::Leaf(t, occ, sub) = step else {
                return Err(ENOENT);
            };
            check(t, occ, sub)?;
            if single {
                write(self.run(t, sub));
            }
            Ok(())
        })?;
        if !single {
            self.walk(range, &mut Tables::Existing, &mut |step| {
                if let Step::Leaf(t, _, sub) = step {
                    write(self.run(t, sub));
                }
                Ok(())
            })?;
        }
        gather.add_range(range);
        Ok(())
    }
}
