// SPDX-License-Identifier: GPL-2.0

//! VM_BIND as one operation: all of its ops, or, when memory runs out, none.
//!
//! Each op's steps ([`crate::vm_steps`]) must not allocate, so everything a VM_BIND can need is
//! allocated before the first op is applied: the buffers' scatter lists, the GPUVM's `vm_bo`s
//! and `drm_gpuva`s ([`VmSteps::prepare`], without locks), then every page table of the ranges
//! it maps ([`VmSteps::prealloc_tables`], under the VM's lock, through [`UatAccess::prealloc`]:
//! [`Uat::vm_prealloc_unlocked`] in the kernel, [`Uat::vm_prealloc`] where the UAT is not
//! shared). A failure there, `ENOMEM` or a fatal signal, takes back what was preallocated: the VM
//! is as it was. [`VmSteps::apply`] then applies the ops in order, and at its end frees the
//! tables that were kept or preallocated and hold nothing ([`crate::uat::Uat::vm_prune`]).
//!
//! One source for both builds: the render node (`vm.rs`) and the host's engine
//! (`tools/agx-soc/engine.rs`) call the same functions, with their own [`UatAccess`].

use crate::gpuvm::Bind;
use crate::handoff::FwChannel;
use crate::pte::Prot;
use crate::sg::SgList;
use crate::slots::VmId;
use crate::tlb::TlbInvalidate;
use crate::uat::Uat;
use crate::vm_steps::{StepCtx, VmSteps};
use core::ops::{Deref, Range};
use kernel::alloc::Flags;
use kernel::drm;
use kernel::drm::driver::AllocImpl;
use kernel::drm::gpuvm::{GpuVaAlloc, GpuVm, GpuVmBo, OpMapRequest, UniqueRefGpuVm};
use kernel::prelude::*;
use kernel::sync::aref::ARef;

impl<D, O, T, F> VmSteps<D, O, T, F>
where
    D: drm::Driver + 'static,
    O: AllocImpl<Driver = D> + Send + Sync + 'static,
    T: TlbInvalidate + 'static,
    F: FwChannel + 'static,
{
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
            let mut ctx = StepCtx::for_unbind(uat, vas, keep_tables);
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
