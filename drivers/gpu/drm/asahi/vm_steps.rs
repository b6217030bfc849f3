// SPDX-License-Identifier: GPL-2.0

//! The steps of a VM_BIND: the `drm::gpuvm` driver of a VM, whose map, unmap and remap steps
//! drive the VM's UAT page tables.
//!
//! One source for both builds: the kernel's render node (`vm.rs`) instantiates [`VmSteps`] with
//! its DRM driver, its shmem GEM object and the arm64 UAT; the host tests with a host driver, the
//! host GEM object and the simulated SoC's UAT. The steps need nothing of the object but the
//! scatter list of its pages, which the caller resolves before the locks ([`StepCtx::for_map`]).
//!
//! The steps never allocate: a VM_BIND allocates everything its ops can need before the first
//! is applied ([`crate::vm_bind`]), so one that fails for want of memory changed nothing.

use crate::handoff::FwChannel;
use crate::pte::Prot;
use crate::sg::SgList;
use crate::slots::VmId;
use crate::tlb::{Gather, TlbInvalidate};
use crate::uat::Uat;
use core::marker::PhantomData;
use kernel::alloc::Flags;
use kernel::drm;
use kernel::drm::driver::AllocImpl;
use kernel::drm::gpuvm::{
    DriverGpuVm, GpuVaAlloc, GpuVmBo, OpMap, OpMapped, OpRemap, OpRemapped, OpUnmap, OpUnmapped,
    UniqueRefGpuVm,
};
use kernel::prelude::*;

/// The `drm::gpuvm` driver data of a VM: which UAT VM its page tables are.
///
/// `D` is the DRM driver, `O` its GEM object type, `T` and `F` the UAT's TLB invalidation and
/// firmware channel. None of them is stored: the phantom is a function pointer type, so the
/// `Send + Sync` that [`DriverGpuVm`] requires holds whatever the parameters are. They are
/// `'static` (no borrowed types): the steps take the context of any lifetime, which
/// `DriverGpuVm` allows only for a `Self` that outlives it.
pub struct VmSteps<D, O, T, F> {
    id: VmId,
    _p: PhantomData<Params<D, O, T, F>>,
}

/// The parameters of [`VmSteps`] as a function pointer type: `Send + Sync` whatever they are,
/// and covariant in them.
type Params<D, O, T, F> = fn() -> (D, O, T, F);

impl<D, O, T, F> VmSteps<D, O, T, F> {
    /// Steps driving the page tables of UAT VM `id`.
    pub fn new(id: VmId) -> Self {
        VmSteps {
            id,
            _p: PhantomData,
        }
    }

    /// The UAT VM.
    pub fn id(&self) -> VmId {
        self.id
    }
}

impl<D, O, T, F> VmSteps<D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    /// The most `drm_gpuva`s one `sm_map` or `sm_unmap` consumes: a mapping split on both sides
    /// (a remap with a previous and a next part) and the new mapping.
    pub const PREALLOC_VAS: usize = 3;

    /// Allocates the `drm_gpuva`s of one `sm_map` or `sm_unmap`, before the locks are taken.
    pub fn prealloc_vas(flags: Flags) -> Result<KVec<GpuVaAlloc<Self>>> {
        let mut v = KVec::with_capacity(Self::PREALLOC_VAS, flags)?;
        for _ in 0..Self::PREALLOC_VAS {
            v.push(GpuVaAlloc::new(flags)?, flags)?;
        }
        Ok(v)
    }

    /// Unmaps every mapping of `vm_bo`'s object in its VM (`unique`) with the steps of `ctx`:
    /// what closing a handle does to the client's VMs (Mesa frees a buffer with GEM_CLOSE alone,
    /// counting on the kernel to unmap it).
    ///
    /// The mappings are found one at a time and each unmapped whole, which splits none: `ctx`
    /// needs no preallocated VAs.
    pub fn unmap_object(
        unique: &mut UniqueRefGpuVm<Self>,
        vm_bo: &GpuVmBo<Self>,
        ctx: &mut StepCtx<'_, D, O, T, F>,
    ) -> Result {
        let mut last = None;
        // A vm_bo of another VM has no mapping in this one: nothing is found.
        while let Some(range) = unique.find_va(vm_bo, |va| Some(va.range())) {
            // A mapping still there after the unmap of its whole range: GPUVM went wrong, and
            // looping would not mend it.
            if last.as_ref() == Some(&range) {
                return Err(EIO);
            }
            unique.sm_unmap(range.start, range.end - range.start, ctx)?;
            last = Some(range);
        }
        Ok(())
    }
}

