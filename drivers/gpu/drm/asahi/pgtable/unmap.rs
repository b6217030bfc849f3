// SPDX-License-Identifier: GPL-2.0

//! Removing mappings: `unmap` (which unlinks the tables it empties), `unmap_keep_tables` (the
//! first half of replacing mappings in place) and `prune` (unlinking what holds nothing).
//!
//! `unmap` and `unmap_keep_tables` check what they will clear before clearing anything (`EIO` on
//! corruption, nothing changed; what the occupancies say is empty, or a leaf table's every page,
//! is taken unread), and a range inside one leaf table that the caches find is cleared without a
//! walk ([`PageTable::clear_cached`]). `prune` changes no descriptor of a leaf table. All three
//! put the range and the tables they unlink into the caller's [`Gather`], so that no table is
//! freed before the TLB invalidation.

use super::{PageTable, Step, Tables};
use crate::desc_run::{count_leaves, fill, holds_only_pages, is_empty_around, plain, Entries};
use crate::geometry::{VaRange, LEAF_LEVEL, TOP_LEVEL};
use crate::occupancy::{Held, Occupancy};
use crate::page_list::PageList;
use crate::pte::{table_desc, LeafCheck};
use crate::tlb::{FreedTables, Gather};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::io::PhysAddr;
use kernel::page::Page;
use kernel::prelude::*;

/// What [`PageTable::clear_cached`] did.
enum Cached {
    /// The range is not inside a leaf table the caches find (or covers it whole): nothing done.
    Miss,
    /// The run was checked and cleared (and its table unlinked if that emptied it), the gather
    /// updated: this many pages.
    Cleared(usize),
    /// The run holds this many pages (checked, or all the pages of the table's span), and they
    /// are all its table has (none, for a table already empty), which the cached second-level
    /// table cannot unlink in place: nothing changed, the table is for the walk to unlink.
    Empties(usize),
}

impl PageTable {
    /// The pages an unmap of `sub` removes from the leaf table `t`, which holds `o`: when `sub`
    /// holds the span of every page of the table, its count, the table unread (as a table the
    /// range covers whole); otherwise [`PageTable::occupied_full`].
    #[inline(always)]
    fn pages_removed(&self, t: &Entries, o: Held, sub: VaRange) -> Result<usize> {
        let (first, last) = self.leaf_indices(sub);
        if o.within(first, last) {
            return Ok(o.pages());
        }
        self.occupied_full(t, o, sub)
    }

    /// [`PageTable::occupied_scan`] with its first test inlined: the unmap path, where a run
    /// usually holds only pages, keeps that test in its own code and calls out only for the
    /// counting scan.
    #[inline(always)]
    fn occupied_scan_inline(&self, run: &[AtomicU64], c: usize, sub: VaRange) -> Result<usize> {
        // SAFETY: `run` is in a table of `self`, which we borrow: no one writes it meanwhile
        // (see `plain`).
        if unsafe { holds_only_pages(run, LeafCheck::new(self.cfg.oas)) } && run.len() <= c {
            return Ok(run.len());
        }
        self.occupied_scan_outlined(run, c, sub)
    }

    /// The rest of [`PageTable::occupied_scan_inline`], out of line: the counting scan, for a
    /// run with holes or corruption, or more pages than its table's count (`EIO` for both).
    #[inline(never)]
    fn occupied_scan_outlined(&self, run: &[AtomicU64], c: usize, sub: VaRange) -> Result<usize> {
        let (n, bad) = count_leaves(run, LeafCheck::new(self.cfg.oas));
        if bad {
            return Err(self.corrupt_in(run, sub));
        }
        self.within_count(n, c, sub)
    }

    /// [`PageTable::pages_removed`] of a range already checked by it, without the checks.
    #[inline]
    fn pages_removed_unchecked(&self, t: &Entries, o: Held, sub: VaRange) -> usize {
        let (first, last) = self.leaf_indices(sub);
        if o.within(first, last) {
            return o.pages();
        }
        self.live_run(t, o, sub)
            .map_or(0, |(run, _)| plain(run).iter().filter(|&&e| e != 0).count())
    }

