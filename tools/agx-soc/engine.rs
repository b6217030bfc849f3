// SPDX-License-Identifier: GPL-2.0

//! The host's render node: VMs on `drm::gpuvm`, GEM buffers and firmware objects over the
//! simulated SoC's UAT, for the simulator and the host tests.
//!
//! It does what the kernel's `vm.rs` and `file.rs` do, with the same shared code: the arguments
//! are checked by `asahi::gpuvm`'s rules (the functions the kernel's ioctls call, so both builds
//! answer the same errno), and a VM_BIND is `vm_bind.rs` over the steps of `vm_steps.rs` and the
//! host `kernel::drm::gpuvm`, called as `Vm::bind` calls it: every op's `drm_gpuva`s and vm_bo
//! and every page table of the ranges it maps are allocated first (so an `ENOMEM` changes
//! nothing), then `sm_map` / `sm_unmap` with [`StepCtx::for_map`] / [`StepCtx::for_unbind`].
//!
//! Each VM is one [`GpuVm`], found by its ID in one registry; its VA tree is the only record of
//! its mappings ([`Engine::mappings`] reads it back). A VA holds its buffer through its vm_bo,
//! as in the kernel: closing a handle unmaps the buffer from the client's VMs, and the buffer
//! goes with its last mapping (in a destroyed VM whose work is in flight), after the TLB
//! invalidation of that unmap.
//!
//! Host-only (the kernel has its DRM device, shmem objects and per-file registries instead):
//! the driver type [`HostDriver`], the GEM object [`Buffer`] (the driver's own `GemObject`, a
//! scatter list of pinned pages), handles, and the registries.

use crate::firmware::FwPort;
use crate::gpu::GpuTlbi;
use crate::SimUat;
use asahi::gem::GemObject;
use asahi::geometry::{Geometry, VaRange, UAT_PGSZ};
use asahi::gpuvm::{self as rules, default_kernel_range, window, Bind, BindOp, Handle};
use asahi::kalloc::KernelVaAlloc;
use asahi::pgtable::{PageTable, PhysRange};
use asahi::pte::Prot;
use asahi::slots::VmId;
use asahi::tlbi::Broadcast;
use asahi::uat::kernel_va;
use asahi::vm_steps::{StepCtx, VmSteps};
use core::ops::Range;
use core::pin::Pin;
use kernel::drm::{
    self, gem,
    gpuvm::{sim as gpuvm_sim, GpuVa, GpuVm, UniqueRefGpuVm},
};
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use pinned_init::PinInit;
use std::collections::{BTreeMap, BTreeSet};

/// The host's DRM driver: what `drm::gpuvm` and GEM objects are generic over.
pub struct HostDriver;

impl drm::Driver for HostDriver {
    type Data = ();
    type Object = Bo;
    const INFO: drm::DriverInfo = drm::DriverInfo {
        major: 0,
        minor: 0,
        patchlevel: 0,
        name: c"asahi-host",
        desc: c"the render node's VMs on the simulated SoC",
    };
}

/// A GEM buffer of the host: its handle and its pages (the kernel's is a shmem object).
#[pinned_init::pin_data]
pub struct Buffer {
    /// The handle userspace knows it by (0 for a VM's root object, which has none).
    handle: Handle,
    obj: GemObject,
}

impl Buffer {
    /// The handle (0 for none).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The pages.
    pub fn obj(&self) -> &GemObject {
        &self.obj
    }
}

impl gem::DriverObject for Buffer {
    type Driver = HostDriver;
    type Args = (Handle, GemObject);

    fn new(
        _dev: &drm::Device<HostDriver>,
        _size: usize,
        (handle, obj): (Handle, GemObject),
    ) -> impl PinInit<Self, Error> {
        pinned_init::try_pin_init!(Buffer { handle, obj }? Error)
    }
}

/// The host's GEM object type.
pub type Bo = gem::Object<Buffer>;
/// The GPUVM driver data of a VM: the shared steps with the host's types.
pub type Steps = VmSteps<HostDriver, Bo, Broadcast<GpuTlbi>, FwPort>;
type Ctx<'a> = StepCtx<'a, HostDriver, Bo, Broadcast<GpuTlbi>, FwPort>;

