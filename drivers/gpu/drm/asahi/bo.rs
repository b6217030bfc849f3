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
//! that debugfs can say which buffer, at which offset, a VM's page maps (`gpu_mem.rs`). Its entry
//! knows its index there, so that freeing a buffer costs no time per buffer of the device.

use crate::driver::{AsahiDevice, AsahiDriver};
use crate::file::DrmFile;
use crate::pgtable::PhysRange;
use crate::sg::SgList;
use kernel::device::{Bound, Device};
use kernel::drm::gem::{self, shmem, BaseObject};
use kernel::prelude::*;
use kernel::sync::atomic::{Atomic, Relaxed};
use kernel::sync::{aref::ARef, Arc, SetOnce};
use kernel::uapi;

/// Driver data of a buffer object.
#[pin_data(PinnedDrop)]
pub(crate) struct BoData {
    /// `DRM_ASAHI_GEM_*` flags from GEM_CREATE.
    pub(crate) flags: u32,
    /// The device, whose `buffers` list this buffer while it lives.
    dev: ARef<AsahiDevice>,
    /// The buffer's pages and its place in the device's `buffers`, once pinned ([`scatter`]).
    /// Set once, under the lock of `buffers`, in the same critical section that lists the
    /// buffer there.
    listing: SetOnce<Listing>,
}

/// A pinned buffer's pages and where the device's `buffers` lists it.
struct Listing {
    /// The pages, shared with the buffer's entry in `buffers`.
    sg: Arc<SgList>,
    /// The index of that entry, shared with it: updated, under the lock of `buffers`, when the
    /// entry moves.
    place: Arc<Atomic<usize>>,
}

#[pinned_drop]
impl PinnedDrop for BoData {
    fn drop(self: Pin<&mut Self>) {
        let Some(listing) = self.listing.as_ref() else {
            return;
        };
        let mut buffers = self.dev.buffers.lock();
        // This buffer's entry is at `i`; the last entry takes its place (or is it).
        let i = listing.place.load(Relaxed);
        let Some(last) = buffers.pop() else {
            return;
        };
        if let Some(entry) = buffers.get_mut(i) {
            debug_assert!(Arc::ptr_eq(&entry.place, &listing.place));
            last.place.store(i, Relaxed);
            *entry = last;
        }
    }
}

/// Where the pages of a pinned buffer are, for debugfs to name the pages a VM maps.
pub(crate) struct BufferPages {
    /// Its index in the list ([`Listing::place`]).
    place: Arc<Atomic<usize>>,
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
            listing: SetOnce::new(),
        })
    }

    /// A client closed its handle: the buffer is unmapped from the client's VMs.
    ///
    /// A file holds one handle per buffer (PRIME import of a buffer the file has returns its
    /// handle), except through GEM_FLINK and GEM_OPEN on the primary node, which Mesa does not
    /// use: closing either of two such handles unmaps the buffer.
    fn close(obj: &Bo, file: &DrmFile) {
        file.inner().close_object(obj);
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

/// Whether `bo` may be mapped in the VM whose root object is `root` (`None`: the kernel VM): a
/// VM-private buffer (`DRM_ASAHI_GEM_VM_PRIVATE`) only in its own VM, whose reservation object
/// it shares; any other buffer anywhere.
pub(crate) fn bindable_in(bo: &Bo, root: Option<&Bo>) -> bool {
    if bo.flags & uapi::drm_asahi_gem_flags_DRM_ASAHI_GEM_VM_PRIVATE == 0 {
        return true;
    }
    root.is_some_and(|root| bo.shares_resv_with(root))
}

/// The pages of `bo`, pinning them on the first call, which also lists the buffer in its
/// device's `buffers`. Only the first call reads the scatter table.
///
/// The list holds the DMA addresses of the scatter table, which are physical addresses and stay
/// valid as long as the buffer lives (it stays pinned); `dev`, bound, is the device they are
/// for.
pub(crate) fn scatter<'a>(bo: &'a Bo, dev: &Device<Bound>) -> Result<&'a SgList> {
    if let Some(listing) = bo.listing.as_ref() {
        return Ok(&listing.sg);
    }
    let done = first_scatter(bo, dev);
    // Set by now, by this call or by another under the lock; if this one failed, another's
    // list does as well.
    match bo.listing.as_ref() {
        Some(listing) => Ok(&listing.sg),
        None => Err(done.err().unwrap_or(EIO)),
    }
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
    let place = Arc::new(Atomic::new(0), GFP_KERNEL)?;
    let label = bo.create_mmap_offset()?;
    let mut buffers = bo.dev.buffers.lock();
    // Only ever set under this lock: unset now, it is ours to set.
    if bo.listing.as_ref().is_none() {
        place.store(buffers.len(), Relaxed);
        buffers.push(
            BufferPages {
                place: place.clone(),
                label,
                pages: sg.clone(),
            },
            GFP_KERNEL,
        )?;
        let set = bo.listing.populate(Listing { sg, place });
        // No one else sets it, and it was unset.
        debug_assert!(set);
    }
    Ok(())
}
