// SPDX-License-Identifier: GPL-2.0

//! Memory mappings: the host twin of `MemRemap` in `rust/kernel/io/mem.rs` (added by this
//! project's patch series).
//!
//! The simulated RAM is one host allocation, so a "mapping" is a pointer into it; what another
//! agent (the simulated firmware or GPU) writes there is seen through it, as with a real mapping.

use crate::error::{code::*, Result};
use crate::io::PhysAddr;
use crate::sim;
use core::ptr::NonNull;

/// How [`MemRemap`] maps memory (the host has no caches to bypass; kept for the same API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemRemapType {
    /// Normal write-back cached memory (`MEMREMAP_WB`).
    WriteBack,
    /// Uncached, write-combining (`MEMREMAP_WC`).
    WriteCombine,
}

/// A mapped reserved-memory region.
///
/// # Invariants
///
/// `ptr` points at `size` bytes of simulated RAM at `phys`, alive for the whole process.
pub struct MemRemap {
    ptr: NonNull<u8>,
    phys: PhysAddr,
    size: usize,
}

// SAFETY: The mapping is a plain address range, usable from any thread.
unsafe impl Send for MemRemap {}
// SAFETY: `MemRemap` only hands out raw pointers; synchronising through them is the user's job.
unsafe impl Sync for MemRemap {}

impl MemRemap {
    /// Maps `size` bytes of physical memory at `phys`: `EINVAL` for an empty or wrapping range,
    /// for one that is partly System RAM (pages of the page allocator) and for System RAM asked
    /// for anything but write-back, as in the kernel; `ENOMEM` when any of it is not RAM (where
    /// the kernel's would map a hole: a range the safety requirements rule out).
    ///
    /// # Safety
    ///
    /// As in the kernel: the range must be memory, not device registers, and all of it memory
    /// (wholly System RAM, or wholly a region its owner gives the caller to map this way).
    pub unsafe fn new(phys: PhysAddr, size: usize, kind: MemRemapType) -> Result<Self> {
        let len = PhysAddr::try_from(size)?;
        if size == 0 {
            return Err(EINVAL);
        }
        let last = phys.checked_add(len - 1).ok_or(EINVAL)?;
        match sim::system_ram(phys, last) {
            None => return Err(EINVAL),
            Some(true) if kind != MemRemapType::WriteBack => return Err(EINVAL),
            _ => {}
        }
        let ptr = sim::phys_to_host(phys, last).ok_or(ENOMEM)?;
        Ok(Self { ptr, phys, size })
    }

    /// The address of the first byte.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The physical address of the first byte.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The size of the mapping in bytes.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }
}
