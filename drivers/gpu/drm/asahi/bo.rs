// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: shmem-backed GEM objects (`drm::gem::shmem`).
//!
//! The GPU reaches a buffer through its scatter table, whose DMA addresses are physical addresses
//! (there is no IOMMU in front of the GPU: the UAT is its MMU). Building the table pins the
//! pages; they stay pinned as long as the object lives, which outlives every mapping of it (each
//! GPUVM mapping holds a reference to its object), so what the page tables point at stays
//! allocated.
//!
//! Each buffer pinned this way is also listed in the device's `buffers` ([`BufferPages`]), so
//! that debugfs can say which buffer, at which offset, a VM's page maps (`gpu_mem.rs`).

use crate::driver::{AsahiDevice, AsahiDriver};
use crate::pgtable::PhysRange;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::device::{Bound, Device};
use kernel::drm::gem::{self, shmem, BaseObject};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::uapi;

/// Driver data of a buffer object.
#[pin_data(PinnedDrop)]
pub(crate) struct BoData {
    /// `DRM_ASAHI_GEM_*` flags from GEM_CREATE.
    pub(crate) flags: u32,
    /// The device, whose `buffers` list this buffer while it lives.
    dev: ARef<AsahiDevice>,
    /// Whether the device's `buffers` list this buffer: set once, under that list's lock, so
    /// that the binds after the first do not search the list.
    listed: AtomicBool,
}

impl BoData {
    /// What identifies this buffer in the device's `buffers`: the address of its driver data,
    /// which does not move (it is pinned) and is not reused before [`BoData`]'s drop.
    fn key(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }
}

#[pinned_drop]
impl PinnedDrop for BoData {
    fn drop(self: Pin<&mut Self>) {
        if self.listed.load(Ordering::Relaxed) {
            let key = self.key();
            self.dev.buffers.lock().retain(|b| b.key != key);
        }
    }
}

/// Where the pages of a pinned buffer are, for debugfs to name the pages a VM maps.
pub(crate) struct BufferPages {
    /// [`BoData::key`].
    key: usize,
    /// The buffer's fake mmap offset (GEM_MMAP_OFFSET): how its client knows it.
    pub(crate) label: u64,
    /// Its pages, in buffer order.
    pub(crate) ranges: KVec<PhysRange>,
}

impl BufferPages {
    /// The offset in the buffer of the byte at `pa`, if it is one of the buffer's.
    pub(crate) fn offset_of(&self, pa: u64) -> Option<u64> {
        crate::pgtable::sg_offset_of(&self.ranges, pa)
    }
}

/// Arguments to [`BoData`]'s constructor.
pub(crate) struct BoArgs {
    flags: u32,
}

impl gem::DriverObject for BoData {
    type Driver = AsahiDriver;
    type Args = BoArgs;

    fn new(dev: &AsahiDevice, _size: usize, args: BoArgs) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            flags: args.flags,
            dev: ARef::from(dev),
            listed: AtomicBool::new(false),
        })
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

/// The physical ranges of `bo` (pinning its pages), merged where contiguous. The buffer is
/// listed in the device's `buffers` from then on.
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
    list(bo, &ranges)?;
    Ok(ranges)
}

/// Lists `bo`, whose pages are `ranges`, in its device's `buffers` unless it is there already.
fn list(bo: &Bo, ranges: &[PhysRange]) -> Result {
    // Set only under the lock, and never cleared: a stale `false` only costs the lock below.
    if bo.listed.load(Ordering::Relaxed) {
        return Ok(());
    }
    let label = bo.create_mmap_offset()?;
    let mut copy = KVec::with_capacity(ranges.len(), GFP_KERNEL)?;
    copy.extend_from_slice(ranges, GFP_KERNEL)?;
    let mut buffers = bo.dev.buffers.lock();
    if !bo.listed.load(Ordering::Relaxed) {
        buffers.push(
            BufferPages {
                key: bo.key(),
                label,
                ranges: copy,
            },
            GFP_KERNEL,
        )?;
        bo.listed.store(true, Ordering::Relaxed);
    }
    Ok(())
}
