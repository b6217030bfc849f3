// SPDX-License-Identifier: GPL-2.0

//! Built-in self-tests of the UAT page tables.
//!
//! The same cases run in the kernel (as KUnit tests, with `CONFIG_DRM_ASAHI_KUNIT_TEST`, on
//! the real page allocator) and on the host (under the simulated RAM's leak and fault accounting).
//! Each case returns the first check that failed, with its line.

use crate::geometry::{Geometry, Level, VaRange, LEAF_LEVEL, TOP_LEVEL, UAT_PGSZ};
use crate::pgtable::{Mapping, PageTable, PhysRange, PtConfig};
use crate::pte::{Access, Desc, Oas, Prot, PteTemplate};
use crate::region::Region;
use crate::tlb::{Gather, TlbInvalidate};
use core::cell::Cell;
use kernel::io::PhysAddr;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;

/// Where a failed check is.
pub type Failure = &'static str;

/// The outcome of one case.
pub type CaseResult = core::result::Result<(), Failure>;

/// What the platform tells the cases.
pub struct Env {
    /// A physical address that is certainly not RAM (an MMIO register block).
    pub non_ram: PhysAddr,
    /// [`CARVEOUT_SIZE`] bytes of page-aligned memory that no one else uses and that is not
    /// System RAM (as reserved-memory regions are): stands in for the `ttbs` and `handoff`
    /// regions.
    pub carveout: PhysAddr,
}

/// Size of [`Env::carveout`].
pub const CARVEOUT_SIZE: u64 = 64 * 1024;

/// A named self-test case.
pub struct Case {
    /// Name printed on failure.
    pub name: &'static str,
    /// The case.
    pub run: fn(&Env) -> CaseResult,
}

macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(concat!(file!(), ":", line!(), ": ", stringify!($cond)));
        }
    };
}

macro_rules! ok {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(_) => return Err(concat!(file!(), ":", line!(), ": ", stringify!($e))),
        }
    };
}

pub(crate) use {check, ok};

/// A TLB that only remembers what it was asked to invalidate.
#[derive(Default)]
pub struct RecordingTlb {
    /// The last range invalidated.
    pub last: Cell<Option<(u16, VaRange)>>,
    /// How many invalidations were requested.
    pub count: Cell<usize>,
}

impl TlbInvalidate for RecordingTlb {
    fn invalidate_range(&self, asid: u16, range: VaRange) {
        self.last.set(Some((asid, range)));
        self.count.set(self.count.get() + 1);
    }
    fn invalidate_asid(&self, _asid: u16) {
        self.count.set(self.count.get() + 1);
    }
    fn invalidate_all(&self) {
        self.count.set(self.count.get() + 1);
    }
}

const PG: u64 = UAT_PGSZ;
/// An L2 entry's span (one leaf table): 32 MiB.
const L2_SPAN: u64 = 1 << 25;
/// An L1 entry's span: 64 GiB.
const L1_SPAN: u64 = 1 << 36;
/// A physical address in the 40-bit OAS that the cases map (never accessed through).
const PA: PhysAddr = 0x80_0000_0000 >> 1;

/// A user (lower-half, non-global) address space of a G13 GPU with a 40-bit OAS.
pub fn user_cfg() -> PtConfig {
    let g = Geometry::G13;
    PtConfig {
        geometry: g,
        range: g.lower_half(),
        oas: Oas::BITS_40,
        user: true,
        global: false,
    }
}

fn kernel_cfg() -> PtConfig {
    let g = Geometry::G13;
    PtConfig {
        geometry: g,
        range: g.upper_half(),
        oas: Oas::BITS_40,
        user: false,
        global: true,
    }
}

fn unmap_flush(pt: &mut PageTable, iova: u64, size: u64) -> Result<usize> {
    let mut gather = Gather::new();
    let r = pt.unmap(iova, size, &mut gather);
    gather.flush(&RecordingTlb::default(), 1);
    r
}

fn mappings(pt: &PageTable) -> Result<KVec<Mapping>> {
    let range = pt.config().range;
    pt.collect_mappings(range.start, range.size(), |_| true)
}

