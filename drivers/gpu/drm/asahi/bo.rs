// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: shmem-backed GEM objects (`drm::gem::shmem`).
//!
//! The GPU reaches a buffer through its scatter table, whose DMA addresses are physical addresses
//! (there is no IOMMU in front of the GPU: the UAT is its MMU). Building the table pins the
//! pages; they stay pinned as long as the object lives, which outlives every mapping of it (each
//! GPUVM mapping holds a reference to its object), so what the page tables point at stays
//! allocated.
//!
//! The first bind of a buffer turns its scatter table into an [`SgList`], kept with the buffer:
//! every bind after it finds the entries it maps by binary search, in time independent of the
//! buffer's size. The buffer is then also listed in the device's `buffers` ([`BufferPages`]), so
//! that debugfs can say which buffer, at which offset, a VM's page maps (`gpu_mem.rs`).

use crate::driver::{AsahiDevice, AsahiDriver};
use crate::pgtable::PhysRange;
use crate::sg::SgList;
use kernel::device::{Bound, Device};
use kernel::drm::gem::{self, shmem, BaseObject};
use kernel::prelude::*;
use kernel::sync::{aref::ARef, Arc, SetOnce};
use kernel::uapi;

/// Driver data of a buffer object.
#[pin_data(PinnedDrop)]
pub(crate) struct BoData {
    /// `DRM_ASAHI_GEM_*` flags from GEM_CREATE.
    pub(crate) flags: u32,
    /// The device, whose `buffers` list this buffer while it lives.
    dev: ARef<AsahiDevice>,
    /// The buffer's pages, once pinned ([`scatter`]). Set once, under the lock of the device's
    /// `buffers`, in the same critical section that lists the buffer there with the same list.
    sg: SetOnce<Arc<SgList>>,
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
        if self.sg.as_ref().is_some() {
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
    /// Its pages, in buffer order: the buffer's own list.
    pub(crate) pages: Arc<SgList>,
}

impl BufferPages {
    /// The offset in the buffer of the byte at `pa`, if it is one of the buffer's.
    pub(crate) fn offset_of(&self, pa: u64) -> Option<u64> {
        self.pages.offset_of(pa)
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
            sg: SetOnce::new(),
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

/// The pages of `bo`, pinning them on the first call, which also lists the buffer in its
/// device's `buffers`. Only the first call reads the scatter table.
///
/// The list holds the DMA addresses of the scatter table, which are physical addresses and stay
/// valid as long as the buffer lives (it stays pinned); `dev`, bound, is the device they are
/// for.
pub(crate) fn scatter<'a>(bo: &'a Bo, dev: &Device<Bound>) -> Result<&'a SgList> {
    if let Some(sg) = bo.sg.as_ref() {
        return Ok(sg);
    }
    match first_scatter(bo, dev) {
        Ok(()) => {}
        // Another bind may have listed the buffer meanwhile: its list does.
        Err(e) => return bo.sg.as_ref().map(|sg| &**sg).ok_or(e),
    }
    // Set by now, by this call or by another under the lock.
    bo.sg.as_ref().map(|sg| &**sg).ok_or(EIO)
}

/// The slow path of [`scatter`]: builds the list from the scatter table and, unless another
/// call did meanwhile, sets it and lists the buffer.
fn first_scatter(bo: &Bo, dev: &Device<Bound>) -> Result {
    let sgt = bo.sg_table(dev)?;
    let mut sg = SgList::with_capacity(sgt.iter().count())?;
    for seg in sgt.iter() {
        #[allow(clippy::useless_conversion)] // `ResourceSize` is u32 on some 32-bit configs.
        let len = u64::from(seg.dma_len());
        sg.push(PhysRange {
            addr: seg.dma_address(),
            len,
        })?;
    }
    let sg = Arc::new(sg, GFP_KERNEL)?;
    let label = bo.create_mmap_offset()?;
    let mut buffers = bo.dev.buffers.lock();
    // Only ever set under this lock: unset now, it is ours to set.
    if bo.sg.as_ref().is_none() {
        buffers.push(
            BufferPages {
                key: bo.key(),
                label,
                pages: sg.clone(),
            },
            GFP_KERNEL,
        )?;
        let set = bo.sg.populate(sg);
        // No one else sets it, and it was unset.
        debug_assert!(set);
    }
    Ok(())
}
