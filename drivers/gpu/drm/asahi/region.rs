// SPDX-License-Identifier: GPL-2.0

//! Reserved-memory regions the bootloader hands the driver (`ttbs`, `pagetables`, `handoff`).
//!
//! The device tree gives each as a physical address and a size. They are checked before use:
//! a region that is misaligned or too small for what the driver puts in it would make the GPU
//! firmware and the driver disagree on where things are, silently.

use kernel::io::mem::{MemRemap, MemRemapType};
use kernel::io::PhysAddr;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// Checks the region `name`: `EINVAL` (with a message naming it) unless `phys` is page aligned
/// and `size` at least `min_size`.
pub fn check_region(name: &str, phys: PhysAddr, size: u64, min_size: usize) -> Result {
    if phys & (PAGE_SIZE as PhysAddr - 1) != 0 {
        pr_err!(
            "reserved region {} at {:#x} is not page aligned\n",
            name,
            phys
        );
        return Err(EINVAL);
    }
    if size < min_size as u64 {
        pr_err!(
            "reserved region {} is {:#x} bytes, at least {:#x} are needed\n",
            name,
            size,
            min_size
        );
        return Err(EINVAL);
    }
    Ok(())
}

/// A mapped, validated reserved-memory region.
pub struct Region {
    map: MemRemap,
}

impl Region {
    /// Validates (see [`check_region`]) and maps the region `name`; mapping failures are passed
    /// on.
    ///
    /// # Safety
    ///
    /// `phys` and `size` must describe memory, all of it, that its owner gives the caller to map
    /// (a reserved-memory region of the device tree, or pages the caller owns): see
    /// [`MemRemap::new`].
    pub unsafe fn new(
        name: &str,
        phys: PhysAddr,
        size: u64,
        min_size: usize,
        uncached: bool,
    ) -> Result<Region> {
        check_region(name, phys, size, min_size)?;
        let caching = if uncached {
            MemRemapType::WriteCombine
        } else {
            MemRemapType::WriteBack
        };
        // SAFETY: The caller guarantees that the region is memory to map; `min_size` is within
        // it (checked above).
        let map = unsafe { MemRemap::new(phys, min_size, caching) }.inspect_err(|e| {
            pr_err!(
                "cannot map reserved region {} at {:#x}: {:?}\n",
                name,
                phys,
                e
            );
        })?;
        Ok(Region { map })
    }

    /// The mapped address of the region's start.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The physical address of the region's start.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        self.map.phys()
    }

    /// How many bytes of the region are mapped.
    #[inline]
    pub fn size(&self) -> usize {
        self.map.size()
    }
}
