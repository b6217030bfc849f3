// SPDX-License-Identifier: GPL-2.0

//! The simulated GPU: walks the UAT tables as the hardware does and caches what it finds.
//!
//! Written from the hardware facts (`shared/docs/uat-hardware.md`), not from the driver's code:
//! its own descriptor decoding, permission table and TLBI operand decoding, so that a
//! misunderstanding in the driver shows up as a disagreement here.
//!
//! - Contexts come from the TTBAT by physical address: slot `i` is the 16-byte entry at
//!   `ttbat + 16 * i`; the TTB word gives the table and the ASID. A context, once loaded, is
//!   kept until an invalidation of its ASID (or of everything) drops it: rewriting the TTBAT
//!   alone does not change what the GPU uses, so a bind or unbind must invalidate the ASID.
//! - Tables are read by physical address from simulated RAM, 64-bit little-endian words.
//! - The TLB caches leaf translations per ASID (global ones, nG = 0, for every ASID) and the
//!   walk cache caches leaf-table addresses per ASID and 32 MiB region; both keep entries until a
//!   TLB maintenance instruction drops them, however stale.

use asahi::tlbi::{Tlbi, TlbiIssue};
use kernel::sim;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const PAGE_SHIFT: u32 = 14;
const PAGE: u64 = 1 << PAGE_SHIFT;
const L2_SHIFT: u32 = 25;
const L1_SHIFT: u32 = 36;

/// How the GPU may access a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Perm {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

/// The GPU's (not the firmware's) access from a leaf descriptor, per the permission table.
pub fn gpu_perm(desc: u64) -> Perm {
    let ap = (desc >> 6) & 3;
    let pxn = (desc >> 53) & 1 != 0;
    let uxn = (desc >> 54) & 1 != 0;
    // The GPU-access bit, and the access flag: the facts doc has the driver always set it, and
    // a descriptor without it faults (an access-flag fault), as on the CPU.
    let os = (desc >> 55) & 1 != 0 && (desc >> 10) & 1 != 0;
    let (read, write) = match (ap, uxn, pxn) {
        (0, false, false) => (false, false),
        (0, false, true) => (true, false),
        (0, true, false) => (false, true),
        (0, true, true) => (true, true),
        (1, true, true) => (true, false),
        (1, _, _) => (false, false),
        (2, false, false) => (true, false),
        (2, false, true) => (false, true),
        (2, true, false) => (true, true),
        _ => (false, false),
    };
    Perm {
        read: read && os,
        write: write && os,
    }
}

/// Why an access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The slot's TTB for this half is not valid.
    NoContext {
        /// Faulting VA.
        va: u64,
        /// Context slot.
        slot: usize,
    },
    /// The VA is in neither half.
    AddressSize {
        /// Faulting VA.
        va: u64,
        /// Context slot.
        slot: usize,
    },
    /// An invalid descriptor at `level`.
    Unmapped {
        /// Faulting VA.
        va: u64,
        /// Context slot.
        slot: usize,
        /// Table level (1..=3).
        level: u32,
    },
    /// A table that is back in the page allocator: the walk followed a pointer (a descriptor, or
    /// its walk cache) to a freed table. Never for a correct driver, which invalidates before it
    /// frees.
    FreedTable {
        /// Faulting VA.
        va: u64,
        /// Context slot.
        slot: usize,
        /// The level of the freed table.
        level: u32,
    },
    /// A descriptor that is neither valid nor invalid (or points outside RAM).
    Corrupt {
        /// Faulting VA.
        va: u64,
        /// Context slot.
        slot: usize,
        /// Table level.
        level: u32,
        /// The descriptor.
        desc: u64,
    },
    /// The page does not allow the access.
    Permission {
        /// Faulting VA.
        va: u64,
        /// Context slot.
        slot: usize,
        /// Whether it was a write.
        write: bool,
    },
}

