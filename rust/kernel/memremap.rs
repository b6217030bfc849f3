// SPDX-License-Identifier: GPL-2.0

//! Mappings of reserved memory regions (`memremap`).
//!
//! C header: [`include/linux/io.h`](srctree/include/linux/io.h)
//!
//! Regions that firmware and bootloader share with the kernel (a `reserved-memory` node given by
//! physical address and size) are RAM, but no `struct page` user owns them: a driver maps them
//! whole with `memremap` and accesses them through the returned kernel address.

use crate::bindings;
use crate::error::{code::*, Result};
use crate::page::PhysAddr;
use core::ptr::NonNull;

/// How a region is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// Normal write-back cached memory (`MEMREMAP_WB`), coherent with the CPU caches.
    WriteBack,
    /// Uncached, write-combining (`MEMREMAP_WC`): for memory another agent reads without
    /// snooping the CPU caches.
    WriteCombine,
}

/// A mapped reserved-memory region, unmapped on drop.
///
/// # Invariants
///
/// `ptr` is the kernel address `memremap` returned for `size` bytes at `phys`; it stays mapped
/// until `self` is dropped.
pub struct MemRemap {
    ptr: NonNull<u8>,
    phys: PhysAddr,
    size: usize,
}

// SAFETY: The mapping is a plain kernel address range, usable from any thread.
unsafe impl Send for MemRemap {}
// SAFETY: `MemRemap` only hands out raw pointers; synchronising through them is the user's job.
unsafe impl Sync for MemRemap {}

impl MemRemap {
    /// Maps `size` bytes of physical memory at `phys`. Fails with `EINVAL` for an empty or
    /// wrapping range and with `ENOMEM` when `memremap` refuses (for example a range that is not
    /// RAM mapped write-back).
    pub fn new(phys: PhysAddr, size: usize, caching: Caching) -> Result<Self> {
        if size == 0 || phys.checked_add(size as PhysAddr).is_none() {
            return Err(EINVAL);
        }
        let flags = match caching {
            Caching::WriteBack => bindings::MEMREMAP_WB,
            Caching::WriteCombine => bindings::MEMREMAP_WC,
        };
        // SAFETY: `memremap` accepts any range and returns NULL when it cannot map it.
        let ptr = unsafe { bindings::memremap(phys, size, flags as _) };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(ENOMEM)?;
        Ok(Self { ptr, phys, size })
    }

    /// The kernel address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The physical address of the first byte.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The size of the mapping in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for MemRemap {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `ptr` came from `memremap` and is unmapped only here.
        unsafe { bindings::memunmap(self.ptr.as_ptr().cast()) };
    }
}