    /// Clears the `n` pages `sub` holds in the leaf table `t`, which holds `o`: the entries the
    /// span of `o` allows, and the table's occupancy `occ`.
    #[inline(always)]
    fn clear_pages(&self, t: &Entries, occ: &Occupancy, o: Held, sub: VaRange, n: usize) {
        if let Some((run, _)) = self.live_run(t, o, sub) {
            fill(run, 0);
        }
        let (first, last) = self.leaf_indices(sub);
        occ.set(o.removed(first, last, n));
    }

    /// Unmaps every page of `size` bytes at `iova` (holes are fine) and unlinks the tables that
    /// became empty. The range and the tables go into `gather`: the caller must flush it (TLB
    /// invalidation, then the tables are freed). Returns the number of pages unmapped.
    pub fn unmap(&mut self, iova: u64, size: u64, gather: &mut Gather) -> Result<usize> {
        self.clear(iova, size, true, gather)
    }

    /// Like [`PageTable::unmap`], but keeps every table: a map of the same range afterwards
    /// allocates nothing, so it cannot fail. The first half of replacing mappings in place.
    pub fn unmap_keep_tables(
        &mut self,
        iova: u64,
        size: u64,
        gather: &mut Gather,
    ) -> Result<usize> {
        self.clear(iova, size, false, gather)
    }

    /// Unlinks the tables of `size` bytes at `iova` that hold nothing: leaf tables whose count is
    /// zero, and second-level tables left without tables. Mappings stay as they are. The range
    /// and the unlinked tables go into `gather`, as with [`PageTable::unmap`]. Returns the number
    /// of tables unlinked.
    ///
    /// What a multi-op VM_BIND does at its end with the tables its unbinds kept
    /// ([`PageTable::unmap_keep_tables`]) for the maps after them, and, when it fails, with the
    /// tables it preallocated: the table memory is then what the same mappings made one at a time
    /// would have left. `EIO` on a corrupt table descriptor: the tables unlinked before it still
    /// go into `gather`.
    pub fn prune(&mut self, iova: u64, size: u64, gather: &mut Gather) -> Result<usize> {
        let range = self.check_range(iova, size)?;
        let mut freed = PageList::new();
        let walked = self.walk(range, &mut Tables::PruneEmpty(&mut freed), &mut |_| Ok(()));
        let unlinked = freed.len();
        if unlinked != 0 {
            // A cached leaf table may be among them.
            self.leaf_cache = None;
            gather.add_range(range);
            gather.add_freed(FreedTables::from_list(freed));
        }
        match walked {
            Ok(out) => {
                let removed = self.finish_walk(out);
                self.account(removed);
                Ok(unlinked)
            }
            // The tables unlinked before the corrupt descriptor are accounted for, and their
            // occupancies dropped.
            Err(failed) => Err(self.finish_failed_walk(failed)),
        }
    }

    /// Checks every descriptor of the range (one walk), then clears them and unlinks the tables
    /// that became empty (a second walk); a range inside one leaf table is checked and cleared in
    /// a single walk.
    ///
    /// A leaf table whose pages the range holds all (it covers the span of the table's
    /// [`Occupancy`]; a table it covers whole is one case) is neither read nor cleared when
    /// pruning: its count says how many pages it held, and it is unlinked as it is (its
    /// descriptors point at data pages, which are never followed; the table is freed only after
    /// the TLB flush). Without pruning, its span is cleared unread. The other leaf tables have
    /// the part of their run inside their span read (`EIO` on a corrupt descriptor or more pages
    /// than the count, before anything changes) and cleared; one whose count drops to zero is
    /// unlinked, when pruning, without clearing its run, as a wholly covered one.
    ///
    /// The path of a range inside a leaf table the caches find is inlined into the callers; the
    /// walks are not.
    #[inline(always)]
    fn clear(&mut self, iova: u64, size: u64, prune: bool, gather: &mut Gather) -> Result<usize> {
        let range = self.check_range(iova, size)?;
        let single = self.single_leaf(range);
        // The page count of a single-leaf run that the cached path found (checked, or all the
        // pages of the table's span), when clearing it empties its table: the walk below unlinks
        // the table without looking at the run again.
        let mut found = None;
        if single {
            match self.clear_cached(range, prune, gather)? {
                Cached::Cleared(n) => return Ok(n),
                Cached::Empties(n) => found = Some(n),
                Cached::Miss => {}
            }
        }
        self.clear_walk(range, single, found, prune, gather)
    }

