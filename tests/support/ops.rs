// SPDX-License-Identifier: GPL-2.0

//! Random page-table operations, applied to the driver and to the model side by side.

use crate::model::{Backing, Interval, VaModel, PG};
use asahi::geometry::VaRange;
use asahi::pgtable::{Mapping, PageTable, PhysRange};
use asahi::pte::Prot;
use asahi::tlb::{Gather, TlbInvalidate};
use core::cell::Cell;
use kernel::error::{code::*, Result};
use proptest::prelude::*;

/// The window the operations land in: 8192 pages straddling the L1 boundary at 64 GiB, so
/// that ranges cross L2 and L1 entries.
pub const WINDOW: u64 = (1 << 36) - 4096 * PG;
/// Pages in the window.
pub const WINDOW_PAGES: u64 = 8192;

/// One operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// Map contiguous physical memory.
    Map {
        page: u64,
        pages: u64,
        pa_page: u64,
        prot: Prot,
    },
    /// Map a scatter list, skipping some pages of it.
    MapSg {
        page: u64,
        segs: Vec<(u64, u64)>,
        skip: u64,
        prot: Prot,
    },
    /// Map one page repeatedly.
    MapRepeat {
        page: u64,
        pages: u64,
        pa_page: u64,
        prot: Prot,
    },
    /// Unmap.
    Unmap { page: u64, pages: u64 },
    /// Unmap, keeping every table (the first half of a replacing bind).
    UnmapKeep { page: u64, pages: u64 },
    /// Change protection.
    Reprot { page: u64, pages: u64, prot: Prot },
    /// Preallocate tables.
    Prealloc { page: u64, pages: u64 },
    /// Free the tables of a range that hold nothing.
    Prune { page: u64, pages: u64 },
}

/// Pages from the start of the window that cover every page an operation can reach.
pub const REACH_PAGES: u64 = 2 * WINDOW_PAGES;

fn prot() -> impl Strategy<Value = Prot> {
    prop::sample::select(Prot::NAMED.iter().map(|(_, p)| *p).collect::<Vec<_>>())
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 1u64..=4,
        3 => 5u64..=300,
        2 => 1900u64..=2200,
        1 => 2200u64..=5000,
    ]
}

fn start() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..WINDOW_PAGES,
        // Around the leaf-table and L1 boundaries.
        2 => prop::sample::select(vec![2046u64, 2047, 2048, 4094, 4095, 4096, 4097, 6143, 6144]),
    ]
}

/// A physical page number in the 40-bit OAS, from a small pool so that runs meet.
fn pa_page() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, ((1u64 << 26) - 8192)..(1u64 << 26)]
}

/// Strategy for one operation.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (start(), count(), pa_page(), prot())
            .prop_map(|(page, pages, pa_page, prot)| Op::Map { page, pages, pa_page, prot }),
        2 => (start(), prop::collection::vec((pa_page(), 1u64..40), 1..6), 0u64..4, prot())
            .prop_map(|(page, segs, skip, prot)| Op::MapSg { page, segs, skip, prot }),
        1 => (start(), count(), pa_page(), prot())
            .prop_map(|(page, pages, pa_page, prot)| Op::MapRepeat { page, pages, pa_page, prot }),
        4 => (start(), count()).prop_map(|(page, pages)| Op::Unmap { page, pages }),
        2 => (start(), count()).prop_map(|(page, pages)| Op::UnmapKeep { page, pages }),
        2 => (start(), count(), prot()).prop_map(|(page, pages, prot)| Op::Reprot { page, pages, prot }),
        1 => (start(), count()).prop_map(|(page, pages)| Op::Prealloc { page, pages }),
        1 => prop_oneof![
            (start(), count()).prop_map(|(page, pages)| Op::Prune { page, pages }),
            Just(Op::Prune { page: 0, pages: REACH_PAGES }),
        ],
    ]
}

/// The user-half configuration the tests use.
pub use asahi::selftest::user_cfg as cfg;

/// Pages below the 40-bit OAS.
const OAS_PAGES: u64 = 1 << (40 - 14);

/// The VA of page `page` of the window.
pub fn va(page: u64) -> u64 {
    WINDOW + page * PG
}

