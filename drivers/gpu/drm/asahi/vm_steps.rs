// SPDX-License-Identifier: GPL-2.0

//! The steps of a VM_BIND: the `drm::gpuvm` driver of a VM, whose map, unmap and remap steps
//! drive the VM's UAT page tables.
//!
//! One source for both builds: the kernel's render node (`vm.rs`) instantiates [`VmSteps`] with
//! its DRM driver, its shmem GEM object and the arm64 UAT; the host tests with a host driver, the
//! host GEM object and the simulated SoC's UAT. The steps need nothing of the object but the
//! scatter list of its pages, which the caller resolves before the locks ([`StepCtx::for_map`]).
//!
//! A VM_BIND first allocates everything any of its ops can need: the buffers' scatter lists,
//! the GPUVM's `vm_bo`s and `drm_gpuva`s ([`VmSteps::prepare`]), and every page table of the
//! ranges it maps ([`Uat::vm_prealloc_unlocked`] in the kernel, [`Uat::vm_prealloc`] where the
//! UAT is not shared). So the steps never allocate, and a VM_BIND that fails for want of memory
//! changed nothing, whichever of its ops needed it ([`VmSteps::apply`]).

use crate::gpuvm::Bind;
use crate::handoff::FwChannel;
use crate::pte::Prot;
use crate::sg::SgList;
use crate::slots::VmId;
use crate::tlb::{Gather, TlbInvalidate};
use crate::uat::Uat;
use core::marker::PhantomData;
use core::ops::{Deref, Range};
use kernel::alloc::Flags;
use kernel::drm;
use kernel::drm::driver::AllocImpl;
use kernel::drm::gpuvm::{
    DriverGpuVm, GpuVaAlloc, GpuVm, GpuVmBo, OpMap, OpMapRequest, OpMapped, OpRemap, OpRemapped,
    OpUnmap, OpUnmapped, UniqueRefGpuVm,
};
use kernel::prelude::*;
use kernel::sync::aref::ARef;

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

    /// Allocates everything the validated bind `b` needs but page tables, before the locks are
    /// taken: its `drm_gpuva`s and, for a map, the buffer's scatter list (`scatter`, which pins
    /// its pages) and its `vm_bo` in `gpuvm`.
    pub fn prepare<'a, B: Deref<Target = O>>(
        gpuvm: &GpuVm<Self>,
        b: &'a Bind<B>,
        scatter: impl FnOnce(&'a O) -> Result<&'a SgList>,
        flags: Flags,
    ) -> Result<Prepared<'a, D, O, T, F>> {
        let vas = Self::prealloc_vas(flags)?;
        let map = match &b.map {
            None => None,
            Some((bo, offset)) => {
                let sg = scatter(bo)?;
                let vm_bo = gpuvm.obtain(bo, ())?;
                Some(PreparedMap {
                    vm_bo,
                    sg,
                    offset: *offset,
                    prot: b.prot,
                    single_page: b.single_page,
                })
            }
        };
        Ok(Prepared {
            va: b.va.clone(),
            vas,
            map,
        })
    }

    /// The most VA [`VmSteps::prealloc_tables`] preallocates between two questions to its
    /// `killable`: 2 GiB, at most 65 table pages (1 MiB) with 16 KiB pages. One op can map the
    /// whole window (a single-page bind needs one page of buffer for it), whose tables take a
    /// while to allocate.
    pub const PREALLOC_CHUNK: u64 = 1 << 31;

    /// Preallocates the page tables of every map of the prepared `ops` in UAT VM `id`, under the
    /// VM's lock, before [`VmSteps::apply`], [`Self::PREALLOC_CHUNK`] at a time (aligned), with
    /// `killable` asked before each. Should one fail (`ENOMEM`, or `EINTR` from `killable`), the
    /// tables preallocated so far go again (pruned, as [`VmSteps::apply`] does): the VM is as it
    /// was.
    pub fn prealloc_tables(
        uat: &mut impl UatAccess<T, F>,
        id: VmId,
        ops: &[Prepared<'_, D, O, T, F>],
        mut killable: impl FnMut() -> Result,
    ) -> Result {
        for (k, op) in ops.iter().enumerate() {
            if op.map.is_none() {
                continue;
            }
            let mut at = op.va.start;
            while at < op.va.end {
                let next = (at | (Self::PREALLOC_CHUNK - 1)).saturating_add(1);
                let end = next.min(op.va.end);
                let done = killable().and_then(|()| uat.prealloc(id, at, end - at));
                if let Err(e) = done {
                    Self::prune_logged(uat, id, ops[..=k].iter().filter(|op| op.map.is_some()));
                    return Err(e);
                }
                at = end;
            }
        }
        Ok(())
    }

    /// Applies the prepared `ops` of one VM_BIND to UAT VM `id`, in order, under the VM's lock
    /// (`unique`), once the tables of every map are preallocated
    /// ([`VmSteps::prealloc_tables`]).
    ///
    /// Nothing here allocates, so `ENOMEM` cannot stop it half-way. (Unmapping what the
    /// firmware caches would: [`Uat::vm_remove_gathered`] collects those mappings first. No
    /// VM_BIND maps any: its protections are all the GPU's own.) An unbind followed by a map
    /// keeps the tables it empties, which the map may need; they go at the end if they still
    /// hold nothing. The ops apply one after the other until one fails, which takes something
    /// outside the caller's control: a fatal signal (`killable`: the caller is dying), a
    /// corrupt table (`EIO`) or a firmware that does not answer. The ops before it then stay
    /// applied, and the tables of every op that hold nothing go.
    pub fn apply(
        unique: &mut UniqueRefGpuVm<Self>,
        uat: &mut impl UatAccess<T, F>,
        id: VmId,
        ops: &mut [Prepared<'_, D, O, T, F>],
        mut killable: impl FnMut() -> Result,
    ) -> Result {
        let last_map = ops.iter().rposition(|op| op.map.is_some());
        let mut r = Ok(());
        for (i, op) in ops.iter_mut().enumerate() {
            let keep_tables = last_map.is_some_and(|m| i < m);
            r = killable()
                .and_then(|()| uat.with(|uat| Self::apply_one(unique, uat, op, keep_tables)));
            if r.is_err() {
                break;
            }
        }
        let kept: &[Prepared<'_, D, O, T, F>] = match (&r, last_map) {
            (Err(_), _) => ops,
            (Ok(()), Some(m)) => &ops[..m],
            (Ok(()), None) => &[],
        };
        // After a failure, every op's range: the tables preallocated for the maps not applied.
        let failed = r.is_err();
        Self::prune_logged(uat, id, kept.iter().filter(|op| failed || op.map.is_none()));
        r
    }

    /// One op of [`VmSteps::apply`]: `keep_tables` for an unbind whose tables a later map may
    /// need.
    fn apply_one(
        unique: &mut UniqueRefGpuVm<Self>,
        uat: &mut Uat<T, F>,
        op: &mut Prepared<'_, D, O, T, F>,
        keep_tables: bool,
    ) -> Result {
        let vas = core::mem::take(&mut op.vas);
        let len = op.va.end - op.va.start;
        let Some(map) = &op.map else {
            let mut ctx = StepCtx::for_unmap(uat, vas);
            ctx.keep_tables = keep_tables;
            // The unmapped range is invalidated (and emptied tables freed) as the context goes.
            return unique.sm_unmap(op.va.start, len, &mut ctx);
        };
        let mut ctx = StepCtx::for_map(uat, map.sg, map.prot, map.single_page, vas);
        unique.sm_map(OpMapRequest {
            addr: op.va.start,
            range: len,
            gem_offset: map.offset,
            vm_bo: &map.vm_bo,
            context: &mut ctx,
        })
    }

    /// Frees the tables of UAT VM `id` in the ranges of `ops` that hold nothing
    /// ([`Uat::vm_prune`]): those a VM_BIND kept or preallocated and did not use. Mappings stay.
    /// A range that overlaps or touches the one before is pruned with it, in one walk (a run of
    /// consecutive ops on the same pages prunes once). A failure (`EIO`: a corrupt table, reported
    /// already) is logged: it leaves empty tables, which go with the VM, and what the caller
    /// reports is the outcome of the ops.
    fn prune_logged<'o, 'a: 'o>(
        uat: &mut impl UatAccess<T, F>,
        id: VmId,
        ops: impl IntoIterator<Item = &'o Prepared<'a, D, O, T, F>>,
    ) {
        let mut prune = |r: Range<u64>| {
            if let Err(e) = uat.with(|uat| uat.vm_prune(id, r.start, r.end - r.start)) {
                pr_err!("VM {}: freeing the unused tables of a bind: {:?}\n", id, e);
            }
        };
        let mut run: Option<Range<u64>> = None;
        for op in ops {
            let va = &op.va;
            match &mut run {
                Some(cur) if va.start <= cur.end && cur.start <= va.end => {
                    cur.start = cur.start.min(va.start);
                    cur.end = cur.end.max(va.end);
                }
                _ => {
                    if let Some(cur) = run.replace(va.clone()) {
                        prune(cur);
                    }
                }
            }
        }
        if let Some(cur) = run {
            prune(cur);
        }
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

/// How [`VmSteps::apply`] reaches the UAT: once per op, so that a lock every client waits on
/// (the kernel's device-wide UAT mutex) is not held across a whole VM_BIND. The VM's own lock,
/// held throughout, keeps its tables as they are in between.
pub trait UatAccess<T: TlbInvalidate, F: FwChannel> {
    /// Runs `f` on the UAT.
    fn with<R>(&mut self, f: impl FnOnce(&mut Uat<T, F>) -> R) -> R;

    /// Preallocates the tables of `size` bytes at `iova` in UAT VM `id` ([`Uat::vm_prealloc`]):
    /// all of them or none (`ENOMEM`).
    fn prealloc(&mut self, id: VmId, iova: u64, size: u64) -> Result;
}

/// A UAT its caller owns, which no one else reaches meanwhile (the host's engine).
impl<T: TlbInvalidate, F: FwChannel> UatAccess<T, F> for Uat<T, F> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Uat<T, F>) -> R) -> R {
        f(self)
    }

    fn prealloc(&mut self, id: VmId, iova: u64, size: u64) -> Result {
        self.vm_prealloc(id, iova, size)
    }
}