/// What the steps of one `sm_map` or `sm_unmap` work with.
///
/// # Invariants
///
/// `keep_tables` only in the context of an `sm_map` ([`StepCtx::for_map`]) or of an `sm_unmap`
/// whose range [`VmSteps::apply`] prunes afterwards ([`StepCtx::for_unbind`]); `destroyed` only
/// once the UAT VM is gone ([`StepCtx::for_destroyed`]). A `drm_gpuva` put
/// back into `prealloc` was taken from it in the same step, so putting it back never needs more
/// than the capacity `prealloc` came with.
pub struct StepCtx<'a, D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    uat: &'a mut Uat<T, F>,
    /// The pages of the buffer being mapped (`None` for an unbind).
    sg: Option<&'a SgList>,
    prot: Prot,
    /// Whether the one page at the offset is repeated over the range.
    single_page: bool,
    /// Whether unmapped parts keep their tables: inside an `sm_map`, whose map step then maps
    /// the same range into the tables preallocated for it, and in an unbind of a VM_BIND that
    /// maps after it ([`VmSteps::apply`], which prunes them at its end).
    keep_tables: bool,
    /// Whether the UAT VM is gone already ([`StepCtx::for_destroyed`]): the steps only remove
    /// GPUVM's VAs.
    destroyed: bool,
    /// The TLB invalidation and the unlinked tables of the unmap and remap steps, flushed once:
    /// before the map step writes (break-before-make), and when the context is dropped.
    gather: Gather,
    /// The UAT VM the gathered steps were of.
    vm: Option<VmId>,
    /// `drm_gpuva`s allocated before the locks were taken (the steps must not allocate).
    prealloc: KVec<GpuVaAlloc<VmSteps<D, O, T, F>>>,
}