#[derive(Clone, Copy, Debug)]
struct TlbEntry {
    /// Output page.
    pa: u64,
    /// The leaf descriptor.
    desc: u64,
    global: bool,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// Accesses (one per page touched).
    pub accesses: u64,
    /// Accesses served from the TLB.
    pub tlb_hits: u64,
    /// Table walks.
    pub walks: u64,
    /// Faults.
    pub faults: u64,
    /// TLB maintenance instructions received, by kind: page, range, ASID, all.
    pub tlbi: [u64; 4],
    /// `dsb` completions.
    pub syncs: u64,
    /// TLB maintenance instructions issued with no store barrier since the last `dsb`
    /// completion ([`TlbiIssue::prepare`]): on the hardware, a walk could still read the old
    /// descriptors they were meant to drop. Zero for a correct driver.
    pub unordered_tlbi: u64,
    /// TLB entries that a page or range invalidation dropped while the tables already mapped
    /// their page elsewhere: a valid descriptor replaced by one with another output address, with
    /// no invalidation in between (no break-before-make). Until the invalidation, the GPU could
    /// use either translation. Zero for a correct driver.
    pub bbm_violations: u64,
    /// Accesses that walked a freed table ([`Fault::FreedTable`]). Zero for a correct driver.
    pub freed_table_walks: u64,
}

struct State {
    /// Leaf entries by (ASID, VA page number); global entries under ASID `None`.
    tlb: HashMap<(Option<u16>, u64), TlbEntry>,
    /// Leaf-table addresses by (ASID, VA >> 25).
    walk: HashMap<(u16, u64), u64>,
    /// The contexts loaded from the TTBAT, by (slot, upper half): the ASID and root table of
    /// each, kept until an invalidation of that ASID or of everything. A TTBAT write alone does
    /// not reach a context the GPU already uses.
    contexts: HashMap<(usize, bool), (u16, u64)>,
    stats: GpuStats,
    faults: Vec<Fault>,
    ignore_tlbi: bool,
    /// Whether a store barrier was issued since the last `dsb` completion.
    prepared: bool,
}

/// The simulated GPU.
pub struct Gpu {
    ttbat: u64,
    oas: u32,
    ias: u32,
    state: Mutex<State>,
}

fn sign_extend_55(va_page_bits: u64) -> u64 {
    if va_page_bits & (1 << 55) != 0 {
        va_page_bits | (0xff << 56)
    } else {
        va_page_bits
    }
}

impl Gpu {
    /// A GPU whose TTBAT is at `ttbat`, with an output address size of `oas` bits and an input
    /// address size of `ias` bits per half.
    pub fn new(ttbat: u64, oas: u32, ias: u32) -> Arc<Gpu> {
        Arc::new(Gpu {
            ttbat,
            oas,
            ias,
            state: Mutex::new(State {
                tlb: HashMap::new(),
                walk: HashMap::new(),
                contexts: HashMap::new(),
                stats: GpuStats::default(),
                faults: Vec::new(),
                ignore_tlbi: false,
                prepared: false,
            }),
        })
    }

    /// A broken GPU for tests of the tests: TLB maintenance is ignored.
    pub fn set_ignore_tlbi(&self, ignore: bool) {
        self.state.lock().unwrap().ignore_tlbi = ignore;
    }

    /// The counters.
    pub fn stats(&self) -> GpuStats {
        self.state.lock().unwrap().stats
    }

    /// Break-before-make violations counted so far (reset): for a test that makes one on
    /// purpose, since a [`crate::Soc`] that saw any fails when dropped.
    pub fn take_bbm_violations(&self) -> u64 {
        std::mem::take(&mut self.state.lock().unwrap().stats.bbm_violations)
    }

    /// Faults reported so far (drained).
    pub fn take_faults(&self) -> Vec<Fault> {
        std::mem::take(&mut self.state.lock().unwrap().faults)
    }

    fn oa(&self, desc: u64) -> u64 {
        desc & ((1u64 << self.oas) - 1) & !(PAGE - 1)
    }