const PG: u64 = UAT_PGSZ;

/// One mapping of a VM: a VA of its GPUVM, with what its page tables map there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaMapping {
    /// First VA.
    pub va: u64,
    /// Bytes.
    pub range: u64,
    /// The buffer.
    pub handle: Handle,
    /// Offset into the buffer of the first page (the page itself for single-page mappings).
    pub offset: u64,
    /// Protection.
    pub prot: Prot,
    /// Whether one page is repeated over the range.
    pub single_page: bool,
}

/// A firmware-visible object mapped in the kernel VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwBuf {
    /// GPU VA of the object.
    pub va: u64,
    /// Bytes.
    pub size: u64,
    /// Its buffer.
    pub handle: Handle,
    /// Whether an unmapped guard page sits on each side.
    pub guard: bool,
}

struct GemEntry {
    bo: ARef<Bo>,
    /// Whether userspace still holds the handle.
    open: bool,
    /// Whether it is a firmware object, mapped in the kernel VM until [`Engine::fw_free`].
    fw: bool,
    /// The VM a VM-private buffer belongs to: it maps there only (`EINVAL` elsewhere).
    private: Option<VmId>,
}

/// A VM: its GPUVM, which holds its mappings and, through them, their buffers.
struct Vm {
    /// The unique GPUVM handle: the only way to change the VA tree.
    unique: UniqueRefGpuVm<Steps>,
    /// A shared handle, for `obtain()` and the deferred cleanup.
    gpuvm: ARef<GpuVm<Steps>>,
    /// The range reserved for the kernel (the dummy page at its start).
    kernel: Range<u64>,
    /// VM_DESTROY came: the ID is gone for userspace, the VM waits for its last
    /// [`Engine::complete`].
    destroyed: bool,
}

/// The VMs and buffers of the GPU, as the render node keeps them.
pub struct Engine {
    /// The VMs by ID (the UAT's), destroyed ones included while their work is in flight.
    vms: BTreeMap<VmId, Vm>,
    /// Every live buffer (open, mapped, or a firmware object) by handle.
    objects: BTreeMap<Handle, GemEntry>,
    /// Handles closed while their buffer was still in use: checked after each operation.
    closed: BTreeSet<Handle>,
    /// Handles below `next_handle` free for reuse (the lowest goes first).
    free_handles: BTreeSet<Handle>,
    next_handle: Handle,
    /// The page every user VM maps read-only at the start of its kernel range.
    dummy: Page,
    /// Where firmware objects go in the kernel VM.
    kva: Pin<KBox<KernelVaAlloc>>,
    dev: ARef<drm::Device<HostDriver>>,
    uat: SimUat,
}

impl Engine {
    /// Takes over a UAT.
    pub fn new(uat: SimUat) -> Result<Self> {
        Ok(Engine {
            vms: BTreeMap::new(),
            objects: BTreeMap::new(),
            closed: BTreeSet::new(),
            free_handles: BTreeSet::new(),
            next_handle: 1,
            dummy: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
            kva: KBox::pin_init(
                KernelVaAlloc::new(kernel_va(uat.config().geometry)),
                GFP_KERNEL,
            )?,
            dev: drm::Device::<HostDriver>::new_host(())?,
            uat,
        })
    }

    /// The UAT.
    pub fn uat(&self) -> &SimUat {
        &self.uat
    }

    /// The UAT, for kernel mappings and submissions.
    pub fn uat_mut(&mut self) -> &mut SimUat {
        &mut self.uat
    }

    fn geometry(&self) -> Geometry {
        self.uat.config().geometry
    }

    // ---- Buffers ----

