// SPDX-License-Identifier: GPL-2.0

//! A stand-in for the GPU firmware, for machines that have none (QEMU) and for the KUnit suites.
//!
//! It plays the firmware's part of the handoff protocol synchronously: its magic is written
//! before the handshake, and a cache-flush request is answered (state 1 -> 2) when its message is
//! sent. It never runs a context, so it never holds the handoff lock. Built only with
//! `CONFIG_DRM_ASAHI_FW_STANDIN` or the KUnit suites; never on real hardware, where the firmware
//! answers through the mailbox.

use crate::handoff::{flush_state, FlushMsg, FwChannel, HANDOFF_SIZE, MAGIC};
use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::io::mem::{MemRemap, MemRemapType};
use kernel::io::PhysAddr;
use kernel::prelude::*;

/// The byte offset of the firmware's magic in the handoff region.
const MAGIC_FW: usize = 8;

/// The byte offset of flush request `slot`'s state.
fn flush_state_offset(slot: usize) -> usize {
    0x20 + 0x18 * slot
}

/// The firmware's part, played synchronously on the handoff region.
pub struct StandInFw {
    handoff: MemRemap,
    /// The last flush message.
    pub last: Cell<Option<FlushMsg>>,
}

impl StandInFw {
    /// Maps the handoff region at `handoff` and, if `up`, writes the firmware's magic there
    /// (otherwise clears it: a firmware that never boots).
    ///
    /// # Safety
    ///
    /// `handoff` must be the address of the handoff region, at least [`HANDOFF_SIZE`] bytes of
    /// memory that only the driver and this stand-in use (see [`MemRemap::new`]).
    pub unsafe fn new(handoff: PhysAddr, up: bool) -> Result<StandInFw> {
        // SAFETY: The caller gives the handoff region, memory to map.
        let handoff = unsafe { MemRemap::new(handoff, HANDOFF_SIZE, MemRemapType::WriteCombine) }?;
        let fw = StandInFw {
            handoff,
            last: Cell::new(None),
        };
        fw.word(MAGIC_FW)
            .store(if up { MAGIC } else { 0 }, Ordering::Release);
        Ok(fw)
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        // SAFETY: Callers pass 8-byte aligned offsets inside the `HANDOFF_SIZE` bytes mapped; the
        // region is shared with the driver, so it is accessed atomically.
        unsafe { &*(self.handoff.as_ptr().add(off) as *const AtomicU64) }
    }

    /// What the CPU announced itself with in the handshake (`magic_ap`).
    pub fn cpu_magic(&self) -> u64 {
        self.word(0).load(Ordering::Acquire)
    }

    /// The state of flush request `slot`.
    pub fn flush_state(&self, slot: usize) -> u64 {
        self.word(flush_state_offset(slot)).load(Ordering::Acquire)
    }
}

impl FwChannel for StandInFw {
    fn flush_cache(&self, msg: &FlushMsg) -> Result {
        self.last.set(Some(*msg));
        let slot = usize::try_from(msg.slot)?;
        if slot >= crate::handoff::FLUSH_SLOTS {
            return Err(EINVAL);
        }
        let state = self.word(flush_state_offset(slot));
        if state.load(Ordering::Acquire) != flush_state::REQUESTED {
            return Err(EIO);
        }
        state.store(flush_state::DONE, Ordering::Release);
        Ok(())
    }
}
