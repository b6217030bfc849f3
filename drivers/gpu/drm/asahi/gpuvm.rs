// SPDX-License-Identifier: GPL-2.0

//! VM_BIND: how userspace (Mesa, through the DRM ioctls) maps GEM buffers into its VMs.
//!
//! Semantics are DRM GPUVM's: binding over existing mappings replaces the overlapped parts,
//! unbinding part of a mapping splits it. Every field of a bind comes from userspace and is
//! validated before anything changes; the tables a bind needs are allocated before any PTE is
//! written, so a bind that fails (bad arguments, `ENOMEM`) leaves the VM exactly as it was.
//!
//! A GEM buffer stays pinned while any mapping uses it: closing its handle only drops the
//! handle; the pages go when the last mapping does, after the TLB invalidation that follows
//! that unmap.
//!
//! The rules are the render node's (`file.rs`, `vm.rs`), checked in the same order, so that the
//! same operations get the same answers from both: each VM reserves a kernel range of the
//! window ([`user_va`]), where its kernel-private mapping (a read-only zero page) sits at the
//! start and userspace cannot bind; a destroyed VM's ID is gone at once, and the VM itself goes
//! when its last submitted work completes.

use crate::gem::GemObject;
use crate::geometry::{VaRange, UAT_PGMSK, UAT_PGSZ};
use crate::handoff::FwChannel;
use crate::kalloc::KernelVaAlloc;
use crate::pgtable::PhysRange;
use crate::pte::{Access, Prot};
use crate::slots::VmId;
use crate::tlb::TlbInvalidate;
use crate::uat::{kernel_va, user_va, Uat};
use crate::vacant::insert_vacant;
use kernel::page::Page;
use kernel::prelude::*;

/// Bind flags (the uAPI's).
pub mod bind_flags {
    /// Unmap the range instead.
    pub const UNBIND: u32 = 1 << 0;
    /// GPU may read.
    pub const READ: u32 = 1 << 1;
    /// GPU may write.
    pub const WRITE: u32 = 1 << 2;
    /// Map the one page at `offset` over the whole range (sparse / null backing).
    pub const SINGLE_PAGE: u32 = 1 << 3;
    /// Every flag this driver knows.
    pub const KNOWN: u32 = UNBIND | READ | WRITE | SINGLE_PAGE;
}

/// GEM_CREATE flags (the uAPI's).
pub mod gem_flags {
    /// CPU mappings are write-back cached (else write-combined); nothing the GPU sees.
    pub const WRITEBACK: u32 = 1 << 0;
    /// The buffer is private to the VM given with it (shares its reservation object).
    pub const VM_PRIVATE: u32 = 1 << 1;
    /// Every flag this driver knows.
    pub const KNOWN: u32 = WRITEBACK | VM_PRIVATE;
}

/// The least kernel range a VM must reserve (GET_PARAMS' `vm_kernel_min_size`).
pub const KERNEL_MIN_SIZE: u64 = 1 << 30;

/// The kernel range Mesa reserves when it creates a VM: the top 32 GiB of the window, or
/// [`KERNEL_MIN_SIZE`] if that is larger (`end` exclusive).
pub fn default_kernel_range(g: crate::geometry::Geometry) -> core::ops::Range<u64> {
    let w = user_va(g);
    let end = w.last + 1;
    let size = (32u64 << 30).max(KERNEL_MIN_SIZE);
    end.saturating_sub(size).max(w.start)..end
}

/// One bind operation, as the ioctl passes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindOp {
    /// [`bind_flags`].
    pub flags: u32,
    /// GEM handle (0 for an unbind).
    pub handle: u32,
    /// Offset into the buffer.
    pub offset: u64,
    /// Bytes to map or unmap.
    pub range: u64,
    /// GPU VA.
    pub addr: u64,
}

/// A GEM handle.
pub type Handle = u32;

/// One mapping of a VM, as userspace made it (GPUVM's `drm_gpuva`).
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

impl VaMapping {
    fn end(&self) -> u64 {
        self.va + self.range
    }

    /// The part of `self` in `[start, end)`.
    fn slice(&self, start: u64, end: u64) -> VaMapping {
        let start = start.max(self.va);
        let end = end.min(self.end());
        VaMapping {
            va: start,
            range: end - start,
            offset: if self.single_page {
                self.offset
            } else {
                self.offset + (start - self.va)
            },
            ..*self
        }
    }
}

