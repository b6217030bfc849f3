// SPDX-License-Identifier: GPL-2.0

//! TLB invalidation by broadcast TLB maintenance instructions.
//!
//! The GPU's TLBs obey the CPU's outer-shareable TLB maintenance: `tlbi vae1os` for one page,
//! `tlbi rvae1os` for a range (FEAT_TLBIRANGE, 16 KiB granule), `tlbi aside1os` for an ASID and
//! `tlbi vmalle1os` for everything, then `dsb sy`; before them, `dsb st` makes the descriptor
//! writes they follow visible to the GPU's walker. This module turns an invalidation request into
//! those instructions' operands ([`Tlbi`]), independently of how they are issued ([`TlbiIssue`]):
//! on arm64 by the instructions themselves ([`Arm64`]), on the host by a simulated GPU that
//! decodes the same operands. The operand arithmetic is thus tested by the host suite exactly as
//! the kernel runs it.

use crate::geometry::{VaRange, UAT_PGBIT};
use crate::tlb::TlbInvalidate;

/// TG field of a range operand for the 16 KiB granule.
const TG_16K: u64 = 2;
/// Bits of a range operand's base address field (page number, VA[50:14]).
const RANGE_BASE_BITS: u32 = 37;
/// Bits of a page operand's address field (VA[55:12]).
const VA_BITS: u32 = 44;
/// Largest number of pages one range instruction covers: (NUM + 1) << (5 * SCALE + 1) with NUM =
/// 31 and SCALE = 3, 2^21 pages (32 GiB).
pub const MAX_RANGE_PAGES: u64 = 32 << 16;
/// Above this many pages, invalidating the whole ASID is cheaper than walking the range (and the
/// range's instructions would be issued by the dozen).
pub const ASID_THRESHOLD_PAGES: u64 = 8 * MAX_RANGE_PAGES;

/// One TLB maintenance instruction with its operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tlbi {
    /// `tlbi vae1os`: ASID[63:48], VA[55:12] in bits 43:0.
    Va(u64),
    /// `tlbi rvae1os`: ASID[63:48], TG[47:46], SCALE[45:44], NUM[43:39], TTL[38:37],
    /// BaseADDR[36:0] (the first page number).
    Range(u64),
    /// `tlbi aside1os`: ASID[63:48].
    Asid(u64),
    /// `tlbi vmalle1os`.
    All,
}

impl Tlbi {
    /// The page operand for `va` in `asid`.
    pub fn va(asid: u16, va: u64) -> Tlbi {
        Tlbi::Va((u64::from(asid) << 48) | ((va >> 12) & ((1 << VA_BITS) - 1)))
    }

    /// The range operand for `(num + 1) << (5 * scale + 1)` pages from `va`.
    pub fn range(asid: u16, va: u64, scale: u64, num: u64) -> Tlbi {
        Tlbi::Range(
            (u64::from(asid) << 48)
                | (TG_16K << 46)
                | ((scale & 3) << 44)
                | ((num & 31) << 39)
                | ((va >> UAT_PGBIT) & ((1 << RANGE_BASE_BITS) - 1)),
        )
    }

    /// The ASID operand.
    pub fn asid(asid: u16) -> Tlbi {
        Tlbi::Asid(u64::from(asid) << 48)
    }

    /// Pages covered by a range operand's SCALE and NUM.
    pub fn range_pages(operand: u64) -> u64 {
        let scale = (operand >> 44) & 3;
        let num = (operand >> 39) & 31;
        (num + 1) << (5 * scale + 1)
    }
}

/// The instructions that invalidate `range` in `asid`: range instructions from the largest scale
/// down, each advancing the base past what it covered, a page instruction for an odd last page,
/// or one ASID-wide instruction above [`ASID_THRESHOLD_PAGES`].
///
/// ASID 0 is the kernel VM's, whose upper half's mappings are global: an ASID-wide instruction
/// leaves global entries in place (page and range instructions do drop them), so there the
/// fallback is `tlbi vmalle1os`, for its non-global lower half too (rare: a kernel unmap of more
/// than the threshold).
pub fn range_ops(asid: u16, range: VaRange) -> RangeOps {
    let pages = (range.last - range.start) / (1 << UAT_PGBIT) + 1;
    RangeOps {
        asid,
        va: range.start,
        pages: if pages > ASID_THRESHOLD_PAGES {
            0
        } else {
            pages
        },
        whole_asid: pages > ASID_THRESHOLD_PAGES,
    }
}

/// Iterator returned by [`range_ops`].
pub struct RangeOps {
    asid: u16,
    va: u64,
    pages: u64,
    whole_asid: bool,
}

impl Iterator for RangeOps {
    type Item = Tlbi;