/// One op of a VM_BIND with everything it needs but page tables allocated
/// ([`VmSteps::prepare`]).
pub struct Prepared<'a, D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    /// The VA range.
    va: Range<u64>,
    /// The `drm_gpuva`s its `sm_map` or `sm_unmap` may consume ([`VmSteps::PREALLOC_VAS`]).
    vas: KVec<GpuVaAlloc<VmSteps<D, O, T, F>>>,
    /// What a map maps; `None` for an unbind.
    map: Option<PreparedMap<'a, D, O, T, F>>,
}

/// The buffer side of a prepared map.
struct PreparedMap<'a, D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
    vm_bo: ARef<GpuVmBo<VmSteps<D, O, T, F>>>,
    /// The buffer's pages, pinned.
    sg: &'a SgList,
    /// The offset into the buffer.
    offset: u64,
    prot: Prot,
    /// Whether the one page at the offset is repeated over the range.
    single_page: bool,
}

/// What the steps of one `sm_map` or `sm_unmap` work with.
///
/// # Invariants
///
/// `keep_tables` only in the context of an `sm_map` ([`StepCtx::for_map`]) or of an `sm_unmap`
/// whose range [`VmSteps::apply`] prunes afterwards; `destroyed` only once
/// the UAT VM is gone ([`StepCtx::for_destroyed`]). A `drm_gpuva` put
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

    /// The context of an `sm_unmap`: tables that become empty are freed (unless
    /// [`VmSteps::apply`] keeps them for a later map of the same VM_BIND). Unmapping a range that
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
            let gather = core::mem::take(&mut self.gather);
            self.uat.vm_flush(id, gather);
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