    /// The leaf descriptor of `va` in context `slot` as the tables hold it now: a walk that
    /// neither uses nor fills the TLB and the walk cache (what the firmware, which walks the
    /// tables itself, sees).
    pub fn peek(&self, slot: usize, va: u64) -> Result<u64, Fault> {
        let (_, root) = self.context(slot, va)?;
        let leaf_table = self.leaf_table(root, va, slot)?;
        self.read_leaf(leaf_table, va, slot)
    }

    /// Whether `va` is in the upper half; `AddressSize` if it is in neither (or `slot` is not
    /// one of the 64).
    fn half(&self, slot: usize, va: u64) -> Result<bool, Fault> {
        let half_bits = va >> self.ias;
        if !(half_bits == 0 || half_bits == u64::MAX >> self.ias) || slot >= 64 {
            return Err(Fault::AddressSize { va, slot });
        }
        Ok(va >> 63 != 0)
    }

    /// The ASID and root table of the half of context `slot` that `va` is in, from the TTBAT.
    fn context(&self, slot: usize, va: u64) -> Result<(u16, u64), Fault> {
        let upper = self.half(slot, va)?;
        let ttb = sim::read_phys_u64(self.ttbat + 16 * slot as u64 + if upper { 8 } else { 0 })
            .ok_or(Fault::NoContext { va, slot })?;
        if ttb & 1 == 0 {
            return Err(Fault::NoContext { va, slot });
        }
        Ok(((ttb >> 48) as u16, ttb & ((1 << 48) - 1) & !1))
    }

    /// The context of `slot` for `va`'s half as the GPU uses it: loaded from the TTBAT the first
    /// time, then kept until an invalidation drops it (an invalid TTB is not kept).
    fn loaded_context(&self, st: &mut State, slot: usize, va: u64) -> Result<(u16, u64), Fault> {
        let key = (slot, self.half(slot, va)?);
        if let Some(&c) = st.contexts.get(&key) {
            return Ok(c);
        }
        let c = self.context(slot, va)?;
        st.contexts.insert(key, c);
        Ok(c)
    }

    /// The leaf table that maps `va` below `root`: the two upper levels, walked.
    fn leaf_table(&self, root: u64, va: u64, slot: usize) -> Result<u64, Fault> {
        let low = va & ((1u64 << self.ias) - 1);
        let l1 = self.read_desc(root, low >> L1_SHIFT, va, slot, 1)?;
        let l2 = self.read_desc(self.oa(l1), (low >> L2_SHIFT) & 0x7ff, va, slot, 2)?;
        Ok(self.oa(l2))
    }

    /// The leaf descriptor of `va` in `leaf_table`.
    fn read_leaf(&self, leaf_table: u64, va: u64, slot: usize) -> Result<u64, Fault> {
        let index = ((va & ((1u64 << self.ias) - 1)) >> PAGE_SHIFT) & 0x7ff;
        self.read_desc(leaf_table, index, va, slot, 3)
    }

    /// Translates `va` in context `slot` for a read or a write, through the TLB.
    pub fn translate(&self, slot: usize, va: u64, write: bool) -> Result<u64, Fault> {
        let mut st = self.state.lock().unwrap();
        st.stats.accesses += 1;
        let r = self.translate_locked(&mut st, slot, va, write);
        if let Err(f) = r {
            st.stats.faults += 1;
            if matches!(f, Fault::FreedTable { .. }) {
                st.stats.freed_table_walks += 1;
            }
            st.faults.push(f);
        }
        r
    }