fn map_translate_unmap(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = 0x1_0000_0000;
    ok!(pt.map(va, PA, 4 * PG, Prot::GPU_SHARED_RW));
    for i in 0..4 {
        let t = ok!(pt.translate(va + i * PG + 0x123));
        check!(t.pa == PA + i * PG + 0x123);
        check!(t.prot == Prot::GPU_SHARED_RW);
    }
    check!(pt.translate(va - PG) == Err(ENOENT));
    check!(pt.translate(va + 4 * PG) == Err(ENOENT));
    check!(pt.table_pages() == 2);
    check!(ok!(unmap_flush(&mut pt, va + PG, PG)) == 1);
    check!(pt.translate(va + PG) == Err(ENOENT));
    check!(ok!(pt.translate(va + 2 * PG)).pa == PA + 2 * PG);
    check!(ok!(unmap_flush(&mut pt, va, 4 * PG)) == 3);
    check!(pt.table_pages() == 0);
    // Remap after unmap.
    ok!(pt.map(va, PA, PG, Prot::GPU_SHARED_RO));
    check!(ok!(pt.translate(va)).prot == Prot::GPU_SHARED_RO);
    Ok(())
}

fn bad_arguments(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = 0x10_0000_0000;
    let p = Prot::GPU_SHARED_RW;
    check!(pt.map(va + 1, PA, PG, p) == Err(EINVAL));
    check!(pt.map(va, PA + 0x200, PG, p) == Err(EINVAL));
    check!(pt.map(va, PA, PG + 8, p) == Err(EINVAL));
    check!(pt.map(va, PA, 0, p) == Err(EINVAL));
    check!(pt.map(!(PG - 1), PA, 2 * PG, p) == Err(EINVAL));
    check!(pt.map(1 << 39, PA, PG, p) == Err(ERANGE));
    check!(pt.map((1 << 39) - PG, PA, 2 * PG, p) == Err(ERANGE));
    check!(pt.map(va, 1 << 40, PG, p) == Err(ERANGE));
    check!(pt.map(va, (1 << 40) - PG, 2 * PG, p) == Err(ERANGE));
    check!(pt.map_repeat(va, 1 << 40, PG, p) == Err(ERANGE));
    check!(pt.map_repeat(va, PA + 8, PG, p) == Err(EINVAL));
    let sg = [
        PhysRange { addr: PA, len: PG },
        PhysRange {
            addr: PA + 0x100,
            len: PG,
        },
    ];
    check!(pt.map_sg(va, 2 * PG, &sg, 0, p) == Err(EINVAL));
    let sg = [PhysRange { addr: PA, len: PG }];
    check!(pt.map_sg(va, 2 * PG, &sg, 0, p) == Err(EINVAL));
    check!(pt.map_sg(va, PG, &sg, PG, p) == Err(EINVAL));
    check!(pt.map_sg(va, PG, &[], 0, p) == Err(EINVAL));
    let sg = [PhysRange { addr: PA, len: 0 }];
    check!(pt.map_sg(va, PG, &sg, 0, p) == Err(EINVAL));
    check!(pt.table_pages() == 0);
    let mut gather = Gather::new();
    check!(pt.unmap(va, 0, &mut gather) == Err(EINVAL));
    check!(pt.reprot(va, PG, p, &mut gather) == Err(ENOENT));
    check!(gather.is_empty());
    gather.flush(&RecordingTlb::default(), 1);
    check!(pt.translate(1 << 39) == Err(ERANGE));
    check!(pt.prealloc(1 << 39, PG) == Err(ERANGE));
    // Nothing above allocated or mapped anything.
    check!(pt.table_pages() == 0);
    check!(ok!(mappings(&pt)).is_empty());
    Ok(())
}

fn overlap_refused(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    // The second mapping would need new tables before reaching the occupied page: none may stay.
    let va = 4 * L2_SPAN - PG;
    ok!(pt.map(va, PA, PG, Prot::GPU_SHARED_RW));
    let before = pt.table_pages();
    check!(pt.map(L2_SPAN, PA, 3 * L2_SPAN, Prot::GPU_SHARED_RO) == Err(EEXIST));
    check!(pt.map_repeat(va, PA, PG, Prot::GPU_SHARED_RO) == Err(EEXIST));
    check!(pt.table_pages() == before);
    let m = ok!(mappings(&pt));
    check!(m.len() == 1);
    check!(
        m[0] == Mapping {
            va,
            pa: PA,
            size: PG,
            prot: Prot::GPU_SHARED_RW,
            attrs: PteTemplate::new(Prot::GPU_SHARED_RW, true).pte(0),
        }
    );
    Ok(())
}