    /// Registers a new buffer under the lowest free handle.
    fn add_object(&mut self, obj: GemObject, open: bool, fw: bool) -> Result<Handle> {
        // Every page must be reachable with the SoC's output address size: checked once here,
        // so that binds never find out half-way.
        let oas = self.uat.config().oas;
        if obj.sg().iter().any(|r| !oas.fits(r.addr + (r.len - 1))) {
            return Err(ERANGE);
        }
        let handle = match self.free_handles.first() {
            Some(&h) => h,
            None if self.next_handle < Handle::MAX => self.next_handle,
            None => return Err(ENOSPC),
        };
        let size = usize::try_from(obj.size()).map_err(|_| EINVAL)?;
        let bo = Bo::new(&self.dev, size, (handle, obj))?;
        if !self.free_handles.remove(&handle) {
            self.next_handle += 1;
        }
        self.objects.insert(
            handle,
            GemEntry {
                bo,
                open,
                fw,
                private: None,
            },
        );
        Ok(handle)
    }

    /// Creates a buffer of `size` bytes (page multiple) and returns its handle.
    pub fn gem_create(&mut self, size: u64) -> Result<Handle> {
        self.gem_create_flags(size, 0, 0)
    }

    /// GEM_CREATE with its flags (`asahi::gpuvm::gem_flags`): a VM-private buffer names its VM
    /// in `vm_id` (0 for none). The render node's checks ([`rules::check_gem_create`]), then
    /// `ENOENT` for an unknown `vm_id`.
    pub fn gem_create_flags(&mut self, size: u64, flags: u32, vm_id: VmId) -> Result<Handle> {
        let private = rules::check_gem_create(size, flags, vm_id != 0)?;
        if private {
            self.live_vm(vm_id)?;
        }
        let obj = GemObject::new(size)?;
        let handle = self.add_object(obj, true, false)?;
        if let Some(e) = self.objects.get_mut(&handle) {
            e.private = private.then_some(vm_id);
        }
        Ok(handle)
    }

    /// Imports a buffer by scatter list.
    pub fn gem_import(&mut self, sg: &[PhysRange]) -> Result<Handle> {
        let obj = GemObject::import(sg)?;
        self.add_object(obj, true, false)
    }

    /// The buffer behind an open handle.
    fn open_bo(&self, handle: Handle) -> Result<&ARef<Bo>> {
        match self.objects.get(&handle) {
            Some(e) if e.open => Ok(&e.bo),
            _ => Err(ENOENT),
        }
    }

    /// The pages of the buffer behind an open handle.
    pub fn gem(&self, handle: Handle) -> Result<&GemObject> {
        Ok(&self.open_bo(handle)?.obj)
    }

    /// GEM_CLOSE: closes a handle and, as the kernel's `File::close_object`, unmaps the buffer
    /// from every VM of the client (not from a destroyed one, whose ID is gone). The buffer lives
    /// on while anything else holds it. A handle that is not open is `EINVAL`, as the DRM core's
    /// `drm_gem_handle_delete()` answers.
    pub fn gem_close(&mut self, handle: Handle) -> Result {
        let e = self
            .objects
            .get_mut(&handle)
            .filter(|e| e.open)
            .ok_or(EINVAL)?;
        e.open = false;
        let bo = e.bo.clone();
        let Engine { vms, uat, .. } = self;
        for (id, vm) in vms.iter_mut().filter(|(_, vm)| !vm.destroyed) {
            let Some(vm_bo) = vm.gpuvm.find_bo(&bo) else {
                continue;
            };
            let mut ctx = Ctx::for_unmap(uat, KVec::new());
            if let Err(e) = Steps::unmap_object(&mut vm.unique, &vm_bo, &mut ctx) {
                pr_warn!("VM {}: unmapping closed handle {}: {:?}\n", id, handle, e);
            }
            drop(ctx);
            drop(vm_bo);
            vm.gpuvm.deferred_cleanup();
        }
        drop(bo);
        self.closed.insert(handle);
        self.release_unused();
        Ok(())
    }

