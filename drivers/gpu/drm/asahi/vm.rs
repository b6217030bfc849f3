// SPDX-License-Identifier: GPL-2.0

//! GPU VMs of the render node: `drm::gpuvm` keeps each VM's VA tree (immediate mode), and its
//! map, unmap and remap steps drive the VM's UAT page tables.
//!
//! The steps themselves are [`crate::vm_steps`], and a whole VM_BIND [`crate::vm_bind`], both
//! shared with the host build; this file has the render node's side: the locks, the GEM buffers
//! and the VMs' lifetime.
//!
//! A VM_BIND first allocates everything its ops can need: the buffers' scatter tables (which pin
//! their pages), the GPUVM's `vm_bo`s and `drm_gpuva`s, and every page table of the ranges they
//! map ([`crate::uat::Uat::vm_prealloc_unlocked`], with the device's `uat` lock released). So
//! under the locks the steps cannot fail for want of memory: a VM_BIND that fails with `ENOMEM`
//! changed nothing. A client's page tables, dummy pages and `drm_gpuva`s are charged to its memory
//! cgroup.

use crate::bo::{self, Bo};
use crate::driver::{AsahiDevice, AsahiDriver, DevUat, Firmware, VmTag};
use crate::geometry::{Geometry, VaRange, UAT_PGSZ};
use crate::gpuvm::{BindOp, Handle};
use crate::pgtable::PageTable;
use crate::pte::Prot;
use crate::slots::VmId;
use crate::tlbi::{Arm64, Broadcast};
use crate::vm_bind::UatAccess;
use crate::vm_steps::{self, VmSteps};
use core::ops::Range;
use kernel::device::{Bound, Device};
use kernel::drm::gpuvm::{GpuVm, UniqueRefGpuVm};
use kernel::new_mutex;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::{Arc, Mutex, UniqueArc};

pub(crate) use crate::gpuvm::{window, KERNEL_MIN_SIZE};

/// One bind or unbind, validated by the rules shared with the host ([`Vm::check_bind`]).
pub(crate) type Bind = crate::gpuvm::Bind<ARef<Bo>>;

/// The GPUVM driver data of a VM: the shared steps (`vm_steps.rs`) with this driver's types.
pub(crate) type VmData = VmSteps<AsahiDriver, Bo, Broadcast<Arm64>, Firmware>;

/// What the steps of one `sm_map` or `sm_unmap` of a VM work with.
type StepCtx<'a> = vm_steps::StepCtx<'a, AsahiDriver, Bo, Broadcast<Arm64>, Firmware>;

/// A VM of the render node.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    /// The unique GPUVM handle: the only way to change the VA tree.
    #[pin]
    unique: Mutex<UniqueRefGpuVm<VmData>>,
    /// A shared handle, for `obtain()` outside the lock.
    gpuvm: ARef<GpuVm<VmData>>,
    /// The GPUVM's root object, whose reservation object VM-private buffers share.
    root: ARef<Bo>,
    /// The device, to reach the UAT when the VM goes.
    dev: ARef<AsahiDevice>,
    /// The UAT VM.
    id: VmId,
    /// The range reserved for the kernel, whose first page maps a zeroed page read-only (the
    /// VM's kernel-private mapping), which the UAT VM owns: it goes with the VM's tables.
    kernel: Range<u64>,
}