    fn translate_locked(
        &self,
        st: &mut State,
        slot: usize,
        va: u64,
        write: bool,
    ) -> Result<u64, Fault> {
        let (asid, root) = self.loaded_context(st, slot, va)?;
        let vpn = va >> PAGE_SHIFT;
        let entry = st
            .tlb
            .get(&(Some(asid), vpn))
            .or_else(|| st.tlb.get(&(None, vpn)))
            .copied();
        let entry = match entry {
            Some(e) => {
                st.stats.tlb_hits += 1;
                e
            }
            None => {
                st.stats.walks += 1;
                let e = self.walk(st, slot, asid, root, va)?;
                st.tlb
                    .insert((if e.global { None } else { Some(asid) }, vpn), e);
                e
            }
        };
        let perm = gpu_perm(entry.desc);
        if !(if write { perm.write } else { perm.read }) {
            return Err(Fault::Permission { va, slot, write });
        }
        Ok(entry.pa | (va & (PAGE - 1)))
    }

    fn read_desc(
        &self,
        table: u64,
        index: u64,
        va: u64,
        slot: usize,
        level: u32,
    ) -> Result<u64, Fault> {
        if sim::is_free(table) {
            return Err(Fault::FreedTable { va, slot, level });
        }
        let desc = sim::read_phys_u64(table + 8 * index).ok_or(Fault::Corrupt {
            va,
            slot,
            level,
            desc: table,
        })?;
        match desc & 3 {
            3 => Ok(desc),
            0 => Err(Fault::Unmapped { va, slot, level }),
            _ => Err(Fault::Corrupt {
                va,
                slot,
                level,
                desc,
            }),
        }
    }

    fn walk(
        &self,
        st: &mut State,
        slot: usize,
        asid: u16,
        root: u64,
        va: u64,
    ) -> Result<TlbEntry, Fault> {
        let region = va >> L2_SHIFT;
        let leaf_table = match st.walk.get(&(asid, region)) {
            Some(&t) => t,
            None => {
                let t = self.leaf_table(root, va, slot)?;
                st.walk.insert((asid, region), t);
                t
            }
        };
        let leaf = self.read_leaf(leaf_table, va, slot)?;
        Ok(TlbEntry {
            pa: self.oa(leaf),
            desc: leaf,
            global: leaf & (1 << 11) == 0,
        })
    }

    /// Reads `buf.len()` bytes at `va` in context `slot`.
    pub fn read(&self, slot: usize, va: u64, buf: &mut [u8]) -> Result<(), Fault> {
        self.access(slot, va, buf.len(), false, |pa, off, len| {
            sim::read_phys(pa, &mut buf[off..off + len])
        })
    }

    /// Writes `data` at `va` in context `slot`.
    pub fn write(&self, slot: usize, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.access(slot, va, data.len(), true, |pa, off, len| {
            sim::write_phys(pa, &data[off..off + len])
        })
    }

    fn access(
        &self,
        slot: usize,
        va: u64,
        len: usize,
        write: bool,
        mut io: impl FnMut(u64, usize, usize) -> Option<()>,
    ) -> Result<(), Fault> {
        // Translate every page first: an access that faults transfers nothing.
        let mut pages = Vec::new();
        let mut off = 0usize;
        while off < len {
            let cur = va.wrapping_add(off as u64);
            let n = ((PAGE - (cur & (PAGE - 1))) as usize).min(len - off);
            pages.push((self.translate(slot, cur, write)?, off, n));
            off += n;
        }
        for (pa, off, n) in pages {
            if io(pa, off, n).is_none() {
                let f = Fault::Corrupt {
                    va: va + off as u64,
                    slot,
                    level: 4,
                    desc: pa,
                };
                let mut st = self.state.lock().unwrap();
                st.stats.faults += 1;
                st.faults.push(f);
                return Err(f);
            }
        }
        Ok(())
    }