    /// The VMs of the client (not destroyed ones) that map the buffer behind an open handle:
    /// those its GEM_CLOSE unmaps it from.
    pub fn vms_mapping(&self, handle: Handle) -> Vec<VmId> {
        let Ok(bo) = self.open_bo(handle) else {
            return Vec::new();
        };
        self.vms
            .iter()
            .filter(|(_, vm)| !vm.destroyed && vm.gpuvm.find_bo(bo).is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Forgets the buffers whose handle is closed and that nothing holds any more (no VA, no
    /// firmware mapping): the registry's reference was the last, and the pages go with it.
    fn release_unused(&mut self) {
        let objects = &self.objects;
        let gone: Vec<Handle> = self
            .closed
            .iter()
            .copied()
            .filter(|h| {
                !matches!(objects.get(h),
                    Some(e) if e.open || e.fw || gpuvm_sim::obj_refcount(&*e.bo) > 1)
            })
            .collect();
        for h in gone {
            self.closed.remove(&h);
            self.objects.remove(&h);
            self.free_handles.insert(h);
        }
    }

    /// Every live buffer (open, or closed but still mapped) with its handle and whether the
    /// handle is open.
    pub fn objects(&self) -> impl Iterator<Item = (Handle, &GemObject, bool)> + '_ {
        self.objects.iter().map(|(&h, e)| (h, &e.bo.obj, e.open))
    }

    /// Buffers alive (open, still mapped, or firmware objects).
    pub fn live_objects(&self) -> usize {
        self.objects.len()
    }

    // ---- Firmware objects in the kernel VM ----

    /// Allocates a firmware object of `size` bytes mapped with `prot` in the kernel VM, with an
    /// unmapped guard page on each side if `guard` (a stray access faults instead of reaching a
    /// neighbour).
    pub fn fw_alloc(&mut self, size: u64, prot: Prot, guard: bool) -> Result<FwBuf> {
        let obj = GemObject::new(size)?;
        let pad = if guard { PG } else { 0 };
        let span = size.checked_add(2 * pad).ok_or(EINVAL)?;
        let base = self.kva.alloc(span)?;
        let va = base + pad;
        if let Err(e) = self.uat.kernel_map_sg(va, size, obj.sg(), 0, prot) {
            let _ = self.kva.free(base);
            return Err(e);
        }
        let handle = match self.add_object(obj, false, true) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.uat.kernel_unmap(va, size);
                let _ = self.kva.free(base);
                return Err(e);
            }
        };
        Ok(FwBuf {
            va,
            size,
            handle,
            guard,
        })
    }

    /// Unmaps a firmware object (through the firmware cache flush if it was cached) and frees it.
    pub fn fw_free(&mut self, buf: FwBuf) -> Result {
        self.uat.kernel_unmap(buf.va, buf.size)?;
        let pad = if buf.guard { PG } else { 0 };
        self.kva.free(buf.va - pad)?;
        if let Some(e) = self.objects.get_mut(&buf.handle) {
            e.fw = false;
        }
        self.closed.insert(buf.handle);
        self.release_unused();
        Ok(())
    }

    /// The buffer of a firmware object (for filling it).
    pub fn fw_object(&self, buf: &FwBuf) -> Result<&GemObject> {
        self.objects
            .get(&buf.handle)
            .map(|e| &e.bo.obj)
            .ok_or(ENOENT)
    }

    // ---- VMs ----

    /// VM `id`, if userspace still has it (`ENOENT` once destroyed).
    fn live_vm(&self, id: VmId) -> Result<&Vm> {
        self.vms.get(&id).filter(|v| !v.destroyed).ok_or(ENOENT)
    }

    /// Creates a user VM with Mesa's kernel range ([`default_kernel_range`]).
    pub fn vm_create(&mut self) -> Result<VmId> {
        let k = default_kernel_range(self.geometry());
        self.vm_create_in(k.start, k.end)
    }

    /// VM_CREATE: a user VM whose `kernel_start .. kernel_end` is the kernel's
    /// ([`rules::check_kernel_range`]), with the dummy page mapped read-only at its start.
    pub fn vm_create_in(&mut self, kernel_start: u64, kernel_end: u64) -> Result<VmId> {
        let g = self.geometry();
        let kernel = rules::check_kernel_range(kernel_start, kernel_end, g)?;
        let id = self.uat.create_vm(false)?;
        match self.new_vm(id, kernel, g) {
            Ok(vm) => {
                self.vms.insert(id, vm);
                Ok(id)
            }
            Err(e) => {
                // A new VM holds no slot: destroying it cannot fail.
                let _ = self.uat.destroy_vm(id);
                Err(e)
            }
        }
    }