fn boundaries(_: &Env) -> CaseResult {
    let g = Geometry::G13;
    // Global leaves only in the kernel VM's upper half: not in a lower half, not in a user VM.
    let mut global_lower = kernel_cfg();
    global_lower.range = g.lower_half();
    check!(PageTable::new(global_lower).err() == Some(EINVAL));
    let mut global_user = user_cfg();
    global_user.range = g.upper_half();
    global_user.global = true;
    check!(PageTable::new(global_user).err() == Some(EINVAL));
    let mut user = ok!(PageTable::new(user_cfg()));
    let mut kern = ok!(PageTable::new(kernel_cfg()));
    let lo = g.lower_half();
    let hi = g.upper_half();
    check!(hi.start == 0xffff_ff80_0000_0000);
    for (pt, half) in [(&mut user, lo), (&mut kern, hi)] {
        let first = half.start;
        let last = half.last - (PG - 1);
        ok!(pt.map(first, PA, PG, Prot::GPUFW_PRIV_RW));
        ok!(pt.map(last, PA + PG, PG, Prot::GPUFW_PRIV_RW));
        check!(ok!(pt.translate(first)).pa == PA);
        check!(ok!(pt.translate(half.last)).pa == PA + PG + PG - 1);
        // A range across an L1 boundary and the L2 boundaries inside it.
        let across = first + L1_SPAN - 2 * L2_SPAN - 2 * PG;
        let size = 2 * L2_SPAN + 5 * PG;
        ok!(pt.map(across, PA + 16 * PG, size, Prot::GPUFW_PRIV_RW));
        // First page: L2 + L3; last page: L2 + L3; across: three L3 below the first L2, then a
        // new L2 and L3 past the L1 boundary.
        check!(pt.table_pages() == 2 + 2 + 3 + 2);
        for off in [0, 2 * PG - PG, 2 * PG, L2_SPAN + 2 * PG, size - PG] {
            check!(ok!(pt.translate(across + off)).pa == PA + 16 * PG + off);
        }
        let m = ok!(mappings(pt));
        check!(m.len() == 3);
        check!(
            m[1] == Mapping {
                va: across,
                pa: PA + 16 * PG,
                size,
                prot: Prot::GPUFW_PRIV_RW,
                attrs: PteTemplate::new(Prot::GPUFW_PRIV_RW, !pt.config().global).pte(0),
            }
        );
        check!(ok!(unmap_flush(pt, across, size)) == (size / PG) as usize);
        check!(ok!(unmap_flush(pt, first, PG)) == 1);
        check!(ok!(unmap_flush(pt, last, PG)) == 1);
        check!(pt.table_pages() == 0);
    }
    Ok(())
}

fn scatter_and_repeat(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let sg = [
        PhysRange {
            addr: PA + 100 * PG,
            len: 3 * PG,
        },
        PhysRange {
            addr: PA + 10 * PG,
            len: PG,
        },
        PhysRange {
            addr: PA + 50 * PG,
            len: 4 * PG,
        },
    ];
    let va = 0x2_0000_0000;
    // Skip the first two pages: maps PA+102, PA+10, PA+50..52.
    ok!(pt.map_sg(va, 5 * PG, &sg, 2 * PG, Prot::GPU_SHARED_RW));
    let want = [102, 10, 50, 51, 52];
    for (i, w) in want.iter().enumerate() {
        check!(ok!(pt.translate(va + i as u64 * PG)).pa == PA + w * PG);
    }
    check!(ok!(mappings(&pt)).len() == 3);
    let sparse = 0x3_0000_0000;
    ok!(pt.map_repeat(sparse, PA, 3 * PG, Prot::GPU_SHARED_RO));
    for i in 0..3 {
        check!(ok!(pt.translate(sparse + i * PG)).pa == PA);
    }
    check!(ok!(mappings(&pt)).len() == 6);
    Ok(())
}

fn reprot_in_place(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = 0x4000_0000;
    ok!(pt.map(va, PA, 8 * PG, Prot::GPU_SHARED_RW));
    let tlb = RecordingTlb::default();
    let mut gather = Gather::new();
    ok!(pt.reprot(va + 2 * PG, 2 * PG, Prot::GPU_SHARED_RO, &mut gather));
    // A reprot over a hole changes nothing at all.
    check!(pt.reprot(va + 6 * PG, 4 * PG, Prot::GPU_SHARED_WO, &mut gather) == Err(ENOENT));
    gather.flush(&tlb, 3);
    check!(
        tlb.last.get()
            == Some((
                3,
                VaRange {
                    start: va + 2 * PG,
                    last: va + 4 * PG - 1
                }
            ))
    );
    check!(ok!(pt.translate(va + 2 * PG)).prot == Prot::GPU_SHARED_RO);
    check!(ok!(pt.translate(va + 3 * PG)).pa == PA + 3 * PG);
    check!(ok!(pt.translate(va + 6 * PG)).prot == Prot::GPU_SHARED_RW);
    check!(ok!(mappings(&pt)).len() == 3);
    Ok(())
}