    /// Executes a TLB maintenance instruction, decoding its operand as the hardware does.
    pub fn tlbi(&self, op: Tlbi) {
        let mut st = self.state.lock().unwrap();
        let kind = match op {
            Tlbi::Va(_) => 0,
            Tlbi::Range(_) => 1,
            Tlbi::Asid(_) => 2,
            Tlbi::All => 3,
        };
        st.stats.tlbi[kind] += 1;
        if st.ignore_tlbi {
            return;
        }
        match op {
            Tlbi::All => {
                st.tlb.clear();
                st.walk.clear();
                st.contexts.clear();
            }
            Tlbi::Asid(x) => {
                let asid = (x >> 48) as u16;
                st.tlb.retain(|&(a, _), _| a != Some(asid));
                st.walk.retain(|&(a, _), _| a != asid);
                st.contexts.retain(|_, &mut (a, _)| a != asid);
            }
            Tlbi::Va(x) => {
                let asid = (x >> 48) as u16;
                let va = sign_extend_55((x & ((1 << 44) - 1)) << 12);
                let vpn = va >> PAGE_SHIFT;
                self.check_bbm(&mut st, asid, |p| p == vpn);
                st.tlb
                    .retain(|&(a, p), _| !(p == vpn && (a.is_none() || a == Some(asid))));
                st.walk
                    .retain(|&(a, r), _| !(a == asid && r == va >> L2_SHIFT));
            }
            Tlbi::Range(x) => {
                let asid = (x >> 48) as u16;
                if (x >> 46) & 3 != 2 {
                    // Not the 16 KiB granule: the instruction invalidates nothing we cached.
                    return;
                }
                let mask = (1u64 << 37) - 1;
                let base = x & mask;
                let (scale, num) = ((x >> 44) & 3, (x >> 39) & 31);
                let pages = (num + 1) << (5 * scale + 1);
                let hit = |vpn: u64| {
                    let p = vpn & mask;
                    p >= base && p - base < pages
                };
                self.check_bbm(&mut st, asid, hit);
                st.tlb
                    .retain(|&(a, p), _| !(hit(p) && (a.is_none() || a == Some(asid))));
                // A walk-cache entry goes if the range touches its 32 MiB region.
                let per_region = 1u64 << (L2_SHIFT - PAGE_SHIFT);
                st.walk.retain(|&(a, r), _| {
                    let first = (r * per_region) & mask;
                    let touches = first < base + pages && base < first + per_region;
                    !(a == asid && touches)
                });
            }
        }
    }
}

impl Gpu {
    /// Counts the entries of `asid` (and the global ones) whose page `hit` selects, about to be
    /// dropped by a page or range invalidation, that the tables now map to another page: their
    /// descriptor was replaced while valid ([`GpuStats::bbm_violations`]). Entries are keyed by
    /// ASID, which this driver makes its slot number; global ones are the kernel context's
    /// (slot 0). Invalidations of a whole ASID or of everything are not checked: they follow
    /// context switches, where the slot's tables change as a whole.
    fn check_bbm(&self, st: &mut State, asid: u16, hit: impl Fn(u64) -> bool) {
        let mut replaced = 0;
        for (&(a, vpn), e) in &st.tlb {
            if !hit(vpn) || !(a.is_none() || a == Some(asid)) {
                continue;
            }
            let slot = a.map_or(0, usize::from);
            if let Ok(desc) = self.peek(slot, vpn << PAGE_SHIFT) {
                if self.oa(desc) != e.pa {
                    replaced += 1;
                }
            }
        }
        st.stats.bbm_violations += replaced;
    }
}

/// The GPU as the driver's TLB maintenance target.
#[derive(Clone)]
pub struct GpuTlbi(pub Arc<Gpu>);

impl TlbiIssue for GpuTlbi {
    fn prepare(&self) {
        self.0.state.lock().unwrap().prepared = true;
    }

    fn issue(&self, op: Tlbi) {
        {
            let mut st = self.0.state.lock().unwrap();
            if !st.prepared {
                st.stats.unordered_tlbi += 1;
            }
        }
        self.0.tlbi(op)
    }

    fn sync(&self) {
        let mut st = self.0.state.lock().unwrap();
        st.stats.syncs += 1;
        st.prepared = false;
    }
}
