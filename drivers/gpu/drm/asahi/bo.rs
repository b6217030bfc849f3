// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: shmem-backed GEM objects (`drm::gem::shmem`).
//!
//! The GPU reaches a buffer through its scatter table, whose DMA addresses are physical addresses
//! (there is no IOMMU in front of the GPU: the UAT is its MMU). Building the table pins the
//! pages; they stay pinned as long as the object lives, which outlives every mapping of it (each
//! GPUVM mapping holds a reference to its object), so what the page tables point at stays
//! allocated.

use crate::driver::{AsahiDevice, AsahiDriver};
use crate::pgtable::PhysRange;
use kernel::device::{Bound, Device};
use kernel::drm::gem::{self, shmem};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::uapi;

/// Driver data of a buffer object.
#[pin_data]
pub(crate) struct BoData {
    /// `DRM_ASAHI_GEM_*` flags from GEM_CREATE.
    pub(crate) flags: u32,
}

/// Arguments to [`BoData`]'s constructor.
pub(crate) struct BoArgs {
    flags: u32,
}

impl gem::DriverObject for BoData {
    type Driver = AsahiDriver;
    type Args = BoArgs;

    fn new(_dev: &AsahiDevice, _size: usize, args: BoArgs) -> impl PinInit<Self, Error> {
        try_pin_init!(Self { flags: args.flags })
    }
}

/// A buffer object of this driver.
pub(crate) type Bo = shmem::Object<BoData>;

/// Creates a buffer object of `size` bytes (page aligned): write-combined unless
/// `DRM_ASAHI_GEM_WRITEBACK`; sharing `resv`'s reservation object if given (a VM-private one).
pub(crate) fn new_bo(
    ddev: &AsahiDevice,
    size: usize,
    flags: u32,
    resv: Option<&Bo>,
) -> Result<ARef<Bo>> {
    let writeback = flags & uapi::drm_asahi_gem_flags_DRM_ASAHI_GEM_WRITEBACK != 0;
    Bo::new(
        ddev,
        size,
        shmem::ObjectConfig {
            map_wc: !writeback,
            parent_resv_obj: resv,
        },
        BoArgs { flags },
    )
}

/// The physical ranges of `bo` (pinning its pages), merged where contiguous.
pub(crate) fn phys_ranges(bo: &Bo, dev: &Device<Bound>) -> Result<KVec<PhysRange>> {
    let sgt = bo.sg_table(dev)?;
    let mut ranges: KVec<PhysRange> = KVec::new();
    for seg in sgt.iter() {
        #[allow(clippy::useless_conversion)] // `ResourceSize` is u32 on some 32-bit configs.
        let len = u64::from(seg.dma_len());
        let addr = seg.dma_address();
        match ranges.last_mut() {
            Some(last) if last.addr + last.len == addr => last.len += len,
            _ => ranges.push(PhysRange { addr, len }, GFP_KERNEL)?,
        }
    }
    Ok(ranges)
}
