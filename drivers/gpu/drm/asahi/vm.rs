// SPDX-License-Identifier: GPL-2.0

//! GPU VMs of the render node: `drm::gpuvm` keeps each VM's VA tree (immediate mode), and its
//! map, unmap and remap steps drive the VM's UAT page tables.
//!
//! A bind first allocates everything it can need: the buffer's scatter table (which pins its
//! pages), the GPUVM's `vm_bo` and `drm_gpuva`s, and every page table of the range
//! ([`crate::uat::Uat::vm_prealloc`]). So under the locks the steps cannot fail for want of
//! memory: a bind that fails with `ENOMEM` changed nothing.

use crate::bo::{self, Bo};
use crate::driver::{AsahiDevice, AsahiDriver, DevUat, VmTag};
use crate::geometry::{Geometry, VaRange, UAT_PGMSK, UAT_PGSZ};
use crate::pgtable::PhysRange;
use crate::pte::Prot;
use crate::slots::VmId;
use core::ops::Range;
use kernel::device::{Bound, Device};
use kernel::drm::gpuvm::{
    DriverGpuVm, GpuVaAlloc, GpuVm, OpMap, OpMapRequest, OpMapped, OpRemap, OpRemapped, OpUnmap,
    OpUnmapped, UniqueRefGpuVm,
};
use kernel::new_mutex;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::{Arc, Mutex};

/// The user VA window of a G13 GPU: the lower half from its second page (what GET_PARAMS reports
/// as `vm_start .. vm_end`).
pub(crate) fn window(g: Geometry) -> Range<u64> {
    let lower = g.lower_half();
    UAT_PGSZ..lower.last + 1
}

/// The least kernel range a VM must reserve (GET_PARAMS' `vm_kernel_min_size`): room for the
/// VM's kernel-private mappings.
pub(crate) const KERNEL_MIN_SIZE: u64 = 1 << 30;

/// One bind or unbind, validated.
pub(crate) struct Bind {
    /// The VA range.
    pub(crate) va: Range<u64>,
    /// The buffer and the offset into it; `None` for an unbind.
    pub(crate) map: Option<(ARef<Bo>, u64)>,
    /// The protection of a map.
    pub(crate) prot: Prot,
    /// Whether the one page at the offset is repeated over the range.
    pub(crate) single_page: bool,
}

/// The GPUVM driver data of a VM: which UAT VM its page tables are.
pub(crate) struct VmData {
    id: VmId,
}

/// What the steps of one `sm_map` or `sm_unmap` work with.
pub(crate) struct StepCtx<'a> {
    uat: &'a mut DevUat,
    /// The physical ranges of the buffer being mapped (empty for an unbind).
    sg: &'a [PhysRange],
    prot: Prot,
    single_page: bool,
    /// Whether unmapped parts keep their tables: inside an `sm_map`, whose map step then maps
    /// the same range into the tables preallocated for it.
    keep_tables: bool,
    /// `drm_gpuva`s allocated before the locks were taken (the steps must not allocate).
    prealloc: KVec<GpuVaAlloc<VmData>>,
}

impl StepCtx<'_> {
    fn va(&mut self) -> Result<GpuVaAlloc<VmData>> {
        self.prealloc.pop().ok_or(ENOMEM)
    }

    fn unmap(&mut self, id: VmId, start: u64, len: u64) -> Result {
        if self.keep_tables {
            self.uat.vm_clear(id, start, len)?;
        } else {
            self.uat.vm_unmap(id, start, len)?;
        }
        Ok(())
    }
}

/// The physical address of the page at `offset` of `sg`.
fn page_at(sg: &[PhysRange], mut offset: u64) -> Result<u64> {
    for r in sg {
        if offset < r.len {
            return Ok(r.addr + offset);
        }
        offset -= r.len;
    }
    Err(EINVAL)
}

impl DriverGpuVm for VmData {
    type Driver = AsahiDriver;
    type Object = Bo;
    type VaData = ();
    type VmBoData = ();
    type SmContext<'ctx>
        = StepCtx<'ctx>
    where
        Self: 'ctx;