fn unmap_frees_tables_after_flush(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = 5 * L1_SPAN;
    ok!(pt.map(va, PA, 3 * L2_SPAN, Prot::GPU_SHARED_RW));
    check!(pt.table_pages() == 4);
    let mut gather = Gather::new();
    check!(ok!(pt.unmap(va, L2_SPAN, &mut gather)) == 2048);
    check!(gather.freed_tables() == 1);
    check!(pt.table_pages() == 3);
    check!(ok!(pt.unmap(va + L2_SPAN, 2 * L2_SPAN, &mut gather)) == 4096);
    check!(gather.freed_tables() == 4);
    check!(pt.table_pages() == 0);
    check!(flushed(gather, 7) == Some((7, span(va, 3 * L2_SPAN))));
    Ok(())
}

/// `prune` unlinks the tables of its range that hold nothing (a leaf table, and a second-level
/// table left without tables), keeps the others and every mapping, and hands what it unlinked
/// to the gather, for after the flush: what a VM_BIND does with the tables it preallocated or
/// kept and did not use.
fn prune_frees_only_empty_tables(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    // The last leaf table under the first top-level entry, the first two under the second.
    let va = L1_SPAN - L2_SPAN;
    ok!(pt.prealloc(va, 3 * L2_SPAN));
    check!(pt.table_pages() == 5);
    ok!(pt.map(L1_SPAN, PA, PG, Prot::GPU_SHARED_RW));
    let mut gather = Gather::new();
    // The mapped page's leaf table holds a page: nothing goes.
    check!(ok!(pt.prune(L1_SPAN, PG, &mut gather)) == 0);
    check!(gather.is_empty());
    // The first empty leaf table with its second-level table, and the other empty leaf table.
    check!(ok!(pt.prune(va, 3 * L2_SPAN, &mut gather)) == 3);
    check!(pt.table_pages() == 2);
    check!(gather.freed_tables() == 3);
    check!(ok!(pt.translate(L1_SPAN)).pa == PA);
    check!(flushed(gather, 3) == Some((3, span(va, 3 * L2_SPAN))));
    check!(ok!(unmap_flush(&mut pt, L1_SPAN, PG)) == 1);
    check!(pt.table_pages() == 0);
    Ok(())
}

/// The range of `len` bytes at `start`.
fn span(start: u64, len: u64) -> VaRange {
    VaRange {
        start,
        last: start + len - 1,
    }
}

/// Flushes `gather` in ASID `asid`; returns the (ASID, range) invalidated, if one range was and
/// the flush left the gather empty.
fn flushed(mut gather: Gather, asid: u16) -> Option<(u16, VaRange)> {
    let tlb = RecordingTlb::default();
    gather.flush(&tlb, asid);
    tlb.last
        .get()
        .filter(|_| gather.is_empty() && tlb.count.get() == 1)
}

/// The physical addresses of every table page `pt` owns.
fn table_pages(pt: &PageTable) -> Result<KVec<PhysAddr>> {
    let mut v = KVec::new();
    let mut err = Ok(());
    pt.for_each_table_page(|pa| {
        if err.is_ok() {
            err = v.push(pa, GFP_KERNEL);
        }
    })?;
    err?;
    Ok(v)
}

/// Whether the page allocator holds the page at `pa` again (reference count 0): the leak check,
/// made with the allocator's own bookkeeping rather than with the driver's counters.
fn released(pa: PhysAddr) -> bool {
    Page::ref_count_at(pa) == Some(0)
}

fn table_pages_released(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    // Two L1 entries, three leaf tables: root + 2 L2 tables + 3 leaf tables.
    let va = 3 * L1_SPAN - L2_SPAN;
    ok!(pt.map(va, PA, 3 * L2_SPAN, Prot::GPU_SHARED_RW));
    let all = ok!(table_pages(&pt));
    check!(all.len() == 6);
    check!(all.len() == pt.table_pages() + 1);
    check!(all.iter().all(|&pa| !released(pa)));
    // Unmapping the first leaf table's span empties it and its L2 table.
    let mut gather = Gather::new();
    check!(ok!(pt.unmap(va, L2_SPAN, &mut gather)) == 2048);
    let kept = ok!(table_pages(&pt));
    check!(kept.len() == 4);
    let gone = || all.iter().filter(|pa| !kept.contains(pa));
    check!(gone().count() == 2);
    // Not before the TLB flush: the GPU may still walk them.
    check!(gone().all(|&pa| !released(pa)));
    gather.flush(&RecordingTlb::default(), 1);
    check!(gone().all(|&pa| released(pa)));
    check!(kept.iter().all(|&pa| !released(pa)));
    drop(pt);
    check!(all.iter().all(|&pa| released(pa)));
    Ok(())
}