impl Vm {
    /// Creates a VM whose `kernel` range (already validated) is the kernel's, for client `pid`,
    /// which will know it as `vm_id`.
    ///
    /// Everything that can fail is done before the UAT VM exists or undone with it: on error,
    /// nothing is left behind.
    pub(crate) fn new(
        ddev: &AsahiDevice,
        kernel: Range<u64>,
        pid: i32,
        vm_id: u32,
    ) -> Result<Arc<Vm>> {
        let g = Geometry::G13;
        // The client's memory: charged to its memory cgroup, as its page tables are (see
        // `PtConfig::gfp`).
        let dummy = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        let root = bo::new_bo(ddev, PAGE_SIZE, 0, None)?;
        // The VM's own memory, allocated first: once the UAT VM exists, only the tag's push below
        // can fail.
        let slot = UniqueArc::<Vm>::new_uninit(GFP_KERNEL_ACCOUNT)?;
        // The page table, and the tables of the dummy page's mapping, without the device's `uat`
        // lock, which every client's operations take (they are charged to the client).
        let cfg = ddev.uat.lock().user_config();
        let mut pt = PageTable::new(cfg)?;
        pt.prealloc(kernel.start, UAT_PGSZ)?;
        let id = {
            let mut uat = ddev.uat.lock();
            let id = uat.create_vm_with(pt, true)?;
            if let Err(e) = uat.vm_map_owned(id, kernel.start, dummy, Prot::GPU_SHARED_RO) {
                let _ = uat.destroy_vm(id);
                return Err(e);
            }
            id
        };
        // Undoes the UAT VM (its tables, the dummy page) on the error paths below.
        let destroy = |e: Error| {
            let _ = ddev.uat.lock().destroy_vm(id);
            e
        };
        let unique = GpuVm::<VmData>::new::<Error, _>(
            c"asahi-vm",
            ddev,
            &*root,
            window(g),
            kernel.clone(),
            VmData::new(id),
        )
        .map_err(destroy)?;
        let gpuvm = ARef::from(&*unique);
        let tag = VmTag {
            uat: id,
            pid,
            vm_id,
        };
        // One lock hold: two VM_CREATEs cannot both count on the same spare room.
        // Not in the `if let`, whose temporaries live through its body: `destroy` takes the
        // `uat` lock, which comes before `vm_tags`.
        let pushed = ddev.vm_tags.lock().push(tag, GFP_KERNEL);
        if let Err(e) = pushed {
            drop(unique);
            return Err(destroy(e.into()));
        }
        let vm = slot.pin_init_with(pin_init!(Self {
            unique <- new_mutex!(unique),
            gpuvm,
            root,
            dev: ARef::from(ddev),
            id,
            kernel,
        }));
        // Every field is moved in: the initializer cannot fail.
        let vm = match vm {
            Ok(vm) => vm,
            Err(never) => match never {},
        };
        Ok(vm.into())
    }

    /// The GPUVM's root object.
    pub(crate) fn root(&self) -> &Bo {
        &self.root
    }

    /// The UAT VM.
    pub(crate) fn id(&self) -> VmId {
        self.id
    }

    /// Validates one bind operation of this VM with the rules the host shares
    /// ([`crate::gpuvm::check_bind`], which says the order of the checks and their errnos);
    /// `lookup` gives the buffer of a handle and its size, or `ENOENT`.
    pub(crate) fn check_bind(
        &self,
        op: &BindOp,
        lookup: impl FnOnce(Handle) -> Result<(ARef<Bo>, u64, bool)>,
    ) -> Result<Bind> {
        crate::gpuvm::check_bind(op, &self.kernel, Geometry::G13, lookup)
    }

    /// Performs the validated binds of one VM_BIND (see [`Vm::check_bind`]), in order.
    ///
    /// Everything they need is allocated first: the buffers' scatter tables (which pin their
    /// pages), the `vm_bo`s and `drm_gpuva`s, then the tables of every range they map. A failure
    /// there (`ENOMEM`, or `EINTR` from `killable`) changes nothing. Applying them then allocates
    /// nothing ([`VmData::apply`]): only a fatal signal (`killable`), a corrupt table or a firmware
    /// that does not answer can stop it, leaving the binds before it applied.
    pub(crate) fn bind(
        &self,
        pdev: &Device<Bound>,
        binds: &[Bind],
        mut killable: impl FnMut() -> Result,
    ) -> Result {
        let r = self.apply(pdev, binds, &mut killable);
        // Whatever happened, the buffers the steps (or a dropped `vm_bo`) let go of go now,
        // after the tables that mapped them were flushed (as the step contexts went).
        self.release_buffers();
        r
    }

    /// Releases the buffers whose last `vm_bo` went (GPUVM's deferred cleanup), under `unique`.
    ///
    /// The list is the GPUVM's, not the caller's: another thread's steps may have put on it a
    /// buffer whose unmap it has not flushed yet (the invalidation comes when its step context
    /// goes). Taking `unique` waits for those steps to finish, so that no buffer's pages are
    /// freed while the GPU may still reach them through its TLB.
    fn release_buffers(&self) {
        let _unique = self.unique.lock();
        self.gpuvm.deferred_cleanup();
    }

