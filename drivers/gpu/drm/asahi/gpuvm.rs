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

use crate::gem::GemObject;
use crate::geometry::{VaRange, UAT_PGMSK, UAT_PGSZ};
use crate::handoff::FwChannel;
use crate::kalloc::KernelVaAlloc;
use crate::pgtable::PhysRange;
use crate::pte::{Access, Prot};
use crate::slots::VmId;
use crate::tlb::TlbInvalidate;
use crate::uat::{dummy_page_va, kernel_va, user_va, Uat};
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
}

/// The VMs and buffers of the GPU, behind the VM_BIND semantics.
pub struct Gpuvm<T: TlbInvalidate, F: FwChannel> {
    uat: Uat<T, F>,
    objects: KVec<Option<GemEntry>>,
    /// The VMs; entries of destroyed ones are reused.
    vms: KVec<Option<VmState>>,
    /// The page every user VM maps at [`dummy_page_va`].
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

/// Validates the address part of a bind: `EINVAL` if unaligned, empty or wrapping, `ERANGE` if
/// not inside the user VA (which ends before the dummy page).
fn check_va(op: &BindOp, geometry: crate::geometry::Geometry) -> Result<VaRange> {
    if (op.addr | op.range | op.offset) & UAT_PGMSK != 0 {
        return Err(EINVAL);
    }
    let range = VaRange::from_start_size(op.addr, op.range)?;
    if !user_va(geometry).contains_range(&range) {
        return Err(ERANGE);
    }
    Ok(range)
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

    fn vm_index(&self, id: VmId) -> Result<usize> {
        self.vms
            .iter()
            .position(|v| v.as_ref().is_some_and(|v| v.id == id))
            .ok_or(ENOENT)
    }

    fn mappings_mut(&mut self, idx: usize) -> Result<&mut KVec<VaMapping>> {
        Ok(&mut self.vms[idx].as_mut().ok_or(ENOENT)?.mappings)
    }

    /// Creates a user VM, with the dummy page mapped.
    pub fn vm_create(&mut self) -> Result<VmId> {
        // Room first, so that nothing can fail once the VM exists.
        self.vms.reserve(1, GFP_KERNEL)?;
        let id = self.uat.create_vm(false)?;
        let g = self.uat.config().geometry;
        let mapped = self.uat.vm_map(
            id,
            dummy_page_va(g),
            self.dummy.phys(),
            UAT_PGSZ,
            Prot::GPU_SHARED_RO,
        );
        let state = VmState {
            id,
            mappings: KVec::new(),
        };
        if let Err(e) = mapped.and_then(|()| insert_vacant(&mut self.vms, state)) {
            // A new VM holds no slot: destroying it cannot fail.
            let _ = self.uat.destroy_vm(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Destroys a VM (`EBUSY` while it has work submitted); its buffers are unpinned after its
    /// tables and TLB entries are gone.
    pub fn vm_destroy(&mut self, id: VmId) -> Result {
        let idx = self.vm_index(id)?;
        self.uat.destroy_vm(id)?;
        if let Some(vm) = self.vms[idx].take() {
            for m in vm.mappings.iter() {
                unref(&mut self.objects, m.handle);
            }
        }
        Ok(())
    }

    /// The mappings of a VM, sorted by VA.
    pub fn mappings(&self, id: VmId) -> Result<&[VaMapping]> {
        let idx = self.vm_index(id)?;
        Ok(self.vms[idx].as_ref().map_or(&[][..], |v| &v.mappings[..]))
    }

    /// The live VMs.
    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.vms.iter().flatten().map(|v| v.id)
    }

    // ---- Submission ----

    /// Work is submitted for a VM: binds it to a context slot (see [`Uat::bind`]).
    pub fn submit(&mut self, id: VmId) -> Result<usize> {
        self.uat.bind(id)
    }

    /// Work of a VM completed.
    pub fn complete(&mut self, id: VmId) -> Result {
        self.uat.release(id)
    }

    // ---- VM_BIND ----

    /// Validates a bind for VM `id` without changing anything; returns the VA range, and for a
    /// map the protection.
    fn check(&self, id: VmId, op: &BindOp) -> Result<(VaRange, Option<Prot>)> {
        use bind_flags::*;
        if op.flags & !KNOWN != 0 {
            return Err(EINVAL);
        }
        let range = check_va(op, self.uat.config().geometry)?;
        self.vm_index(id)?;
        if op.flags & UNBIND != 0 {
            if op.flags != UNBIND || op.handle != 0 || op.offset != 0 {
                return Err(EINVAL);
            }
            return Ok((range, None));
        }
        let prot = Prot::gpu(Access {
            read: op.flags & READ != 0,
            write: op.flags & WRITE != 0,
        })
        .ok_or(EINVAL)?;
        let obj = self.gem(op.handle)?;
        let need = if op.flags & SINGLE_PAGE != 0 {
            UAT_PGSZ
        } else {
            op.range
        };
        match op.offset.checked_add(need) {
            Some(end) if end <= obj.size() => Ok((range, Some(prot))),
            _ => Err(EINVAL),
        }
    }

    /// Performs one bind operation on VM `id`. On any error nothing changed.
    pub fn bind(&mut self, id: VmId, op: &BindOp) -> Result {
        let (range, prot) = self.check(id, op)?;
        let idx = self.vm_index(id)?;
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