    /// The walks of [`PageTable::clear`]: `found` is the page count of a single-leaf run the
    /// cached path found (checked, or all the pages of the table's span), whose clearing empties
    /// its table.
    #[inline(never)]
    fn clear_walk(
        &mut self,
        range: VaRange,
        single: bool,
        found: Option<usize>,
        prune: bool,
        gather: &mut Gather,
    ) -> Result<usize> {
        let mut pages = 0usize;
        if !single {
            self.walk(range, &mut Tables::Existing, &mut |step| {
                if let Step::Leaf(t, occ, sub) = step {
                    pages += if self.whole_leaf(sub) {
                        occ.pages()
                    } else {
                        self.pages_removed(t, occ.get(), sub)?
                    };
                }
                Ok(())
            })?;
        }
        let mut freed = PageList::new();
        let mut tables = if prune {
            Tables::Prune(&mut freed)
        } else {
            Tables::Existing
        };
        let removed = self.walk(range, &mut tables, &mut |step| {
            if let Step::Leaf(t, occ, sub) = step {
                if self.whole_leaf(sub) {
                    if single {
                        pages += occ.pages();
                    }
                    if !prune {
                        let o = occ.get();
                        self.clear_pages(t, occ, o, sub, o.pages());
                    }
                    // When pruning, the walk unlinks it and clears its occupancy.
                    return Ok(());
                }
                let o = occ.get();
                let n = if single {
                    let n = match found {
                        Some(n) => n,
                        None => self.pages_removed(t, o, sub)?,
                    };
                    pages += n;
                    n
                } else {
                    self.pages_removed_unchecked(t, o, sub)
                };
                if n != 0 {
                    // A table this range empties is unlinked as it is, as a wholly covered one
                    // (see `Tables::Prune`): its descriptors need no clearing.
                    if prune && n == o.pages() {
                        occ.clear();
                    } else {
                        self.clear_pages(t, occ, o, sub, n);
                    }
                }
            }
            Ok(())
        });
        let removed = match removed {
            Ok(removed) => removed,
            Err(failed) => {
                // Only the single-leaf walk checks as it goes, and it fails before it changes
                // anything. Should a walk fail after unlinking tables anyway (a bug), they still
                // wait for the flush, and are accounted for.
                gather.add_range(range);
                if !freed.is_empty() {
                    gather.add_freed(FreedTables::from_list(freed));
                }
                return Err(self.finish_failed_walk(failed));
            }
        };
        if single && removed.leaf != 0 && freed.is_empty() {
            self.cache_leaf(range, removed.leaf);
        }
        if !freed.is_empty() {
            // A cached leaf table may be among them.
            self.leaf_cache = None;
        }
        let removed = self.finish_walk(removed);
        self.account(removed);
        if pages != 0 || !freed.is_empty() {
            gather.add_range(range);
        }
        if !freed.is_empty() {
            gather.add_freed(FreedTables::from_list(freed));
        }
        Ok(pages)
    }

