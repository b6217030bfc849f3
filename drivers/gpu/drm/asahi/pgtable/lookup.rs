// SPDX-License-Identifier: GPL-2.0

//! The read-only walks: `translate`, the mappings of a range or of the whole table (for debugfs
//! and crash dumps), the table pages, and `check_occupancy`, which the test suites run after every
//! step. Unlike the operations, they do not go by the occupancies: they read every entry they
//! pass, and the first corrupt one fails them (`EIO`).

use super::{Mapping, PageTable, Step, Tables, Translation};
use crate::desc_run::{plain, scan_leaves};
use crate::geometry::{LEAF_LEVEL, PTES_PER_TABLE, TOP_LEVEL, UAT_PGBIT, UAT_PGMSK, UAT_PGSZ};
use crate::occupancy::Occupancy;
use crate::pte::{Desc, LeafCheck};
use core::sync::atomic::Ordering;
use kernel::io::PhysAddr;
use kernel::prelude::*;

impl PageTable {
    /// Translates `va` (any byte address): `ENOENT` if unmapped, `ERANGE` outside the table's
    /// range, `EIO` on a corrupt descriptor.
    pub fn translate(&self, va: u64) -> Result<Translation> {
        if !self.cfg.range.contains(va) {
            return Err(ERANGE);
        }
        let g = self.cfg.geometry;
        let mut table_pa = self.root;
        for level in TOP_LEVEL..=LEAF_LEVEL {
            let idx = g.index(va, level);
            // SAFETY: By the type invariants, `table_pa` is a table page alive while `self` is
            // borrowed.
            let raw = unsafe { self.with_table(table_pa, |t| t[idx].load(Ordering::Relaxed)) }?;
            let raw = u64::from_le(raw);
            match Desc::decode(raw, level, self.cfg.oas) {
                Desc::Invalid => return Err(ENOENT),
                Desc::Table(next) => table_pa = next,
                Desc::Page(p) => {
                    return Ok(Translation {
                        pa: p.pa | (va & UAT_PGMSK),
                        prot: p.prot,
                    })
                }
                Desc::Corrupt(raw) => return Err(self.corrupt(va, level, raw)),
            }
        }
        Err(EIO)
    }

    /// Calls `f` for every mapped run in `iova .. iova + size`, in VA order, merging pages that
    /// are contiguous in both VA and PA and share a protection. `EIO` on a corrupt descriptor
    /// (after reporting the runs before it).
    pub fn for_each_mapping(&self, iova: u64, size: u64, mut f: impl FnMut(&Mapping)) -> Result {
        let range = self.check_range(iova, size)?;
        let mut run: Option<Mapping> = None;
        let result = self.walk(range, &mut Tables::Existing, &mut |step| {
            let (table, sub) = match step {
                Step::Leaf(table, _, sub) => (table, sub),
                Step::Missing(..) => {
                    if let Some(m) = run.take() {
                        f(&m);
                    }
                    return Ok(());
                }
            };
            for (i, e) in self.run(table, sub).iter().enumerate() {
                let va = sub.start + ((i as u64) << UAT_PGBIT);
                let raw = u64::from_le(e.load(Ordering::Relaxed));
                match Desc::decode(raw, LEAF_LEVEL, self.cfg.oas) {
                    Desc::Page(p) => match &mut run {
                        Some(m)
                            if m.attrs == p.attrs
                                && m.va + m.size == va
                                && m.pa + m.size == p.pa =>
                        {
                            m.size += UAT_PGSZ
                        }
                        _ => {
                            if let Some(m) = run.replace(Mapping {
                                va,
                                pa: p.pa,
                                size: UAT_PGSZ,
                                prot: p.prot,
                                attrs: p.attrs,
                            }) {
                                f(&m);
                            }
                        }
                    },
                    Desc::Invalid => {
                        if let Some(m) = run.take() {
                            f(&m);
                        }
                    }
                    _ => return Err(self.corrupt(va, LEAF_LEVEL, raw)),
                }
            }
            Ok(())
        });
        if let Some(m) = run.take() {
            f(&m);
        }
        result.map(|_| ()).map_err(Error::from)
    }