    fn sm_step_map<'op>(
        &mut self,
        op: OpMap<'op, Self>,
        ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpMapped<'op, Self>> {
        let va = ctx.va()?;
        if ctx.single_page {
            let pa = page_at(ctx.sg, op.gem_offset())?;
            ctx.uat
                .vm_map_repeat(self.id, op.addr(), pa, op.length(), ctx.prot)?;
        } else {
            ctx.uat.vm_map_sg(
                self.id,
                op.addr(),
                op.length(),
                ctx.sg,
                op.gem_offset(),
                ctx.prot,
            )?;
        }
        Ok(op.insert(va, ()))
    }

    fn sm_step_unmap<'op>(
        &mut self,
        op: OpUnmap<'op, Self>,
        ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpUnmapped<'op, Self>> {
        let va = op.va();
        ctx.unmap(self.id, va.addr(), va.length())?;
        let (done, _removed) = op.remove();
        Ok(done)
    }

    fn sm_step_remap<'op>(
        &mut self,
        op: OpRemap<'op, Self>,
        ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpRemapped<'op, Self>> {
        // The kept parts stay mapped as they are: only the part in between goes.
        let old = op.va_to_unmap().range();
        let start = op.prev().map_or(old.start, |p| p.addr() + p.length());
        let end = op.next().map_or(old.end, |n| n.addr());
        ctx.unmap(self.id, start, end - start)?;
        let vas = [ctx.va()?, ctx.va()?];
        let (done, ret) = op.remap(vas, (), ());
        if let Some(va) = ret.unused_va {
            // Room for it: it came from `prealloc`.
            ctx.prealloc.push_within_capacity(va).map_err(|_| ENOMEM)?;
        }
        Ok(done)
    }
}

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
    /// The range reserved for the kernel.
    kernel: Range<u64>,
    /// The page mapped read-only at the start of the kernel range (the VM's kernel-private
    /// mapping): reads of it return zeroes.
    _dummy: Page,
}

impl Vm {
    /// Creates a VM whose `kernel` range (already validated) is the kernel's.
    /// Creates a VM whose `kernel` range (already validated) is the kernel's, for client `pid`,
    /// which will know it as `vm_id`.
    pub(crate) fn new(
        ddev: &AsahiDevice,
        kernel: Range<u64>,
        pid: i32,
        vm_id: u32,
    ) -> Result<Arc<Vm>> {
        let g = Geometry::G13;
        let dummy = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let root = bo::new_bo(ddev, PAGE_SIZE, 0, None)?;
        ddev.vm_tags.lock().reserve(1, GFP_KERNEL)?;
        let id = {
            let mut uat = ddev.uat.lock();
            let id = uat.create_vm(true)?;
            if let Err(e) = uat.vm_map(
                id,
                kernel.start,
                dummy.phys(),
                UAT_PGSZ,
                Prot::GPU_SHARED_RO,
            ) {
                let _ = uat.destroy_vm(id);
                return Err(e);
            }
            id
        };
        let unique = GpuVm::<VmData>::new::<Error, _>(
            c"asahi-vm",
            ddev,
            &*root,
            window(g),
            kernel.clone(),
            VmData { id },
        )
        .inspect_err(|_| {
            let _ = ddev.uat.lock().destroy_vm(id);
        })?;
        let gpuvm = ARef::from(&*unique);
        let tag = VmTag {
            uat: id,
            pid,
            vm_id,
        };
        // Room was reserved above; a VM without its tag would only be missing from debugfs.
        let _ = ddev.vm_tags.lock().push_within_capacity(tag);
        Arc::pin_init(
            pin_init!(Self {
                unique <- new_mutex!(unique),
                gpuvm,
                root,
                dev: ARef::from(ddev),
                id,
                kernel,
                _dummy: dummy,
            }),
            GFP_KERNEL,
        )
    }

    /// The GPUVM's root object.
    pub(crate) fn root(&self) -> &Bo {
        &self.root
    }