impl<'a, D, O, T, F> StepCtx<'a, D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    /// The context of an `sm_map` of the buffer whose pages are `sg`, with `prot`; with
    /// `single_page`, the page at the op's offset is repeated over its range. The caller has
    /// preallocated the range's tables ([`Uat::vm_prealloc_unlocked`]): what the map replaces
    /// keeps its tables, which the map then fills.
    pub fn for_map(
        uat: &'a mut Uat<T, F>,
        sg: &'a SgList,
        prot: Prot,
        single_page: bool,
        prealloc: KVec<GpuVaAlloc<VmSteps<D, O, T, F>>>,
    ) -> Self {
        StepCtx {
            uat,
            sg: Some(sg),
            prot,
            single_page,
            keep_tables: true,
            destroyed: false,
            gather: Gather::new(),
            vm: None,
            prealloc,
        }
    }

    /// The context of an `sm_unmap`: tables that become empty are freed. Unmapping a range that
    /// splits no mapping needs no `prealloc`.
    pub fn for_unmap(
        uat: &'a mut Uat<T, F>,
        prealloc: KVec<GpuVaAlloc<VmSteps<D, O, T, F>>>,
    ) -> Self {
        StepCtx {
            uat,
            sg: None,
            prot: Prot::GPU_SHARED_RO,
            single_page: false,
            keep_tables: false,
            destroyed: false,
            gather: Gather::new(),
            vm: None,
            prealloc,
        }
    }

    /// The context of an unbind of a VM_BIND ([`VmSteps::apply`]): an `sm_unmap` that, with
    /// `keep_tables`, keeps the tables it empties for a later map of the same VM_BIND. The caller
    /// must prune the range afterwards (the type invariants), as [`VmSteps::apply`] does at its
    /// end: hence only for this crate.
    pub(crate) fn for_unbind(
        uat: &'a mut Uat<T, F>,
        prealloc: KVec<GpuVaAlloc<VmSteps<D, O, T, F>>>,
        keep_tables: bool,
    ) -> Self {
        let mut ctx = Self::for_unmap(uat, prealloc);
        ctx.keep_tables = keep_tables;
        ctx
    }

    /// The context of the `sm_unmap` that empties the GPUVM of a VM whose UAT VM was destroyed
    /// with its mappings in place ([`Uat::can_destroy_mapped`], [`Uat::destroy_vm`]): its TTBAT
    /// entry was cleared, its ASID invalidated and every table freed at once, so the steps only
    /// remove the VAs (which release the buffers afterwards). A VM torn down this way costs one
    /// invalidation, not one per mapping.
    pub fn for_destroyed(uat: &'a mut Uat<T, F>) -> Self {
        let mut ctx = Self::for_unmap(uat, KVec::new());
        ctx.destroyed = true;
        ctx
    }

    /// The preallocated `drm_gpuva`s the steps did not use.
    pub fn unused_vas(&self) -> usize {
        self.prealloc.len()
    }

    fn va(&mut self) -> Result<GpuVaAlloc<VmSteps<D, O, T, F>>> {
        self.prealloc.pop().ok_or(ENOMEM)
    }

    /// Unmaps (or, in an `sm_map`, clears) `start .. start + len` of VM `id` into the gather.
    fn unmap(&mut self, id: VmId, start: u64, len: u64) -> Result {
        if self.destroyed {
            return Ok(());
        }
        self.vm = Some(id);
        let prune = !self.keep_tables;
        self.uat
            .vm_remove_gathered(id, start, len, prune, &mut self.gather)?;
        Ok(())
    }

    /// Flushes the gather: the TLB invalidation of what the steps unmapped, then the tables they
    /// unlinked are freed.
    fn flush(&mut self) {
        if let Some(id) = self.vm.take() {
            self.uat.vm_flush(id, &mut self.gather);
        }
    }
}

impl<D, O, T, F> Drop for StepCtx<'_, D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    /// The end of an `sm_map` or `sm_unmap`: what its steps unmapped is invalidated before the
    /// caller goes on (and releases the buffers), and the tables they unlinked are freed.
    fn drop(&mut self) {
        self.flush();
    }
}

impl<D, O, T, F> DriverGpuVm for VmSteps<D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    type Driver = D;
    type Object = O;
    type VaData = ();
    type VmBoData = ();
    type SmContext<'ctx>
        = StepCtx<'ctx, D, O, T, F>
    where
        Self: 'ctx;

    fn sm_step_map<'op>(
        &mut self,
        op: OpMap<'op, Self>,
        ctx: &mut Self::SmContext<'_>,
    ) -> Result<OpMapped<'op, Self>> {
        let va = ctx.va()?;
        // Break-before-make: what the unmap and remap steps before this one cleared is
        // invalidated before the new descriptors are written.
        ctx.flush();
        let sg = ctx.sg.ok_or(EINVAL)?;
        if ctx.single_page {
            let pa = sg.phys_at(op.gem_offset()).ok_or(EINVAL)?;
            ctx.uat
                .vm_map_repeat(self.id, op.addr(), pa, op.length(), ctx.prot)?;
        } else {
            // From the entry holding the offset on: the map only looks at the entries it uses.
            let (from, skip) = sg.from_offset(op.gem_offset()).ok_or(EINVAL)?;
            ctx.uat
                .vm_map_sg(self.id, op.addr(), op.length(), from, skip, ctx.prot)?;
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
        // The VAs of the kept parts first: should there be none, nothing is unmapped that
        // GPUVM would still hold.
        let vas = [ctx.va()?, ctx.va()?];
        ctx.unmap(self.id, start, end - start)?;
        let (done, ret) = op.remap(vas, (), ());
        if let Some(va) = ret.unused_va {
            // Room for it: it came from `prealloc` (type invariants).
            ctx.prealloc.push_within_capacity(va).map_err(|_| ENOMEM)?;
        }
        Ok(done)
    }
}