    /// The mapped runs in `iova .. iova + size` (as [`PageTable::for_each_mapping`] reports
    /// them) for which `keep` holds.
    pub fn collect_mappings(
        &self,
        iova: u64,
        size: u64,
        keep: impl Fn(&Mapping) -> bool,
    ) -> Result<KVec<Mapping>> {
        let mut v = KVec::new();
        let mut err = Ok(());
        self.for_each_mapping(iova, size, |m| {
            if err.is_ok() && keep(m) {
                err = v.push(*m, GFP_KERNEL);
            }
        })?;
        err?;
        Ok(v)
    }

    /// Calls `f` for every mapped run of the whole table.
    pub fn for_each_mapping_all(&self, f: impl FnMut(&Mapping)) -> Result {
        self.for_each_mapping(self.cfg.range.start, self.cfg.range.size(), f)
    }

    /// Cross-checks the occupancies against the tables, for tests and debugging: reads every
    /// leaf table whole and compares its pages with its count and their indices with its span,
    /// and checks that occupancies exist exactly for the second-level tables and are zero for
    /// missing leaf tables. `EIO` (with the first difference reported) on a mismatch or a
    /// corrupt descriptor.
    pub fn check_occupancy(&self) -> Result {
        let g = self.cfg.geometry;
        let mismatch = |va: u64, found: usize, count: usize| {
            pr_err!(
                "occupancy of the leaf table at VA {:#x}: {} pages, count {} (table {:#x})\n",
                va,
                found,
                count,
                self.root
            );
            EIO
        };
        let mut linked = 0u64;
        self.walk(self.cfg.range, &mut Tables::Existing, &mut |step| {
            match step {
                Step::Leaf(t, occ, sub) => {
                    linked |= 1 << g.index(sub.start, TOP_LEVEL);
                    let (n, bad) = scan_leaves(t, LeafCheck::new(self.cfg.oas));
                    if bad {
                        return Err(self.corrupt_in(t, sub));
                    }
                    let c = occ.pages();
                    if n != c {
                        return Err(mismatch(sub.start, n, c));
                    }
                    let words = plain(t);
                    let first = words.iter().position(|&e| e != 0);
                    let last = words.iter().rposition(|&e| e != 0);
                    if let (Some(first), Some(last)) = (first, last) {
                        let span = occ.get().span();
                        if !span.is_some_and(|(lo, hi)| lo <= first && last <= hi) {
                            pr_err!(
                                "leaf table at VA {:#x}: pages in entries {}..={}, span {:?}\n",
                                sub.start,
                                first,
                                last,
                                span
                            );
                            return Err(EIO);
                        }
                    }
                }
                Step::Missing(level, sub) => {
                    let top = g.index(sub.start, TOP_LEVEL);
                    if level == TOP_LEVEL {
                        return Ok(());
                    }
                    linked |= 1 << top;
                    let idx = g.index(sub.start, LEAF_LEVEL - 1);
                    let c = self.occ.get(top).and_then(|c| c.get(idx));
                    let c = c.map_or(0, Occupancy::pages);
                    if c != 0 {
                        return Err(mismatch(sub.start, 0, c));
                    }
                }
            }
            Ok(())
        })?;
        for (top, counts) in self.occ.iter().enumerate() {
            let want = if linked & (1 << top) != 0 {
                PTES_PER_TABLE
            } else {
                0
            };
            if counts.len() != want {
                pr_err!(
                    "top-level entry {}: {} occupancies, {} expected\n",
                    top,
                    counts.len(),
                    want
                );
                return Err(EIO);
            }
        }
        Ok(())
    }

    /// Calls `f` with the physical address of every table page this object owns, the top-level
    /// table included when it is ours: what a leak check expects to see freed after teardown.
    pub fn for_each_table_page(&self, mut f: impl FnMut(PhysAddr)) -> Result {
        if self.root_map.is_none() {
            f(self.root);
        }
        self.visit_tables(self.root, TOP_LEVEL, self.cfg.range, &mut f)
    }
}