fn prealloc_then_map(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = L1_SPAN - L2_SPAN;
    ok!(pt.prealloc(va, 2 * L2_SPAN));
    check!(pt.table_pages() == 2 + 2);
    ok!(pt.prealloc(va, 2 * L2_SPAN));
    check!(pt.table_pages() == 4);
    ok!(pt.map(va, PA, 2 * L2_SPAN, Prot::GPU_SHARED_RW));
    check!(pt.table_pages() == 4);
    check!(ok!(unmap_flush(&mut pt, va, 2 * L2_SPAN)) == 4096);
    check!(pt.table_pages() == 0);
    Ok(())
}

fn encoding_vectors(_: &Env) -> CaseResult {
    // Known descriptors, computed by hand from the format.
    let user_rw = PteTemplate::new(Prot::GPU_SHARED_RW, true).pte(0x8_0000_4000);
    check!(user_rw == 0x00c0_0008_0000_4c83);
    let fw_mmio = PteTemplate::new(Prot::FW_MMIO_RW, false).pte(0x2_3b10_4000);
    check!(fw_mmio == 0x00c0_0002_3b10_4447);
    let shared = PteTemplate::new(Prot::GPUFW_SHARED_RW, false).pte(0x3ff_ffff_c000);
    check!(shared == 0x00e0_03ff_ffff_c40b);
    for (_, prot) in Prot::NAMED {
        for ng in [false, true] {
            let raw = PteTemplate::new(prot, ng).pte(PA);
            let d = Desc::decode(raw, 3, Oas::BITS_40);
            check!(matches!(d, Desc::Page(p) if p.prot == prot && p.pa == PA && p.ng() == ng));
        }
    }
    check!(Prot::GPU_SHARED_RW.gpu_access() == Access::RW);
    check!(Prot::GPU_SHARED_RW.fw_access() == Access::NONE);
    check!(Prot::GPU_RO_FW_PRIV_RW.gpu_access() == Access::RO);
    check!(Prot::GPU_RO_FW_PRIV_RW.fw_access() == Access::RW);
    check!(Prot::FW_PRIV_RW.needs_fw_flush());
    check!(!Prot::GPU_SHARED_RW.needs_fw_flush());
    check!(!Prot::FW_SHARED_RW.needs_fw_flush());
    // The OAS of each G13 variant (uat-hardware.md: 40 bits on t8103, 42 on t600x).
    check!(Oas::of_variant(b'G') == Some(Oas::BITS_40));
    for v in [b'S', b'C', b'D'] {
        check!(Oas::of_variant(v) == Some(Oas::BITS_42));
    }
    check!(Oas::of_variant(b'X').is_none());
    Ok(())
}

/// Writes `value` into the descriptor of `va` at `level` in `pt`, a user page table, behind its
/// back: the corruption the cases below test. Returns what the descriptor held. Fails if no
/// table of that level maps `va`.
fn poke(pt: &PageTable, va: u64, level: Level, value: u64) -> core::result::Result<u64, Failure> {
    let g = pt.config().geometry;
    let mut table = pt.ttb();
    for l in TOP_LEVEL..level {
        // SAFETY: `table` is the root or a table `pt` links, alive while `pt` is borrowed.
        let page = ok!(unsafe { Page::borrow_phys(table) }.ok_or(EIO));
        let mut raw = [0u8; 8];
        // SAFETY: `raw` is 8 writable bytes, in bounds; nothing writes the table concurrently.
        ok!(unsafe { page.read_raw(raw.as_mut_ptr(), g.index(va, l) * 8, 8) });
        let Desc::Table(next) = Desc::decode(u64::from_le_bytes(raw), l, Oas::BITS_40) else {
            return Err("no table of that level maps the VA");
        };
        table = next;
    }
    // SAFETY: As above.
    let page = ok!(unsafe { Page::borrow_phys(table) }.ok_or(EIO));
    let off = g.index(va, level) * 8;
    let mut old = [0u8; 8];
    // SAFETY: As above.
    ok!(unsafe { page.read_raw(old.as_mut_ptr(), off, 8) });
    // SAFETY: 8 readable bytes, in bounds; `pt` is not used concurrently, and this is the
    // corruption under test.
    ok!(unsafe { page.write_raw(value.to_le_bytes().as_ptr(), off, 8) });
    Ok(u64::from_le_bytes(old))
}

/// [`poke`] of the leaf descriptor of `va`.
fn poke_leaf(pt: &PageTable, va: u64, value: u64) -> core::result::Result<u64, Failure> {
    poke(pt, va, LEAF_LEVEL, value)
}