/// What the model says the operation must return, and the model after it.
pub fn expect(model: &VaModel, op: &Op) -> (Result<u64>, VaModel) {
    let mut m = model.clone();
    let r = match *op {
        Op::Map { pages, pa_page, .. } if pa_page + pages > OAS_PAGES => Err(ERANGE),
        Op::Map {
            page,
            pages,
            pa_page,
            prot,
        } => {
            if m.overlaps(va(page), pages * PG) {
                Err(EEXIST)
            } else {
                m.insert(
                    va(page),
                    Interval {
                        len: pages * PG,
                        backing: Backing::Linear(pa_page * PG),
                        prot,
                    },
                );
                Ok(0)
            }
        }
        Op::MapRepeat {
            page,
            pages,
            pa_page,
            prot,
        } => {
            if m.overlaps(va(page), pages * PG) {
                Err(EEXIST)
            } else {
                m.insert(
                    va(page),
                    Interval {
                        len: pages * PG,
                        backing: Backing::Repeat(pa_page * PG),
                        prot,
                    },
                );
                Ok(0)
            }
        }
        Op::MapSg {
            page,
            ref segs,
            skip,
            prot,
        } => {
            let total: u64 = segs.iter().map(|s| s.1).sum();
            let pages = total - skip.min(total);
            if pages == 0 {
                Err(EINVAL)
            } else if segs.iter().any(|&(pa, n)| pa + n > OAS_PAGES) {
                Err(ERANGE)
            } else if m.overlaps(va(page), pages * PG) {
                Err(EEXIST)
            } else {
                let mut at = va(page);
                let mut to_skip = skip;
                for &(pa, n) in segs {
                    let s = to_skip.min(n);
                    to_skip -= s;
                    if n > s {
                        let len = (n - s) * PG;
                        m.insert(
                            at,
                            Interval {
                                len,
                                backing: Backing::Linear((pa + s) * PG),
                                prot,
                            },
                        );
                        at += len;
                    }
                }
                Ok(0)
            }
        }
        Op::Unmap { page, pages } | Op::UnmapKeep { page, pages } => {
            Ok(m.remove(va(page), pages * PG))
        }
        Op::Reprot { page, pages, prot } => {
            if m.covers(va(page), pages * PG) {
                m.reprot(va(page), pages * PG, prot);
                Ok(0)
            } else {
                Err(ENOENT)
            }
        }
        Op::Prealloc { .. } | Op::Prune { .. } => Ok(0),
    };
    // A failed operation leaves the model as it was.
    if r.is_err() {
        m = model.clone();
    }
    (r, m)
}

/// A TLB that counts the invalidations and notes how many pages this thread had freed at the
/// last: the tables an operation unlinks must all be allocated still when it comes.
#[derive(Default)]
struct FreeWatchingTlb {
    count: Cell<usize>,
    frees_at: Cell<Option<u64>>,
}

impl FreeWatchingTlb {
    fn seen(&self) {
        self.count.set(self.count.get() + 1);
        self.frees_at.set(Some(kernel::sim::page_stats().frees));
    }
}

impl TlbInvalidate for FreeWatchingTlb {
    fn invalidate_range(&self, _asid: u16, _range: VaRange) {
        self.seen();
    }
    fn invalidate_asid(&self, _asid: u16) {
        self.seen();
    }
    fn invalidate_all(&self) {
        self.seen();
    }
}