    /// The UAT VM.
    pub(crate) fn id(&self) -> VmId {
        self.id
    }

    /// Validates a bind of this VM: `EINVAL` for an unaligned, empty or wrapping range, one
    /// outside the window or touching the kernel range, or a buffer range outside the buffer.
    pub(crate) fn check(&self, va: Range<u64>, map: Option<(&Bo, u64)>, single: bool) -> Result {
        let w = window(Geometry::G13);
        if (va.start | va.end) & UAT_PGMSK != 0
            || va.start >= va.end
            || va.start < w.start
            || va.end > w.end
            || (va.start < self.kernel.end && self.kernel.start < va.end)
        {
            return Err(EINVAL);
        }
        if let Some((bo, offset)) = map {
            let need = if single { UAT_PGSZ } else { va.end - va.start };
            let size = u64::try_from(kernel::drm::gem::BaseObject::size(bo))?;
            match offset.checked_add(need) {
                Some(end) if offset & UAT_PGMSK == 0 && end <= size => {}
                _ => return Err(EINVAL),
            }
        }
        Ok(())
    }

    fn prealloc() -> Result<KVec<GpuVaAlloc<VmData>>> {
        let mut v = KVec::with_capacity(3, GFP_KERNEL)?;
        for _ in 0..3 {
            v.push(GpuVaAlloc::new(GFP_KERNEL)?, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// Performs a validated bind (see [`Vm::check`]).
    pub(crate) fn bind(&self, pdev: &Device<Bound>, b: &Bind) -> Result {
        let len = b.va.end - b.va.start;
        let prealloc = Self::prealloc()?;
        let Some((bo, offset)) = &b.map else {
            let mut unique = self.unique.lock();
            let mut uat = self.dev.uat.lock();
            let mut ctx = StepCtx {
                uat: &mut uat,
                sg: &[],
                prot: b.prot,
                single_page: false,
                keep_tables: false,
                prealloc,
            };
            unique.sm_unmap(b.va.start, len, &mut ctx)?;
            drop(uat);
            drop(unique);
            self.gpuvm.deferred_cleanup();
            return Ok(());
        };
        let sg = bo::phys_ranges(bo, pdev)?;
        let vm_bo = self.gpuvm.obtain(bo, ())?;
        let mut unique = self.unique.lock();
        let mut uat = self.dev.uat.lock();
        uat.vm_prealloc(self.id, b.va.start, len)?;
        let mut ctx = StepCtx {
            uat: &mut uat,
            sg: &sg,
            prot: b.prot,
            single_page: b.single_page,
            keep_tables: true,
            prealloc,
        };
        let r = unique.sm_map(OpMapRequest {
            addr: b.va.start,
            range: len,
            gem_offset: *offset,
            vm_bo: &vm_bo,
            context: &mut ctx,
        });
        drop(uat);
        drop(unique);
        drop(vm_bo);
        self.gpuvm.deferred_cleanup();
        r
    }

    /// The VA range of this VM the kernel reserved.
    pub(crate) fn kernel_range(&self) -> VaRange {
        VaRange {
            start: self.kernel.start,
            last: self.kernel.end - 1,
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // GPUVM warns if VAs are left when the VM is freed: unmap everything first, the window
        // on both sides of the kernel range (which GPUVM's calls refuse). Unmapping all of it
        // never splits a mapping, so it needs no preallocated VAs.
        let mut unique = self.unique.lock();
        let mut uat = self.dev.uat.lock();
        let mut ctx = StepCtx {
            uat: &mut uat,
            sg: &[],
            prot: Prot::GPU_SHARED_RO,
            single_page: false,
            keep_tables: false,
            prealloc: KVec::new(),
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
        if let Err(e) = uat.destroy_vm(self.id) {
            pr_err!("VM {}: destroy failed: {:?}\n", self.id, e);
        }
        self.dev.vm_tags.lock().retain(|t| t.uat != self.id);
        drop(uat);
        drop(unique);
        self.gpuvm.deferred_cleanup();
    }
}