fn corrupt_descriptor_reported(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = 0x8000_0000;
    // Three pages: an unmap of all the pages of a leaf table takes them unread (see
    // `occupancy_spans`).
    ok!(pt.map(va, PA, 3 * PG, Prot::GPU_SHARED_RW));
    // The second page's descriptor turned into a block-type one.
    let page = poke_leaf(&pt, va + PG, (PA + PG) | 0b01)?;
    check!(pt.translate(va + PG) == Err(EIO));
    check!(pt.map(va + PG, PA, PG, Prot::GPU_SHARED_RW) == Err(EIO));
    let mut gather = Gather::new();
    check!(pt.unmap(va, 2 * PG, &mut gather) == Err(EIO));
    check!(pt.reprot(va, 2 * PG, Prot::GPU_SHARED_RO, &mut gather) == Err(EIO));
    gather.flush(&RecordingTlb::default(), 1);
    // Nothing changed: the first page is still mapped as before.
    check!(
        ok!(pt.translate(va))
            == crate::pgtable::Translation {
                pa: PA,
                prot: Prot::GPU_SHARED_RW
            }
    );
    // Repaired: the table is as its occupancy says again.
    poke_leaf(&pt, va + PG, page)?;
    check!(pt.check_occupancy() == Ok(()));
    Ok(())
}

/// What a leaf table's occupancy records spares reading it: an unmap that holds every page of
/// the table takes them unread, also once an earlier unmap moved an end of the span (at either
/// end of the table), and also in a walk over several tables; a map reads no entry outside the
/// span. Shown with corrupt descriptors, which a read refuses (`EIO`); nothing follows a leaf
/// descriptor, and the tables are freed after the flush.
fn occupancy_spans(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let block = PA | 0b01;
    // The first end moves: pages 0..4 mapped, 0..2 unmapped, page 3 corrupt.
    let va = 3 * L2_SPAN;
    ok!(pt.map(va, PA, 4 * PG, Prot::GPU_SHARED_RW));
    check!(ok!(unmap_flush(&mut pt, va, 2 * PG)) == 2);
    poke_leaf(&pt, va + 3 * PG, block)?;
    // Page 3 alone is read.
    check!(unmap_flush(&mut pt, va + 3 * PG, PG) == Err(EIO));
    check!(pt.table_pages() == 2);
    // Pages 2..4 hold the span: the table goes unread, and its second-level table with it.
    check!(ok!(unmap_flush(&mut pt, va + 2 * PG, 2 * PG)) == 2);
    check!(pt.table_pages() == 0);
    // The last end moves: the table's last four entries mapped, the last two unmapped.
    let va = 4 * L2_SPAN - 4 * PG;
    ok!(pt.map(va, PA, 4 * PG, Prot::GPU_SHARED_RW));
    check!(ok!(unmap_flush(&mut pt, va + 2 * PG, 2 * PG)) == 2);
    poke_leaf(&pt, va, block)?;
    check!(unmap_flush(&mut pt, va, PG) == Err(EIO));
    check!(pt.table_pages() == 2);
    check!(ok!(unmap_flush(&mut pt, va, 2 * PG)) == 2);
    check!(pt.table_pages() == 0);
    // Across two leaf tables, in one walk: two pages at the end of the first (one corrupt), two
    // at the start of the second. A range that misses one of them reads the corrupt one.
    let va = 4 * L2_SPAN - 2 * PG;
    ok!(pt.map(va, PA, 4 * PG, Prot::GPU_SHARED_RW));
    poke_leaf(&pt, va + PG, block)?;
    check!(unmap_flush(&mut pt, va + PG, 3 * PG) == Err(EIO));
    check!(pt.table_pages() == 3);
    check!(ok!(unmap_flush(&mut pt, va, 4 * PG)) == 4);
    check!(pt.table_pages() == 0);
    // Outside the span: entry 5, corrupt, is not read by a map next to pages 0..2, which
    // overwrites it.
    let va = 3 * L2_SPAN;
    ok!(pt.map(va, PA, 2 * PG, Prot::GPU_SHARED_RW));
    poke_leaf(&pt, va + 5 * PG, block)?;
    check!(pt.translate(va + 5 * PG) == Err(EIO));
    ok!(pt.map(va + 5 * PG, PA, PG, Prot::GPU_SHARED_RW));
    check!(ok!(pt.translate(va + 5 * PG)).pa == PA);
    check!(pt.check_occupancy() == Ok(()));
    check!(ok!(unmap_flush(&mut pt, va, 6 * PG)) == 3);
    check!(pt.table_pages() == 0);
    Ok(())
}