/// Applies the operation to the driver (flushing what it gathered).
pub fn apply(pt: &mut PageTable, op: &Op) -> Result<u64> {
    let tlb = FreeWatchingTlb::default();
    let mut gather = Gather::new();
    let frees_before = kernel::sim::page_stats().frees;
    let r = match *op {
        Op::Map {
            page,
            pages,
            pa_page,
            prot,
        } => pt.map(va(page), pa_page * PG, pages * PG, prot).map(|_| 0),
        Op::MapRepeat {
            page,
            pages,
            pa_page,
            prot,
        } => pt
            .map_repeat(va(page), pa_page * PG, pages * PG, prot)
            .map(|_| 0),
        Op::MapSg {
            page,
            ref segs,
            skip,
            prot,
        } => {
            let sg: Vec<PhysRange> = segs
                .iter()
                .map(|&(pa, n)| PhysRange {
                    addr: pa * PG,
                    len: n * PG,
                })
                .collect();
            let total: u64 = segs.iter().map(|s| s.1).sum();
            let pages = total - skip.min(total);
            pt.map_sg(va(page), pages * PG, &sg, skip * PG, prot)
                .map(|_| 0)
        }
        Op::Unmap { page, pages } => pt
            .unmap(va(page), pages * PG, &mut gather)
            .map(|n| n as u64),
        Op::UnmapKeep { page, pages } => pt
            .unmap_keep_tables(va(page), pages * PG, &mut gather)
            .map(|n| n as u64),
        Op::Reprot { page, pages, prot } => pt
            .reprot(va(page), pages * PG, prot, &mut gather)
            .map(|_| 0),
        Op::Prealloc { page, pages } => pt.prealloc(va(page), pages * PG).map(|_| 0),
        Op::Prune { page, pages } => {
            let before = pt.table_pages();
            let r = pt.prune(va(page), pages * PG, &mut gather);
            if let Ok(n) = r {
                assert_eq!(before - pt.table_pages(), n, "tables pruned");
                // Freed only after an invalidation of the range they mapped.
                assert_eq!(gather.freed_tables(), n);
                if n != 0 {
                    let want = VaRange {
                        start: va(page),
                        last: va(page) + pages * PG - 1,
                    };
                    assert!(gather.range().is_some_and(|g| g.contains_range(&want)));
                }
            }
            r.map(|_| 0)
        }
    };
    let range = gather.range();
    let freed = gather.freed_tables() as u64;
    let frees = kernel::sim::page_stats().frees;
    // What removes mappings frees nothing itself: its tables wait in the gather. (A failed map
    // gives its unused reserve back: pages no descriptor ever named.)
    if matches!(
        op,
        Op::Unmap { .. } | Op::UnmapKeep { .. } | Op::Prune { .. } | Op::Reprot { .. }
    ) {
        assert_eq!(frees, frees_before, "pages freed before the flush");
    }
    gather.flush(&tlb, 1);
    // The unlinked tables are freed by the flush, after its invalidation.
    if freed != 0 {
        assert_eq!(tlb.count.get(), 1, "tables freed without an invalidation");
        assert_eq!(
            tlb.frees_at.get(),
            Some(frees),
            "tables freed before the invalidation"
        );
    }
    assert_eq!(kernel::sim::page_stats().frees - frees, freed);
    // Whatever changed translations or unlinked tables must have been invalidated, and covered
    // the operation.
    if let (
        Ok(n),
        Op::Unmap { page, pages } | Op::UnmapKeep { page, pages } | Op::Reprot { page, pages, .. },
    ) = (&r, op)
    {
        if *n > 0 || freed != 0 || matches!(op, Op::Reprot { .. }) {
            let want = VaRange {
                start: va(*page),
                last: va(*page) + pages * PG - 1,
            };
            let got = range.expect("changed translations without a gathered range");
            assert!(
                got.contains_range(&want),
                "gathered {got:?}, changed {want:?}"
            );
            assert_eq!(tlb.count.get(), 1);
        }
    }
    r
}

/// The driver's walk of the whole window.
pub fn walk(pt: &PageTable) -> Vec<Mapping> {
    let mut v = Vec::new();
    pt.for_each_mapping_all(|m| v.push(*m))
        .expect("walk failed");
    v
}

/// Checks the driver against the model: the whole walk, and translations of the pages around
/// every interval edge, of `touched`, and of a sample of the window.
pub fn check(pt: &PageTable, model: &VaModel, touched: Option<(u64, u64)>, sample: u64) {
    // The occupancies (counts and spans), against a full scan of every leaf table.
    assert_eq!(pt.check_occupancy(), Ok(()), "occupancies");
    let runs: Vec<_> = walk(pt)
        .iter()
        .map(|m| (m.va, m.pa, m.size, m.prot))
        .collect();
    let want: Vec<_> = model
        .runs()
        .iter()
        .map(|r| (r.va, r.pa, r.size, r.prot))
        .collect();
    assert_eq!(runs, want, "walk differs from the model");
    let mut vas: Vec<u64> = Vec::new();
    for (s, i) in model.intervals() {
        vas.extend([s.wrapping_sub(PG), s, s + i.len - PG, s + i.len]);
    }
    if let Some((page, pages)) = touched {
        vas.extend((0..pages).map(|p| va(page + p)));
    }
    let mut x = sample | 1;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        vas.push(va(x % WINDOW_PAGES) + (x >> 40) % PG);
    }
    for v in vas {
        let got = pt.translate(v).ok().map(|t| (t.pa, t.prot));
        assert_eq!(got, model.translate(v), "translate({v:#x})");
    }
}

/// The page range an operation touches.
pub fn touched(op: &Op) -> (u64, u64) {
    match *op {
        Op::Map { page, pages, .. }
        | Op::MapRepeat { page, pages, .. }
        | Op::Unmap { page, pages }
        | Op::UnmapKeep { page, pages }
        | Op::Reprot { page, pages, .. }
        | Op::Prealloc { page, pages }
        | Op::Prune { page, pages } => (page, pages),
        Op::MapSg { page, ref segs, .. } => (page, segs.iter().map(|s| s.1).sum()),
    }
}
