// SPDX-License-Identifier: GPL-2.0

//! The TTBAT: the table of translation table bases, one entry per GPU context slot.
//!
//! Entry `i` holds the two table bases the GPU walks for context `i` (`ttb0` for the lower
//! half, `ttb1` for the upper half). The firmware reads it when it switches contexts, so every
//! write happens under the handoff lock, which the [`HandoffGuard`] parameter proves.

use crate::handoff::HandoffGuard;
use crate::region::Region;
use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::io::PhysAddr;
use kernel::prelude::*;

/// Number of context slots.
pub const SLOTS: usize = 64;
/// The kernel/firmware context's slot.
pub const KERNEL_SLOT: usize = 0;
/// Valid bit of a TTB word.
pub const TTB_VALID: u64 = 1;
/// Bits 47:1 hold the table base.
const TTB_BASE_MASK: u64 = ((1 << 48) - 1) & !TTB_VALID;

/// A TTB word: table base, valid, ASID in bits 63:48.
pub fn ttb_word(table: PhysAddr, asid: u16) -> u64 {
    (table & TTB_BASE_MASK) | TTB_VALID | (u64::from(asid) << 48)
}

/// One TTBAT entry.
#[repr(C)]
pub struct TtbatEntry {
    /// Lower-half table base.
    pub ttb0: AtomicU64,
    /// Upper-half table base.
    pub ttb1: AtomicU64,
}

const _: () = assert!(size_of::<TtbatEntry>() == 16);
/// `slot` if it is a context slot, else `EINVAL` with a warning: a slot number is never
/// wrapped (`slot % SLOTS` would write another context's entry).
pub fn checked_slot(slot: usize) -> Result<usize> {
    if slot < SLOTS {
        Ok(slot)
    } else {
        pr_warn!("TTBAT slot {} out of range (0..{})\n", slot, SLOTS);
        Err(EINVAL)
    }
}

/// Size of the TTBAT.
pub const TTBAT_SIZE: usize = SLOTS * size_of::<TtbatEntry>();

/// The mapped TTBAT.
pub struct Ttbat {
    region: Region,
}

impl Ttbat {
    /// Maps the `ttbs` reserved-memory region.
    ///
    /// # Safety
    ///
    /// `phys` and `size` must describe memory that only this object and the GPU firmware use
    /// while it lives (the device tree's `ttbs` reserved-memory region): the object writes it.
    pub unsafe fn new(phys: PhysAddr, size: u64) -> Result<Ttbat> {
        // SAFETY: The caller gives the `ttbs` region, memory of ours to map.
        let region = unsafe { Region::new("ttbs", phys, size, TTBAT_SIZE, false) }?;
        Ok(Ttbat { region })
    }

    /// Entry `slot`; a slot out of range (a caller's bug) is warned about and `None`, never
    /// wrapped onto another slot.
    fn entry(&self, slot: usize) -> Option<&TtbatEntry> {
        let slot = checked_slot(slot).ok()?;
        // SAFETY: `Region::new` checked that the page-aligned mapping holds `TTBAT_SIZE` bytes;
        // it lives as long as `self`, and by the contract of `new` only we and the firmware use
        // it. Entries are shared with the firmware, hence atomics.
        let table = unsafe { &*(self.region.as_ptr() as *const [TtbatEntry; SLOTS]) };
        table.get(slot)
    }

    /// Reads entry `slot` as `(ttb0, ttb1)`; a slot out of range reads as empty (and warns).
    pub fn get(&self, _lock: &HandoffGuard<'_>, slot: usize) -> (u64, u64) {
        self.entry(slot).map_or((0, 0), |e| {
            (
                e.ttb0.load(Ordering::Relaxed),
                e.ttb1.load(Ordering::Relaxed),
            )
        })
    }

    /// Writes entry `slot`; a slot out of range writes nothing (and warns).
    pub fn set(&self, _lock: &HandoffGuard<'_>, slot: usize, ttb0: u64, ttb1: u64) {
        if let Some(e) = self.entry(slot) {
            e.ttb0.store(ttb0, Ordering::Relaxed);
            e.ttb1.store(ttb1, Ordering::Relaxed);
        }
    }

    /// Clears entry `slot` if its `ttb0` is still `ttb0`; returns whether it did.
    pub fn clear_if(&self, lock: &HandoffGuard<'_>, slot: usize, ttb0: u64) -> bool {
        if self.get(lock, slot).0 != ttb0 {
            return false;
        }
        self.set(lock, slot, 0, 0);
        true
    }
}