/// A walk that stops at a corrupt table descriptor accounts for what it changed, exactly: an
/// unmap that finds one changes nothing, the count of table pages included, and a prune that
/// unlinked tables before finding one counts them and drops their occupancies.
fn failed_walks_accounted(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    // Under two top-level entries, the second walked last (so the caches name its tables).
    let (a, b) = (L2_SPAN, L1_SPAN + L2_SPAN);
    ok!(pt.map(a, PA, PG, Prot::GPU_SHARED_RW));
    ok!(pt.map(b, PA, PG, Prot::GPU_SHARED_RW));
    check!(pt.table_pages() == 4);
    let block = PA | 0b01;
    // The second-level descriptor of `a`'s leaf table, corrupt: the unmap's walk stops there.
    let old = poke(&pt, a, LEAF_LEVEL - 1, block)?;
    check!(unmap_flush(&mut pt, a, PG) == Err(EIO));
    check!(pt.table_pages() == 4);
    poke(&pt, a, LEAF_LEVEL - 1, old)?;
    // `a`'s tables emptied and kept; then a prune over both entries unlinks them and stops at
    // `b`'s corrupt descriptor.
    let mut gather = Gather::new();
    check!(ok!(pt.unmap_keep_tables(a, PG, &mut gather)) == 1);
    gather.flush(&RecordingTlb::default(), 1);
    let old = poke(&pt, b, LEAF_LEVEL - 1, block)?;
    let mut gather = Gather::new();
    check!(pt.prune(a, b + PG - a, &mut gather) == Err(EIO));
    // The two tables it unlinked wait for the flush, and are counted as gone.
    check!(flushed(gather, 1).is_some());
    check!(pt.table_pages() == 2);
    poke(&pt, b, LEAF_LEVEL - 1, old)?;
    check!(ok!(table_pages(&pt)).len() == 3);
    check!(pt.check_occupancy() == Ok(()));
    check!(ok!(pt.translate(b)).pa == PA);
    check!(ok!(unmap_flush(&mut pt, b, PG)) == 1);
    check!(pt.table_pages() == 0);
    Ok(())
}

/// An unmap over a leaf table that an unmap keeping its tables emptied unlinks it, whether the
/// caches find the table or a walk does: from a second-level table that keeps other tables, and
/// with the second-level table it empties.
fn empty_kept_tables_unlinked(_: &Env) -> CaseResult {
    let mut pt = ok!(PageTable::new(user_cfg()));
    let va = 5 * L2_SPAN;
    for cached in [true, false] {
        for neighbour in [false, true] {
            ok!(pt.map(va, PA, 2 * PG, Prot::GPU_SHARED_RW));
            if neighbour {
                ok!(pt.map(va + L2_SPAN, PA, PG, Prot::GPU_SHARED_RW));
            }
            let mut gather = Gather::new();
            check!(ok!(pt.unmap_keep_tables(va, 2 * PG, &mut gather)) == 2);
            gather.flush(&RecordingTlb::default(), 1);
            if !cached {
                // Under another top-level entry: the caches name its tables now.
                ok!(pt.map(L1_SPAN, PA, PG, Prot::GPU_SHARED_RW));
            }
            let kept = pt.table_pages();
            check!(ok!(unmap_flush(&mut pt, va, PG)) == 0);
            check!(pt.table_pages() == kept - if neighbour { 1 } else { 2 });
            check!(pt.check_occupancy() == Ok(()));
            if neighbour {
                check!(ok!(unmap_flush(&mut pt, va + L2_SPAN, PG)) == 1);
            }
            if !cached {
                check!(ok!(unmap_flush(&mut pt, L1_SPAN, PG)) == 1);
            }
            check!(pt.table_pages() == 0);
        }
    }
    Ok(())
}

fn borrowed_pages(env: &Env) -> CaseResult {
    // SAFETY: MMIO, no memory that can be hot-removed: refused.
    check!(unsafe { Page::borrow_phys(env.non_ram) }.is_none());
    // The carve-out has `struct page`s, but reserved memory is not the page allocator's.
    // SAFETY: Reserved memory, which cannot be hot-removed: refused.
    check!(unsafe { Page::borrow_phys(env.carveout) }.is_none());
    // SAFETY: As above.
    check!(unsafe { Page::borrow_phys(env.carveout + CARVEOUT_SIZE - PG) }.is_none());
    // Data pages mapped by physical address come back as the very same pages.
    let mut pt = ok!(PageTable::new(user_cfg()));
    let a = ok!(Page::alloc_page(GFP_KERNEL | __GFP_ZERO));
    let b = ok!(Page::alloc_page(GFP_KERNEL | __GFP_ZERO));
    let sg = [
        PhysRange {
            addr: a.phys(),
            len: PG,
        },
        PhysRange {
            addr: b.phys(),
            len: PG,
        },
    ];
    let va = 0x7_0000_0000;
    ok!(pt.map_sg(va, 2 * PG, &sg, 0, Prot::GPU_SHARED_RW));
    let msg = *b"UAT!";
    // SAFETY: We own `b`, `msg` is 4 readable bytes.
    ok!(unsafe { b.write_raw(msg.as_ptr(), 0x10, 4) });
    let t = ok!(pt.translate(va + PG + 0x10));
    check!(t.pa & (PG - 1) == 0x10);
    let tp = t.pa - 0x10;
    // SAFETY: `b` is alive and owned by this case for the whole borrow.
    let borrowed = ok!(unsafe { Page::borrow_phys(tp) }.ok_or(EIO));
    check!(borrowed.phys() == b.phys());
    let mut got = [0u8; 4];
    // SAFETY: `got` is 4 writable bytes, no concurrent writer.
    ok!(unsafe { borrowed.read_raw(got.as_mut_ptr(), 0x10, 4) });
    check!(got == msg);
    check!(ok!(unmap_flush(&mut pt, va, 2 * PG)) == 2);
    // A page given away by physical address and claimed back is the same allocation.
    let pa = Page::into_phys(a);
    // SAFETY: `pa` comes from `into_phys` just above and is claimed once.
    let a = unsafe { Page::from_phys(pa) };
    check!(a.phys() == pa);
    Ok(())
}