    /// [`Vm::bind`] but the release of the buffers.
    fn apply(
        &self,
        pdev: &Device<Bound>,
        binds: &[Bind],
        killable: &mut impl FnMut() -> Result,
    ) -> Result {
        // Declared before the locks, dropped after them: the unused `drm_gpuva`s and the
        // `vm_bo` references go without the locks held. One `drm_gpuva` per mapping lives as
        // long as the mapping: the client's memory.
        let mut ops = KVVec::with_capacity(binds.len(), GFP_KERNEL_ACCOUNT | __GFP_NOWARN)?;
        for b in binds {
            killable()?;
            let op = VmData::prepare(
                &self.gpuvm,
                b,
                |bo| bo::scatter(bo, pdev),
                GFP_KERNEL_ACCOUNT,
            )?;
            ops.push_within_capacity(op).map_err(|_| ENOMEM)?;
        }
        let mut unique = self.unique.lock();
        // The tables are allocated without the device's `uat` lock, which every client's
        // operations take; `unique` keeps this VM's tables as they are meanwhile.
        let uat = &mut Locked(&self.dev.uat);
        VmData::prealloc_tables(uat, self.id, &ops, &mut *killable)?;
        VmData::apply(&mut unique, uat, self.id, &mut ops, killable)
    }

    /// Unmaps every mapping of `bo` in this VM ([`VmData::unmap_object`]): its client closed
    /// its handle. A failure (a corrupt table, a firmware that does not flush) is logged; what
    /// was not unmapped stays mapped, and goes with the VM.
    pub(crate) fn unmap_object(&self, bo: &Bo) {
        let Some(vm_bo) = self.gpuvm.find_bo(bo) else {
            return;
        };
        {
            let mut unique = self.unique.lock();
            let mut uat = self.dev.uat.lock();
            let mut ctx = StepCtx::for_unmap(&mut uat, KVec::new());
            if let Err(e) = VmData::unmap_object(&mut unique, &vm_bo, &mut ctx) {
                pr_err!("VM {}: unmapping a closed buffer: {:?}\n", self.id, e);
            }
            // The unmapped ranges are invalidated (and emptied tables freed) as `ctx` goes.
        }
        drop(vm_bo);
        // The buffer's last reference from this VM goes after the flush.
        self.release_buffers();
    }

    /// The VA range of this VM the kernel reserved.
    pub(crate) fn kernel_range(&self) -> VaRange {
        VaRange {
            start: self.kernel.start,
            last: self.kernel.end - 1,
        }
    }
}

/// The device's UAT as [`VmData::apply`] takes it: its lock, once per op.
struct Locked<'a>(&'a Mutex<DevUat>);

impl UatAccess<Broadcast<Arm64>, Firmware> for Locked<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut DevUat) -> R) -> R {
        f(&mut self.0.lock())
    }

    /// The tables are allocated with the lock released ([`DevUat::vm_prealloc_unlocked`]).
    fn prealloc(&mut self, id: VmId, iova: u64, size: u64) -> Result {
        let lock = || self.0.lock();
        DevUat::vm_prealloc_unlocked(lock(), lock, id, iova, size).map(drop)
    }
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // GPUVM warns if VAs are left when the VM is freed: they go first, the window on both
        // sides of the kernel range (which GPUVM's calls refuse). Unmapping all of it never
        // splits a mapping, so it needs no preallocated VAs. Unless the firmware caches some of
        // its mappings, the UAT VM is destroyed first with its mappings in place (one ASID
        // invalidation frees every table), and the steps only remove the VAs; otherwise each
        // mapping is unmapped (and flushed from the firmware's cache), then the VM destroyed.
        let mut unique = self.unique.lock();
        let mut uat = self.dev.uat.lock();
        let destroyed = uat.can_destroy_mapped(self.id) && uat.destroy_vm(self.id).is_ok();
        let mut ctx = if destroyed {
            StepCtx::for_destroyed(&mut uat)
        } else {
            StepCtx::for_unmap(&mut uat, KVec::new())
        };
        let w = window(Geometry::G13);
        for part in [w.start..self.kernel.start, self.kernel.end..w.end] {
            if part.is_empty() {
                continue;
            }
            if let Err(e) = unique.sm_unmap(part.start, part.end - part.start, &mut ctx) {
                pr_err!("VM {}: unmapping at destroy failed: {:?}\n", self.id, e);
            }
        }
        drop(ctx);
        // Still run by the firmware, it is retired: destroyed later, with the dummy page.
        if !destroyed {
            if let Err(e) = uat.retire_vm(self.id) {
                pr_err!("VM {}: destroy failed: {:?}\n", self.id, e);
            }
        }
        self.dev.vm_tags.lock().retain(|t| t.uat != self.id);
        drop(uat);
        drop(unique);
        // The buffers go last, after the tables that mapped them.
        self.gpuvm.deferred_cleanup();
    }
}