struct GemEntry {
    obj: GemObject,
    /// Whether userspace still holds the handle.
    open: bool,
    /// Mappings using the buffer.
    mappings: usize,
}

struct VmState {
    id: VmId,
    /// Sorted by VA, non-overlapping.
    mappings: KVec<VaMapping>,
    /// The kernel range: no bind may touch it; the dummy page is at its start.
    kernel: VaRange,
    /// VM_DESTROY came while work was in flight: the ID is gone, the VM waits for the last
    /// [`Gpuvm::complete`].
    destroyed: bool,
}

/// The VMs and buffers of the GPU, behind the VM_BIND semantics.
pub struct Gpuvm<T: TlbInvalidate, F: FwChannel> {
    uat: Uat<T, F>,
    objects: KVec<Option<GemEntry>>,
    /// The VMs; entries of destroyed ones are reused.
    vms: KVec<Option<VmState>>,
    /// The page every user VM maps read-only at the start of its kernel range.
    dummy: Page,
    /// Where firmware objects go in the kernel VM.
    kva: KernelVaAlloc,
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

/// Validates the VA range `[start, end)` of a bind as `Vm::check` does: `EINVAL` if unaligned,
/// empty, outside the window or touching the VM's kernel range.
fn check_va(
    start: u64,
    end: u64,
    kernel: &VaRange,
    geometry: crate::geometry::Geometry,
) -> Result<VaRange> {
    let w = user_va(geometry);
    if (start | end) & UAT_PGMSK != 0
        || start >= end
        || start < w.start
        || end - 1 > w.last
        || (start <= kernel.last && kernel.start < end)
    {
        return Err(EINVAL);
    }
    Ok(VaRange {
        start,
        last: end - 1,
    })
}

impl<T: TlbInvalidate, F: FwChannel> Gpuvm<T, F> {
    /// Takes over a UAT.
    pub fn new(uat: Uat<T, F>) -> Result<Self> {
        Ok(Gpuvm {
            objects: KVec::new(),
            vms: KVec::new(),
            dummy: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
            kva: KernelVaAlloc::new(kernel_va(uat.config().geometry)),
            uat,
        })
    }

    /// The UAT.
    pub fn uat(&self) -> &Uat<T, F> {
        &self.uat
    }

    /// The UAT, for kernel mappings and submissions.
    pub fn uat_mut(&mut self) -> &mut Uat<T, F> {
        &mut self.uat
    }

    // ---- Buffers ----

    fn add_object(&mut self, obj: GemObject) -> Result<Handle> {
        // Every page must be reachable with the SoC's output address size: checked once here,
        // so that binds never find out half-way.
        let oas = self.uat.config().oas;
        if obj.sg().iter().any(|r| !oas.fits(r.addr + (r.len - 1))) {
            return Err(ERANGE);
        }
        let entry = GemEntry {
            obj,
            open: true,
            mappings: 0,
        };
        if self.objects.len() >= Handle::MAX as usize {
            return Err(ENOSPC);
        }
        let idx = insert_vacant(&mut self.objects, entry)?;
        Ok((idx + 1) as Handle)
    }

    /// Creates a buffer of `size` bytes (page multiple) and returns its handle.
    pub fn gem_create(&mut self, size: u64) -> Result<Handle> {
        self.gem_create_flags(size, 0, 0)
    }

    /// GEM_CREATE with its [`gem_flags`]: a VM-private buffer names its VM in `vm_id` (0 for
    /// none). As the render node: `EINVAL` for a size that is zero or not page aligned, unknown
    /// flags, or a `vm_id` without `VM_PRIVATE`; then `ENOENT` for an unknown `vm_id`.
    pub fn gem_create_flags(&mut self, size: u64, flags: u32, vm_id: VmId) -> Result<Handle> {
        let private = flags & gem_flags::VM_PRIVATE != 0;
        if size == 0
            || size & UAT_PGMSK != 0
            || flags & !gem_flags::KNOWN != 0
            || (!private && vm_id != 0)
        {
            return Err(EINVAL);
        }
        if private {
            self.vm_index(vm_id)?;
        }
        let obj = GemObject::new(size)?;
        self.add_object(obj)
    }