fn borrowed_top_table(_: &Env) -> CaseResult {
    // A bootloader-owned upper table with its own mapping at L1 index 0: the driver manages
    // L1 index 2 only, and leaves both the page and the foreign entry alone.
    let boot = ok!(Page::alloc_page(GFP_KERNEL | __GFP_ZERO));
    let foreign = 0x0000_0000_0001_0003u64 | (PA & !0x3fff);
    // SAFETY: We own `boot`; 8 readable bytes.
    ok!(unsafe { boot.write_raw(foreign.to_le_bytes().as_ptr(), 0, 8) });
    let g = Geometry::G13;
    let cfg = PtConfig {
        geometry: g,
        range: VaRange {
            start: 0xffff_ffa0_0000_0000,
            last: 0xffff_ffaf_ffff_ffff,
        },
        oas: Oas::BITS_40,
        user: false,
        global: true,
    };
    {
        // SAFETY: `boot` is a page we own.
        let map = ok!(unsafe { Region::new("pagetables", boot.phys(), PG, PAGE_SIZE, false) });
        // SAFETY: `map` maps a top-level table, and nothing else touches L1 index 2.
        let mut pt = ok!(unsafe { PageTable::new_borrowed(map, cfg) });
        check!(pt.ttb() == boot.phys());
        ok!(pt.map(0xffff_ffa0_0000_0000, PA, 4 * PG, Prot::FW_PRIV_RW));
        check!(pt.map(0xffff_ff80_0000_0000, PA, PG, Prot::FW_PRIV_RW) == Err(ERANGE));
        check!(pt.table_pages() == 2);
    }
    let mut raw = [0u8; 16 * 8];
    // SAFETY: `raw` is writable, nothing else uses `boot`.
    ok!(unsafe { boot.read_raw(raw.as_mut_ptr(), 0, raw.len()) });
    check!(raw[..8] == foreign.to_le_bytes());
    check!(raw[8..].iter().all(|&b| b == 0));
    Ok(())
}

/// Every case, in order.
pub const CASES: &[Case] = &[
    Case {
        name: "encoding_vectors",
        run: encoding_vectors,
    },
    Case {
        name: "map_translate_unmap",
        run: map_translate_unmap,
    },
    Case {
        name: "bad_arguments",
        run: bad_arguments,
    },
    Case {
        name: "overlap_refused",
        run: overlap_refused,
    },
    Case {
        name: "boundaries",
        run: boundaries,
    },
    Case {
        name: "scatter_and_repeat",
        run: scatter_and_repeat,
    },
    Case {
        name: "reprot_in_place",
        run: reprot_in_place,
    },
    Case {
        name: "unmap_frees_tables_after_flush",
        run: unmap_frees_tables_after_flush,
    },
    Case {
        name: "prune_frees_only_empty_tables",
        run: prune_frees_only_empty_tables,
    },
    Case {
        name: "table_pages_released",
        run: table_pages_released,
    },
    Case {
        name: "prealloc_then_map",
        run: prealloc_then_map,
    },
    Case {
        name: "corrupt_descriptor_reported",
        run: corrupt_descriptor_reported,
    },
    Case {
        name: "occupancy_spans",
        run: occupancy_spans,
    },
    Case {
        name: "failed_walks_accounted",
        run: failed_walks_accounted,
    },
    Case {
        name: "empty_kept_tables_unlinked",
        run: empty_kept_tables_unlinked,
    },
    Case {
        name: "borrowed_pages",
        run: borrowed_pages,
    },
    Case {
        name: "borrowed_top_table",
        run: borrowed_top_table,
    },
];