    /// The GPUVM of the new UAT VM `id`, with the dummy page mapped.
    fn new_vm(&mut self, id: VmId, kernel: Range<u64>, g: Geometry) -> Result<Vm> {
        let dummy = self.dummy.phys();
        self.uat
            .vm_map(id, kernel.start, dummy, PG, Prot::GPU_SHARED_RO)?;
        // The GPUVM's root object, whose reservation object VM-private buffers would share:
        // the dummy page, borrowed (the engine owns it).
        let root = GemObject::import(&[PhysRange {
            addr: dummy,
            len: PG,
        }])?;
        let root = Bo::new(&self.dev, PG as usize, (0, root))?;
        let unique = GpuVm::new::<Error, _>(
            c"asahi-vm",
            &self.dev,
            &*root,
            window(g),
            kernel.clone(),
            Steps::new(id),
        )?;
        let gpuvm = ARef::from(&*unique);
        Ok(Vm {
            unique,
            gpuvm,
            kernel,
            destroyed: false,
        })
    }

    /// VM_DESTROY: the ID is gone at once (`ENOENT` for every call naming it after this). The VM
    /// goes with its last reference: now if no work of it is in flight, else at the
    /// [`Engine::complete`] of the last. Its buffers are unpinned after its tables and TLB
    /// entries are gone.
    pub fn vm_destroy(&mut self, id: VmId) -> Result {
        self.live_vm(id)?;
        if let Some(vm) = self.vms.get_mut(&id) {
            vm.destroyed = true;
        }
        self.reap(id);
        Ok(())
    }

    /// Tears down the destroyed VM `id` unless it still has work in flight: then a later
    /// [`Engine::complete`] does. As the kernel's `Vm` drop: everything unmapped through
    /// GPUVM (which drops the buffers' references), then the UAT VM destroyed.
    fn reap(&mut self, id: VmId) {
        let g = self.geometry();
        let Some(vm) = self.vms.get_mut(&id).filter(|v| v.destroyed) else {
            return;
        };
        if let Some(slot) = self.uat.slot_of(id) {
            if self.uat.slot_users(slot) != 0 {
                return;
            }
        }
        // As the kernel's: destroyed with its mappings in place when the firmware caches none
        // of them (one ASID invalidation), the VAs then removed.
        if self.uat.can_destroy_mapped(id) && self.uat.destroy_vm(id).is_ok() {
            if let Err(e) = unmap_destroyed(&mut self.uat, vm, g) {
                pr_warn!("VM {}: removing the VAs at destroy failed: {:?}\n", id, e);
            }
            self.vms.remove(&id);
            self.release_unused();
            return;
        }
        if let Err(e) = unmap_all(&mut self.uat, vm, g) {
            pr_warn!("VM {}: unmapping at destroy failed: {:?}\n", id, e);
            return;
        }
        match self.uat.destroy_vm(id) {
            Ok(()) => {
                self.vms.remove(&id);
            }
            // The firmware still runs its context: the next completion comes back here.
            Err(e) if e == EBUSY => {}
            Err(e) => pr_warn!("VM {}: teardown failed: {:?}\n", id, e),
        }
        self.release_unused();
    }

    /// The mappings of a VM, sorted by VA (a destroyed VM's while its work is in flight): its
    /// GPUVM's VAs (object and offset), with the protection its page tables map them with
    /// (`drm_gpuva` carries none). A single-page mapping is one whose pages are all the one at
    /// its offset; GPUVM's offset of the part after a split of one is not that page, which the
    /// tables give.
    pub fn mappings(&self, id: VmId) -> Result<Vec<VaMapping>> {
        let vm = self.vms.get(&id).ok_or(ENOENT)?;
        let pt = self.uat.vm_table(id).ok();
        let mut out = Vec::new();
        gpuvm_sim::for_each_va_in(&vm.unique, 0, u64::MAX, |va, _| {
            out.push(describe(va, pt));
        });
        Ok(out)
    }