    /// Imports a buffer by scatter list.
    pub fn gem_import(&mut self, sg: &[PhysRange]) -> Result<Handle> {
        let obj = GemObject::import(sg)?;
        self.add_object(obj)
    }

    fn entry(&self, handle: Handle) -> Option<&GemEntry> {
        entry(&self.objects, handle)
    }

    fn entry_mut(&mut self, handle: Handle) -> Option<&mut GemEntry> {
        entry_mut(&mut self.objects, handle)
    }

    /// The buffer behind an open handle.
    pub fn gem(&self, handle: Handle) -> Result<&GemObject> {
        match self.entry(handle) {
            Some(e) if e.open => Ok(&e.obj),
            _ => Err(ENOENT),
        }
    }

    /// Closes a handle; the buffer lives on while mapped.
    pub fn gem_close(&mut self, handle: Handle) -> Result {
        let e = self.entry_mut(handle).filter(|e| e.open).ok_or(ENOENT)?;
        e.open = false;
        release_if_unused(&mut self.objects, handle);
        Ok(())
    }

    /// Every live buffer (open, or closed but still mapped) with its handle and whether the
    /// handle is open.
    pub fn objects(&self) -> impl Iterator<Item = (Handle, &GemObject, bool)> + '_ {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| ((i + 1) as Handle, &e.obj, e.open)))
    }

    /// Buffers alive (open or still mapped).
    pub fn live_objects(&self) -> usize {
        self.objects.iter().flatten().count()
    }

    // ---- Firmware objects in the kernel VM ----