    fn next(&mut self) -> Option<Tlbi> {
        if self.whole_asid {
            self.whole_asid = false;
            return Some(match self.asid {
                0 => Tlbi::All,
                asid => Tlbi::asid(asid),
            });
        }
        match self.pages {
            0 => None,
            1 => {
                self.pages = 0;
                Some(Tlbi::va(self.asid, self.va))
            }
            pages => {
                // The largest scale whose unit (2^(5 * scale + 1) pages) fits, then as many units
                // as fit in one instruction (NUM + 1 <= 32).
                let scale = (0..4u64)
                    .rev()
                    .find(|s| pages >> (5 * s + 1) != 0)
                    .unwrap_or(0);
                let unit_shift = 5 * scale + 1;
                let units = (pages >> unit_shift).min(32);
                let covered = units << unit_shift;
                let op = Tlbi::range(self.asid, self.va, scale, units - 1);
                // Wraps past the top of the upper half after its last page, where `va` is not
                // used again; never with pages left.
                debug_assert!(
                    self.pages == covered || self.va.checked_add(covered << UAT_PGBIT).is_some()
                );
                self.va = self.va.wrapping_add(covered << UAT_PGBIT);
                self.pages -= covered;
                Some(op)
            }
        }
    }
}

/// Something that executes TLB maintenance instructions.
pub trait TlbiIssue {
    /// Makes every descriptor written before it visible to the table walkers, the GPU's
    /// included, before any instruction issued after it (`dsb st`). Without it, a walk could
    /// still read a cleared descriptor's old value after the invalidation, and cache it again.
    fn prepare(&self);
    /// Issues one instruction (not yet waited for).
    fn issue(&self, op: Tlbi);
    /// Waits until every issued instruction has completed everywhere (`dsb sy`).
    fn sync(&self);
}

/// [`TlbInvalidate`] by broadcast instructions.
pub struct Broadcast<I: TlbiIssue>(pub I);

/// Every invalidation is ordered after the descriptor writes before it ([`TlbiIssue::prepare`])
/// and waited for ([`TlbiIssue::sync`]).
impl<I: TlbiIssue> TlbInvalidate for Broadcast<I> {
    fn invalidate_page(&self, asid: u16, va: u64) {
        self.0.prepare();
        self.0.issue(Tlbi::va(asid, va));
        self.0.sync();
    }

    fn invalidate_range(&self, asid: u16, range: VaRange) {
        self.0.prepare();
        range_ops(asid, range).for_each(|op| self.0.issue(op));
        self.0.sync();
    }

    fn invalidate_asid(&self, asid: u16) {
        self.0.prepare();
        self.0.issue(Tlbi::asid(asid));
        self.0.sync();
    }

    fn invalidate_all(&self) {
        self.0.prepare();
        self.0.issue(Tlbi::All);
        self.0.sync();
    }
}

/// The CPU's own TLB maintenance instructions, broadcast to the GPU.
///
/// Encoded as `sys` instructions (`sys #0, c8, cM, #op2, Xt`) so that no assembler extension
/// has to be enabled.
///
/// # Invariants
///
/// The CPU has FEAT_TLBIOS and FEAT_TLBIRANGE ([`Arm64::new`] checks).
#[cfg(CONFIG_ARM64)]
#[derive(Clone, Copy)]
pub struct Arm64(());

#[cfg(CONFIG_ARM64)]
impl Arm64 {
    /// The CPU's TLB maintenance, if it has the instructions issued here: FEAT_TLBIOS and
    /// FEAT_TLBIRANGE (`ID_AA64ISAR0_EL1.TLB` is 2). Every Apple SoC with an AGX GPU has both;
    /// without them (another CPU model in QEMU) the first invalidation would be an undefined
    /// instruction. The register of the CPU it runs on answers for all, which holds where the
    /// driver binds (Apple's cores all have the same TLB maintenance); the kernel's
    /// system-wide view (`system_supports_tlb_range()`) has no Rust binding in 7.3. Kernel
    /// builds only (`CONFIG_ARM64`): user space may not read the register.
    pub fn new() -> Option<Arm64> {
        let isar0: u64;
        // SAFETY: Reading an ID register has no side effect, and EL1 may read it.
        unsafe {
            core::arch::asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0,
                             options(nomem, nostack, preserves_flags))
        };
        // INVARIANT: TLB, bits 59:56: 1 is FEAT_TLBIOS, 2 adds FEAT_TLBIRANGE.
        ((isar0 >> 56) & 0xf >= 2).then_some(Arm64(()))
    }
}

#[cfg(CONFIG_ARM64)]
impl TlbiIssue for Arm64 {
    fn prepare(&self) {
        // SAFETY: A barrier has no effect on memory safety.
        unsafe { core::arch::asm!("dsb st", options(nostack, preserves_flags)) };
    }

    fn issue(&self, op: Tlbi) {
        // SAFETY: TLB maintenance only drops cached translations; it has no effect on memory
        // safety. The operands are plain values.
        unsafe {
            match op {
                Tlbi::Va(x) => core::arch::asm!("sys #0, c8, c1, #1, {}", in(reg) x,
                                                options(nostack, preserves_flags)),
                Tlbi::Range(x) => core::arch::asm!("sys #0, c8, c5, #1, {}", in(reg) x,
                                                   options(nostack, preserves_flags)),
                Tlbi::Asid(x) => core::arch::asm!("sys #0, c8, c1, #2, {}", in(reg) x,
                                                  options(nostack, preserves_flags)),
                Tlbi::All => {
                    core::arch::asm!("sys #0, c8, c1, #0, xzr", options(nostack, preserves_flags))
                }
            }
        }
    }

    fn sync(&self) {
        // SAFETY: A barrier has no effect on memory safety.
        unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
    }
}