    /// [`PageTable::clear`] of a range inside one leaf table, part of it only, when the caches
    /// find that table (the cached leaf table, or the entry of the cached second-level table):
    /// counts the run's pages without walking down (see [`PageTable::pages_removed`]) and clears
    /// them if the table keeps pages. When clearing would empty a pruned table, unlinks that
    /// table as it is (see `Tables::Prune`) from the cached second-level table if that one keeps
    /// other tables; otherwise changes nothing and returns the run's page count for the walk that
    /// unlinks both.
    #[inline]
    fn clear_cached(&mut self, range: VaRange, prune: bool, gather: &mut Gather) -> Result<Cached> {
        if self.whole_leaf(range) {
            return Ok(Cached::Miss);
        }
        let Some(leaf) = self.cached_leaf(range).or_else(|| self.mid_leaf(range)) else {
            return Ok(Cached::Miss);
        };
        // `pages_removed` and `clear_pages`, with the run found once.
        let clear = |t: &Entries, occ: &Occupancy| -> Result<Cached> {
            let o = occ.get();
            let (first, last) = self.leaf_indices(range);
            if o.within(first, last) {
                // Every page of the table is in the range: it empties, unread.
                let n = o.pages();
                if prune {
                    return Ok(Cached::Empties(n));
                }
                self.clear_pages(t, occ, o, range, n);
                return Ok(Cached::Cleared(n));
            }
            let Some((run, live)) = self.live_run(t, o, range) else {
                if prune && o.pages() == 0 {
                    // A table an unmap that kept its tables emptied: it goes now, as from the
                    // walk, which unlinks every empty table it visits.
                    return Ok(Cached::Empties(0));
                }
                return Ok(Cached::Cleared(0));
            };
            let n = self.occupied_scan_inline(run, o.pages(), live)?;
            if prune && n != 0 && n == o.pages() {
                // The table empties: it is unlinked as it is.
                return Ok(Cached::Empties(n));
            }
            if n != 0 {
                fill(run, 0);
                occ.set(o.removed(first, last, n));
            }
            Ok(Cached::Cleared(n))
        };
        // SAFETY: The caches only name tables of ours, linked where they map `range`.
        let done = unsafe { self.with_leaf(leaf, range, clear) }?;
        match done {
            Cached::Cleared(n) => {
                self.cache_leaf(range, leaf);
                if n != 0 {
                    gather.add_range(range);
                }
            }
            Cached::Empties(n) => {
                if self.unlink_cached(range, leaf, gather)? {
                    return Ok(Cached::Cleared(n));
                }
            }
            Cached::Miss => {}
        }
        Ok(done)
    }

    /// Unlinks the leaf table `leaf` that maps `range`, whose pages the caller has just found all
    /// in `range`, from the cached second-level table without a walk, and gathers it with the
    /// range. Does nothing and returns `false` when that table is not cached or would be left
    /// empty (the walk then unlinks both).
    fn unlink_cached(
        &mut self,
        range: VaRange,
        leaf: PhysAddr,
        gather: &mut Gather,
    ) -> Result<bool> {
        let g = self.cfg.geometry;
        let Some(mid) = self.cached_mid(range) else {
            return Ok(false);
        };
        let idx = g.index(range.start, LEAF_LEVEL - 1);
        let occ = self
            .occ
            .get(g.index(range.start, TOP_LEVEL))
            .and_then(|c| c.get(idx))
            .ok_or(EIO)?;
        let unlink = |t: &Entries| {
            let raw = u64::from_le(t[idx].load(Ordering::Relaxed));
            if raw != table_desc(leaf) || is_empty_around(t, idx, idx) {
                return false;
            }
            t[idx].store(0, Ordering::Relaxed);
            // The table goes with its pages.
            occ.clear();
            true
        };
        // SAFETY: The cache only names a second-level table of ours, linked below the root.
        if !unsafe { self.with_table(mid, unlink) }? {
            return Ok(false);
        }
        let mut freed = PageList::new();
        // SAFETY: The descriptor that owned the page is gone; ownership comes back to us exactly
        // once.
        freed.push_stale(unsafe { Page::from_phys(leaf) });
        self.leaf_cache = None;
        self.account(-1);
        gather.add_range(range);
        gather.add_freed(FreedTables::from_list(freed));
        Ok(true)
    }
}