    /// Pages of VM `id` mapped in `[start, end)`: the GPUVM's search, plus the VAs found.
    pub fn pages_in(&self, id: VmId, start: u64, end: u64) -> u64 {
        let Some(vm) = self.vms.get(&id) else {
            return 0;
        };
        let mut pages = 0;
        gpuvm_sim::for_each_va_in(&vm.unique, start, end, |va, _| {
            let r = va.range();
            pages += (r.end.min(end) - r.start.max(start)) / PG;
        });
        pages
    }

    /// The kernel range of a VM (`ENOENT` once destroyed).
    pub fn kernel_range(&self, id: VmId) -> Result<VaRange> {
        let vm = self.live_vm(id)?;
        Ok(VaRange {
            start: vm.kernel.start,
            last: vm.kernel.end - 1,
        })
    }

    /// The VMs that exist: userspace's, and destroyed ones whose work is still in flight.
    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.vms.keys().copied()
    }

    // ---- Submission ----

    /// Work is submitted for a VM: binds it to a context slot (see `Uat::bind`). The work
    /// holds a reference to the VM until it completes.
    pub fn submit(&mut self, id: VmId) -> Result<usize> {
        self.live_vm(id)?;
        self.uat.bind(id)
    }

    /// Work of a VM completed (a destroyed VM's too: its last completion tears it down).
    pub fn complete(&mut self, id: VmId) -> Result {
        if !self.vms.contains_key(&id) {
            return Err(ENOENT);
        }
        self.uat.release(id)?;
        self.reap(id);
        Ok(())
    }

    // ---- VM_BIND ----

    /// Performs one bind operation on VM `id`. On any error nothing changed.
    pub fn bind(&mut self, id: VmId, op: &BindOp) -> Result {
        self.bind_ops(id, core::slice::from_ref(op))
    }

    /// VM_BIND with several operations, as the render node: the VM is looked up first
    /// (`ENOENT`), then every operation is validated ([`rules::check_bind`]) before anything is
    /// allocated, so a malformed array changes nothing. Then everything the ops need is allocated
    /// (their `drm_gpuva`s and `vm_bo`s, then the tables of the ranges they map): should that
    /// fail (`ENOMEM`), nothing changed. Then they are applied in order ([`VmSteps::apply`]).
    pub fn bind_ops(&mut self, id: VmId, ops: &[BindOp]) -> Result {
        self.bind_ops_killable(id, ops, || Ok(()))
    }

    /// [`Engine::bind_ops`] with the kernel's fatal-signal check: `killable` is asked where
    /// `Vm::bind` asks whether its caller is dying (before preparing each op, before each
    /// chunk of a map's tables, [`VmSteps::PREALLOC_CHUNK`], and before applying each op), and
    /// its error stops the bind. Before the first op is applied, that changes nothing; after,
    /// the ops applied stay. (The render node also asks while it reads the ops from userspace,
    /// before any of this.)
    pub fn bind_ops_killable(
        &mut self,
        id: VmId,
        ops: &[BindOp],
        killable: impl FnMut() -> Result,
    ) -> Result {
        let g = self.geometry();
        let vm = self.live_vm(id)?;
        let mut binds = KVec::with_capacity(ops.len(), GFP_KERNEL)?;
        for op in ops {
            let b = rules::check_bind(op, &vm.kernel, g, |h| {
                let bo = self.open_bo(h)?;
                let here = self
                    .objects
                    .get(&h)
                    .is_none_or(|e| e.private.is_none_or(|p| p == id));
                Ok((bo.clone(), bo.obj.size(), here))
            })?;
            binds.push(b, GFP_KERNEL)?;
        }
        let r = self.apply(id, &binds, killable);
        // Unbinds and replacements may have dropped the last mapping of closed buffers.
        drop(binds);
        self.release_unused();
        r
    }

    /// Applies the validated binds of one VM_BIND to VM `id`, as the kernel's `Vm::bind`.
    fn apply(
        &mut self,
        id: VmId,
        binds: &[Bind<ARef<Bo>>],
        killable: impl FnMut() -> Result,
    ) -> Result {
        let Engine { vms, uat, .. } = self;
        let vm = vms.get_mut(&id).ok_or(ENOENT)?;
        let r = prepare_apply(uat, vm, id, binds, killable);
        vm.gpuvm.deferred_cleanup();
        r
    }
}