    /// Allocates a firmware object of `size` bytes mapped with `prot` in the kernel VM, with an
    /// unmapped guard page on each side if `guard` (a stray access faults instead of reaching a
    /// neighbour).
    pub fn fw_alloc(&mut self, size: u64, prot: Prot, guard: bool) -> Result<FwBuf> {
        let obj = GemObject::new(size)?;
        let pad = if guard { UAT_PGSZ } else { 0 };
        let span = size.checked_add(2 * pad).ok_or(EINVAL)?;
        let base = self.kva.alloc(span)?;
        let va = base + pad;
        if let Err(e) = self.uat.kernel_map_sg(va, size, obj.sg(), 0, prot) {
            let _ = self.kva.free(base);
            return Err(e);
        }
        let handle = match self.add_object(obj) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.uat.kernel_unmap(va, size);
                let _ = self.kva.free(base);
                return Err(e);
            }
        };
        if let Some(e) = self.entry_mut(handle) {
            e.open = false;
            e.mappings = 1;
        }
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
        let pad = if buf.guard { UAT_PGSZ } else { 0 };
        self.kva.free(buf.va - pad)?;
        unref(&mut self.objects, buf.handle);
        Ok(())
    }

    /// The buffer of a firmware object (for filling it).
    pub fn fw_object(&self, buf: &FwBuf) -> Result<&GemObject> {
        self.entry(buf.handle).map(|e| &e.obj).ok_or(ENOENT)
    }

    // ---- VMs ----

    /// The index of VM `id`, if userspace still has it (`ENOENT` once destroyed).
    fn vm_index(&self, id: VmId) -> Result<usize> {
        self.vms
            .iter()
            .position(|v| v.as_ref().is_some_and(|v| v.id == id && !v.destroyed))
            .ok_or(ENOENT)
    }

    /// The index of VM `id`, destroyed or not, while it exists.
    fn vm_index_any(&self, id: VmId) -> Result<usize> {
        self.vms
            .iter()
            .position(|v| v.as_ref().is_some_and(|v| v.id == id))
            .ok_or(ENOENT)
    }

    fn mappings_mut(&mut self, idx: usize) -> Result<&mut KVec<VaMapping>> {
        Ok(&mut self.vms[idx].as_mut().ok_or(ENOENT)?.mappings)
    }

    /// Creates a user VM with Mesa's kernel range ([`default_kernel_range`]).
    pub fn vm_create(&mut self) -> Result<VmId> {
        let k = default_kernel_range(self.uat.config().geometry);
        self.vm_create_in(k.start, k.end)
    }

    /// VM_CREATE: a user VM whose `kernel_start .. kernel_end` is the kernel's, with the dummy
    /// page mapped at its start. `EINVAL` unless the range is page aligned, inside the window and
    /// at least [`KERNEL_MIN_SIZE`].
    pub fn vm_create_in(&mut self, kernel_start: u64, kernel_end: u64) -> Result<VmId> {
        let w = user_va(self.uat.config().geometry);
        if (kernel_start | kernel_end) & UAT_PGMSK != 0
            || kernel_start < w.start
            || kernel_end > w.last + 1
            || kernel_end.saturating_sub(kernel_start) < KERNEL_MIN_SIZE
        {
            return Err(EINVAL);
        }
        let kernel = VaRange {
            start: kernel_start,
            last: kernel_end - 1,
        };
        // Room first, so that nothing can fail once the VM exists.
        self.vms.reserve(1, GFP_KERNEL)?;
        let id = self.uat.create_vm(false)?;
        let mapped = self.uat.vm_map(
            id,
            kernel.start,
            self.dummy.phys(),
            UAT_PGSZ,
            Prot::GPU_SHARED_RO,
        );
        let state = VmState {
            id,
            mappings: KVec::new(),
            kernel,
            destroyed: false,
        };
        if let Err(e) = mapped.and_then(|()| insert_vacant(&mut self.vms, state)) {
            // A new VM holds no slot: destroying it cannot fail.
            let _ = self.uat.destroy_vm(id);
            return Err(e);
        }
        Ok(id)
    }

    /// VM_DESTROY: the ID is gone at once (`ENOENT` for every call naming it after this). The VM
    /// goes with its last reference: now if no work of it is in flight, else at the
    /// [`Gpuvm::complete`] of the last. Its buffers are unpinned after its tables and TLB
    /// entries are gone.
    pub fn vm_destroy(&mut self, id: VmId) -> Result {
        let idx = self.vm_index(id)?;
        if let Some(vm) = self.vms[idx].as_mut() {
            vm.destroyed = true;
        }
        self.reap(idx);
        Ok(())
    }

    /// Tears down the destroyed VM at `idx` unless it still has work in flight (or the
    /// firmware still runs its context): then a later [`Gpuvm::complete`] does.
    fn reap(&mut self, idx: usize) {
        let Some(vm) = self.vms[idx].as_ref().filter(|v| v.destroyed) else {
            return;
        };
        let id = vm.id;
        match self.uat.destroy_vm(id) {
            Ok(()) => {}
            // Work in flight: the last completion comes back here.
            Err(e) if e == EBUSY => return,
            Err(e) => {
                pr_warn!("VM {}: teardown failed: {:?}\n", id, e);
                return;
            }
        }
        if let Some(vm) = self.vms[idx].take() {
            for m in vm.mappings.iter() {
                unref(&mut self.objects, m.handle);
            }
        }
    }

    /// The mappings of a VM, sorted by VA (a destroyed VM's while its work is in flight).
    pub fn mappings(&self, id: VmId) -> Result<&[VaMapping]> {
        let idx = self.vm_index_any(id)?;
        Ok(self.vms[idx].as_ref().map_or(&[][..], |v| &v.mappings[..]))
    }

    /// The kernel range of a VM (`ENOENT` once destroyed).
    pub fn kernel_range(&self, id: VmId) -> Result<VaRange> {
        let idx = self.vm_index(id)?;
        self.vms[idx].as_ref().map(|v| v.kernel).ok_or(ENOENT)
    }

    /// The VMs that exist: userspace's, and destroyed ones whose work is still in flight.
    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.vms.iter().flatten().map(|v| v.id)
    }

    // ---- Submission ----

    /// Work is submitted for a VM: binds it to a context slot (see [`Uat::bind`]). The work
    /// holds a reference to the VM until it completes.
    pub fn submit(&mut self, id: VmId) -> Result<usize> {
        self.vm_index(id)?;
        self.uat.bind(id)
    }

    /// Work of a VM completed (a destroyed VM's too: its last completion tears it down).
    pub fn complete(&mut self, id: VmId) -> Result {
        let idx = self.vm_index_any(id)?;
        self.uat.release(id)?;
        self.reap(idx);
        Ok(())
    }

    // ---- VM_BIND ----

    /// Validates one bind of the VM at `idx` without changing anything, as `read_bind` and
    /// `Vm::check` do, in their order (which decides the errno): unknown flags, a wrapping range,
    /// an unbind's fields, the protection (`EINVAL`), the handle (`ENOENT`), then the VA range and
    /// the buffer range (`EINVAL`). Returns the VA range, and for a map the protection.
    fn check(&self, idx: usize, op: &BindOp) -> Result<(VaRange, Option<Prot>)> {
        use bind_flags::*;
        let kernel = self.vms[idx].as_ref().ok_or(ENOENT)?.kernel;
        let g = self.uat.config().geometry;
        if op.flags & !KNOWN != 0 {
            return Err(EINVAL);
        }
        let end = op.addr.checked_add(op.range).ok_or(EINVAL)?;
        if op.flags & UNBIND != 0 {
            if op.flags != UNBIND || op.handle != 0 || op.offset != 0 {
                return Err(EINVAL);
            }
            return Ok((check_va(op.addr, end, &kernel, g)?, None));
        }
        let prot = Prot::gpu(Access {
            read: op.flags & READ != 0,
            write: op.flags & WRITE != 0,
        })
        .ok_or(EINVAL)?;
        let obj = self.gem(op.handle)?;
        let range = check_va(op.addr, end, &kernel, g)?;
        let need = if op.flags & SINGLE_PAGE != 0 {
            UAT_PGSZ
        } else {
            op.range
        };
        match op.offset.checked_add(need) {
            Some(end) if op.offset & UAT_PGMSK == 0 && end <= obj.size() => Ok((range, Some(prot))),
            _ => Err(EINVAL),
        }
    }

    /// Performs one bind operation on VM `id`. On any error nothing changed.
    pub fn bind(&mut self, id: VmId, op: &BindOp) -> Result {
        self.bind_ops(id, core::slice::from_ref(op))
    }

    /// VM_BIND with several operations: the VM is looked up first (`ENOENT`), then every
    /// operation is validated before the first is applied, so a malformed array changes
    /// nothing. They are then applied in order; each allocates what it needs before it changes
    /// anything, so if one fails (`ENOMEM`) the ones before it stay applied and it and the ones
    /// after it change nothing.
    pub fn bind_ops(&mut self, id: VmId, ops: &[BindOp]) -> Result {
        let idx = self.vm_index(id)?;
        let mut checked = KVec::with_capacity(ops.len(), GFP_KERNEL)?;
        for op in ops {
            checked.push(self.check(idx, op)?, GFP_KERNEL)?;
        }
        for (op, (range, prot)) in ops.iter().zip(checked) {
            self.apply(id, idx, op, range, prot)?;
        }
        Ok(())
    }

    /// Applies one validated bind operation to VM `id` (at `idx`). On any error nothing changed.
    fn apply(
        &mut self,
        id: VmId,
        idx: usize,
        op: &BindOp,
        range: VaRange,
        prot: Option<Prot>,
    ) -> Result {
        let (start, end) = (range.start, range.last + 1);
        // Room for the result: at most one mapping split in two, plus the new one.
        self.mappings_mut(idx)?.reserve(2, GFP_KERNEL)?;
        let Some(prot) = prot else {
            self.uat.vm_unmap(id, op.addr, op.range)?;
            return self.remove_range(idx, start, end);
        };
        // Replacing: the page table checks the whole range and allocates every table before it
        // changes anything, then replaces the old pages as it writes the new ones (two walks in
        // all, as a plain map). A bind over nothing is a plain map: it fails on anything mapped.
        let overlaps = {
            let m = self.mappings_mut(idx)?;
            let i = m.partition_point(|m| m.end() <= start);
            m.get(i).is_some_and(|m| m.va < end)
        };
        let single_page = op.flags & bind_flags::SINGLE_PAGE != 0;
        let Gpuvm { uat, objects, .. } = self;
        let obj = &entry(objects, op.handle).ok_or(ENOENT)?.obj;
        if single_page {
            let pa = obj.phys_at(op.offset).ok_or(EINVAL)?;
            if overlaps {
                uat.vm_replace_repeat(id, op.addr, pa, op.range, prot)?;
            } else {
                uat.vm_map_repeat(id, op.addr, pa, op.range, prot)?;
            }
        } else {
            let (first, skip) = obj.locate(op.offset).ok_or(EINVAL)?;
            let sg = obj.sg().get(first..).ok_or(EINVAL)?;
            if overlaps {
                uat.vm_replace_sg(id, op.addr, op.range, sg, skip, prot)?;
            } else {
                uat.vm_map_sg(id, op.addr, op.range, sg, skip, prot)?;
            }
        }
        self.remove_range(idx, start, end)?;
        let new = VaMapping {
            va: start,
            range: op.range,
            handle: op.handle,
            offset: op.offset,
            prot,
            single_page,
        };
        let mappings = self.mappings_mut(idx)?;
        let at = mappings.partition_point(|m| m.va < start);
        if let Err(e) = insert(mappings, at, new) {
            // Nothing may map the buffer without holding a reference: the map is undone, and
            // no reference is taken.
            self.uat.vm_unmap(id, op.addr, op.range)?;
            return Err(e);
        }
        if let Some(e) = self.entry_mut(op.handle) {
            e.mappings += 1;
        }
        Ok(())
    }

    /// Drops `[start, end)` from VM `idx`'s mapping list, splitting the mappings it cuts.
    /// Needs room for one more entry (reserved by the caller); allocates nothing. Without that
    /// room (a bookkeeping bug, warned about) the right part of a split mapping is unmapped
    /// rather than left mapped without a reference, and the error returned.
    fn remove_range(&mut self, idx: usize, start: u64, end: u64) -> Result {
        let Some(vm) = self.vms[idx].as_mut() else {
            return Ok(());
        };
        let id = vm.id;
        let mappings = &mut vm.mappings;
        let objects = &mut self.objects;
        let mut i = mappings.partition_point(|m| m.end() <= start);
        while i < mappings.len() && mappings[i].va < end {
            let m = mappings[i];
            let left = (m.va < start).then(|| m.slice(m.va, start));
            let right = (m.end() > end).then(|| m.slice(end, m.end()));
            match (left, right) {
                (Some(l), Some(r)) => {
                    mappings[i] = l;
                    if let Err(e) = insert(mappings, i + 1, r) {
                        self.uat.vm_unmap(id, r.va, r.range)?;
                        return Err(e);
                    }
                    if let Some(e) = entry_mut(objects, m.handle) {
                        e.mappings += 1;
                    }
                    return Ok(());
                }
                (Some(part), None) | (None, Some(part)) => {
                    mappings[i] = part;
                    i += 1;
                }
                (None, None) => {
                    // `i` indexes `mappings`, so the removal cannot fail.
                    let _ = mappings.remove(i);
                    unref(objects, m.handle);
                }
            }
        }
        Ok(())
    }
}