/// [`Engine::apply`] but the release of the buffers the binds let go of.
fn prepare_apply(
    uat: &mut SimUat,
    vm: &mut Vm,
    id: VmId,
    binds: &[Bind<ARef<Bo>>],
    mut killable: impl FnMut() -> Result,
) -> Result {
    let mut ops = KVec::with_capacity(binds.len(), GFP_KERNEL)?;
    for b in binds {
        killable()?;
        let op = Steps::prepare(&vm.gpuvm, b, |bo| Ok(bo.obj.sg_list()), GFP_KERNEL)?;
        ops.push(op, GFP_KERNEL)?;
    }
    Steps::prealloc_tables(uat, id, &ops, &mut killable)?;
    Steps::apply(&mut vm.unique, uat, id, &mut ops, killable)
}

impl Drop for Engine {
    fn drop(&mut self) {
        // GPUVM warns about VAs left when a VM is freed: unmap each VM first, as its teardown.
        let g = self.geometry();
        for (id, mut vm) in core::mem::take(&mut self.vms) {
            if let Err(e) = unmap_all(&mut self.uat, &mut vm, g) {
                pr_warn!("VM {}: unmapping at shutdown failed: {:?}\n", id, e);
            }
        }
    }
}

/// Unmaps everything of a VM through its GPUVM, as the kernel's `Vm` drop: the window on both
/// sides of the kernel range (which GPUVM's calls refuse). Unmapping all of it never splits a
/// mapping, so it needs no preallocated VAs.
fn unmap_all(uat: &mut SimUat, vm: &mut Vm, g: Geometry) -> Result {
    remove_all(Ctx::for_unmap(uat, KVec::new()), vm, g)
}

/// Removes every VA of a VM whose UAT VM was destroyed with its mappings in place
/// ([`Ctx::for_destroyed`]).
fn unmap_destroyed(uat: &mut SimUat, vm: &mut Vm, g: Geometry) -> Result {
    remove_all(Ctx::for_destroyed(uat), vm, g)
}

/// `sm_unmap` of the whole window but the kernel range, in `ctx`.
fn remove_all(mut ctx: Ctx<'_>, vm: &mut Vm, g: Geometry) -> Result {
    let w = window(g);
    let mut r = Ok(());
    for part in [w.start..vm.kernel.start, vm.kernel.end..w.end] {
        if !part.is_empty() {
            r = r.and(
                vm.unique
                    .sm_unmap(part.start, part.end - part.start, &mut ctx),
            );
        }
    }
    drop(ctx);
    vm.gpuvm.deferred_cleanup();
    r
}

/// A VA as a [`VaMapping`], its protection and single-page repetition read in the VM's tables.
fn describe(va: &GpuVa<Steps>, pt: Option<&PageTable>) -> VaMapping {
    let buf: &Buffer = va.obj();
    let obj = &buf.obj;
    let (addr, range, offset) = (va.addr(), va.length(), va.gem_offset());
    let at = |a: u64| pt.and_then(|pt| pt.translate(a).ok());
    let first = at(addr);
    let pa = first.map(|t| t.pa);
    // As GPUVM says: the pages from its offset on.
    let straight = pa.is_some()
        && obj.phys_at(offset) == pa
        && (range <= PG || at(addr + PG).map(|t| t.pa) == obj.phys_at(offset + PG));
    let (single_page, offset) = if straight {
        (false, offset)
    } else {
        let page = pa
            .and_then(|pa| obj.sg_list().offset_of(pa))
            .unwrap_or(offset);
        (true, page)
    };
    VaMapping {
        va: addr,
        range,
        handle: buf.handle,
        offset,
        prot: first.map_or(Prot::GPU_SHARED_RO, |t| t.prot),
        single_page,
    }
}