/// Handles are the object table's indices plus one (0 is never a handle).
fn index(handle: Handle) -> Option<usize> {
    usize::try_from(handle).ok()?.checked_sub(1)
}

fn entry(objects: &KVec<Option<GemEntry>>, handle: Handle) -> Option<&GemEntry> {
    objects.get(index(handle)?)?.as_ref()
}

fn entry_mut(objects: &mut KVec<Option<GemEntry>>, handle: Handle) -> Option<&mut GemEntry> {
    objects.get_mut(index(handle)?)?.as_mut()
}

/// Frees a buffer whose handle is closed and that nothing maps any more.
fn release_if_unused(objects: &mut KVec<Option<GemEntry>>, handle: Handle) {
    if let Some(slot) = index(handle).and_then(|i| objects.get_mut(i)) {
        if matches!(slot, Some(e) if !e.open && e.mappings == 0) {
            *slot = None;
        }
    }
}

/// Drops one mapping's reference to a buffer.
fn unref(objects: &mut KVec<Option<GemEntry>>, handle: Handle) {
    if let Some(e) = entry_mut(objects, handle) {
        e.mappings = e.mappings.saturating_sub(1);
    }
    release_if_unused(objects, handle);
}

/// Inserts `m` at `at`, in room the caller reserved: this never allocates. Without the room
/// (a bookkeeping bug) it warns and fails with `ENOMEM`, changing nothing.
pub fn insert(v: &mut KVec<VaMapping>, at: usize, m: VaMapping) -> Result {
    let len = v.len();
    v.insert_within_capacity(at, m).map_err(|_| {
        pr_warn!(
            "VM mapping list: no reserved room for an entry at {} of {}\n",
            at,
            len
        );
        ENOMEM
    })
}
