// SPDX-License-Identifier: GPL-2.0

//! The host twin of `rust/kernel/drm/gpuvm/sm_ops.rs` (Linux 7.3), with the split/merge walks of
//! `drm_gpuvm.c` (`__drm_gpuvm_sm_map()`, `__drm_gpuvm_sm_unmap()`, without madvise) that call
//! the steps.

use super::*;

/// The host twin of `struct drm_gpuva_op_map`.
pub(super) struct RawOpMap {
    pub(super) addr: u64,
    pub(super) range: u64,
    pub(super) offset: u64,
    pub(super) obj: *mut RawObject,
}

/// The host twin of `struct drm_gpuva_op_unmap`.
pub(super) struct RawOpUnmap<T: DriverGpuVm> {
    va: *mut GpuVa<T>,
    keep: bool,
}

/// The host twin of `struct drm_gpuva_op_remap`.
pub(super) struct RawOpRemap<T: DriverGpuVm> {
    prev: Option<OpRemapMapData>,
    next: Option<OpRemapMapData>,
    unmap: RawOpUnmap<T>,
}

/// The argument for [`UniqueRefGpuVm::sm_map`].
pub struct OpMapRequest<'a, 'ctx, T: DriverGpuVm + 'ctx> {
    /// Address in GPU virtual address space.
    pub addr: u64,
    /// Length of mapping to create.
    pub range: u64,
    /// Offset in GEM object.
    pub gem_offset: u64,
    /// The GEM object to map.
    pub vm_bo: &'a GpuVmBo<T>,
    /// The user-provided context type.
    pub context: &'a mut T::SmContext<'ctx>,
}

impl<'a, 'ctx, T: DriverGpuVm> OpMapRequest<'a, 'ctx, T> {
    fn raw_request(&self) -> RawOpMap {
        RawOpMap {
            addr: self.addr,
            range: self.range,
            offset: self.gem_offset,
            obj: self.vm_bo.obj().as_raw(),
        }
    }
}

/// Represents an `sm_step_map` operation that has not yet been completed.
pub struct OpMap<'op, T: DriverGpuVm> {
    op: &'op RawOpMap,
    // Since these abstractions are designed for immediate mode, the VM BO needs to be
    // pre-allocated, so we always have it available when we reach this point.
    vm_bo: &'op GpuVmBo<T>,
    // This ensures that 'op is invariant, so that `OpMap<'long, T>` does not
    // coerce to `OpMap<'short, T>`. This ensures that the user can't return
    // the wrong `OpMapped` value.
    _invariant: PhantomData<*mut &'op mut T>,
}

impl<'op, T: DriverGpuVm> OpMap<'op, T> {
    /// The base address of the new mapping.
    pub fn addr(&self) -> u64 {
        self.op.addr
    }

    /// The length of the new mapping.
    pub fn length(&self) -> u64 {
        self.op.range
    }

    /// The offset within the [`drm_gem_object`](DriverGpuVm::Object).
    pub fn gem_offset(&self) -> u64 {
        self.op.offset
    }

    /// The [`drm_gem_object`](DriverGpuVm::Object) to map.
    pub fn obj(&self) -> &T::Object {
        // SAFETY: The `obj` pointer is the request's vm_bo's object, which the vm_bo keeps alive.
        unsafe { <T::Object as IntoGEMObject>::from_raw(self.op.obj) }
    }

    /// The [`GpuVmBo`] that the new VA will be associated with.
    pub fn vm_bo(&self) -> &GpuVmBo<T> {
        self.vm_bo
    }

    /// Use the pre-allocated VA to carry out this map operation.
    pub fn insert(self, va: GpuVaAlloc<T>, va_data: impl PinInit<T::VaData>) -> OpMapped<'op, T> {
        let va = va.prepare(va_data);
        // SAFETY: An `OpMap` only exists inside a step of `sm_map`, which holds the unique
        // reference of this vm_bo's VM (checked there): we may access the interval tree.
        unsafe { va::map_raw(self.vm_bo.gpuvm(), va, self.op) };

        let _gpuva_guard = self.vm_bo().lock_gpuva();
        // SAFETY: The va is prepared for insertion, and we hold the GEM lock.
        unsafe { self.vm_bo.link(va) };

        OpMapped {
            _invariant: self._invariant,
        }
    }
}

/// Represents a completed [`OpMap`] operation.
pub struct OpMapped<'op, T> {
    _invariant: PhantomData<*mut &'op mut T>,
}

/// Represents an `sm_step_unmap` operation that has not yet been completed.
pub struct OpUnmap<'op, T: DriverGpuVm> {
    op: &'op RawOpUnmap<T>,
    // This ensures that 'op is invariant, so that `OpUnmap<'long, T>` does not
    // coerce to `OpUnmap<'short, T>`. This ensures that the user can't return the
    // wrong`OpUnmapped` value.
    _invariant: PhantomData<*mut &'op mut T>,
}

impl<'op, T: DriverGpuVm> OpUnmap<'op, T> {
    /// Indicates whether this [`GpuVa`] is physically contiguous with the
    /// original mapping request.
    ///
    /// Optionally, if `keep` is set, drivers may keep the actual page table
    /// mappings for this `drm_gpuva`, adding the missing page table entries
    /// only and update the `drm_gpuvm` accordingly.
    pub fn keep(&self) -> bool {
        self.op.keep
    }

    /// The range being unmapped.
    pub fn va(&self) -> &GpuVa<T> {
        // SAFETY: This is a valid va. It's not the `kernel_alloc_node` because you can't unmap it,
        // and it's not sparse by the `GpuVm<T>` type invariants.
        unsafe { GpuVa::<T>::from_raw(self.op.va) }
    }

    /// Remove the VA.
    pub fn remove(self) -> (OpUnmapped<'op, T>, GpuVaRemoved<T>) {
        // SAFETY: The op references a valid drm_gpuva in the GPUVM, and we run inside a step of
        // the unique reference's `sm_*` call: `drm_gpuva_unmap()`.
        unsafe { va::remove_raw(self.op.va) };
        // SAFETY: The va is no longer in the interval tree so we may unlink it.
        unsafe { GpuVmBo::unlink_defer(self.op.va) };

        // SAFETY: We just removed this va from the `GpuVm<T>`.
        let va = unsafe { GpuVaRemoved::from_raw(self.op.va) };

        (
            OpUnmapped {
                _invariant: self._invariant,
            },
            va,
        )
    }
}

/// Represents a completed [`OpUnmap`] operation.
pub struct OpUnmapped<'op, T> {
    _invariant: PhantomData<*mut &'op mut T>,
}

/// Represents an `sm_step_remap` operation that has not yet been completed.
pub struct OpRemap<'op, T: DriverGpuVm> {
    op: &'op RawOpRemap<T>,
    // This ensures that 'op is invariant, so that `OpRemap<'long, T>` does not
    // coerce to `OpRemap<'short, T>`. This ensures that the user can't return the
    // wrong`OpRemapped` value.
    _invariant: PhantomData<*mut &'op mut T>,
}

impl<'op, T: DriverGpuVm> OpRemap<'op, T> {
    /// The preceding part of a split mapping.
    #[inline]
    pub fn prev(&self) -> Option<&OpRemapMapData> {
        self.op.prev.as_ref()
    }

    /// The subsequent part of a split mapping.
    #[inline]
    pub fn next(&self) -> Option<&OpRemapMapData> {
        self.op.next.as_ref()
    }

    /// Indicates whether the `drm_gpuva` being removed is physically contiguous with the original
    /// mapping request.
    ///
    /// Optionally, if `keep` is set, drivers may keep the actual page table mappings for this
    /// `drm_gpuva`, adding the missing page table entries only and update the `drm_gpuvm`
    /// accordingly.
    #[inline]
    pub fn keep(&self) -> bool {
        self.op.unmap.keep
    }

    /// The range being unmapped.
    #[inline]
    pub fn va_to_unmap(&self) -> &GpuVa<T> {
        // SAFETY: This is a valid va. It's not the `kernel_alloc_node` because you can't unmap it,
        // and it's not sparse by the `GpuVm<T>` type invariants.
        unsafe { GpuVa::<T>::from_raw(self.op.unmap.va) }
    }

    /// The [`drm_gem_object`](DriverGpuVm::Object) whose VA is being remapped.
    #[inline]
    pub fn obj(&self) -> &T::Object {
        self.va_to_unmap().obj()
    }

    /// The [`GpuVmBo`] that is being remapped.
    #[inline]
    pub fn vm_bo(&self) -> &GpuVmBo<T> {
        self.va_to_unmap().vm_bo()
    }

    /// Update the GPUVM to perform the remapping.
    pub fn remap(
        self,
        va_alloc: [GpuVaAlloc<T>; 2],
        prev_data: impl PinInit<T::VaData>,
        next_data: impl PinInit<T::VaData>,
    ) -> (OpRemapped<'op, T>, OpRemapRet<T>) {
        let [va1, va2] = va_alloc;

        let mut unused_va = None;
        let mut prev_ptr = ptr::null_mut();
        let mut next_ptr = ptr::null_mut();
        if self.prev().is_some() {
            prev_ptr = va1.prepare(prev_data);
        } else {
            unused_va = Some(va1);
        }
        if self.next().is_some() {
            next_ptr = va2.prepare(next_data);
        } else {
            unused_va = Some(va2);
        }

        let old = self.op.unmap.va;
        // SAFETY: `old` is a valid VA of the VM (below); the vm_bo it is linked to holds a VM
        // reference, so the VM outlives this call.
        let gpuvm = unsafe { &*(*(*old).as_raw()).vm };
        // SAFETY: `drm_gpuva_remap()`: we run inside a step of the unique reference's `sm_*`
        // call, so we may access the tree; the old VA holds a reference to its vm_bo, which holds
        // one to the VM, so its own VM reference is not the last.
        unsafe {
            va::remove_raw(old);
            if let Some(prev) = &self.op.prev {
                va::map_raw(gpuvm, prev_ptr, &prev.0);
            }
            if let Some(next) = &self.op.next {
                va::map_raw(gpuvm, next_ptr, &next.0);
            }
        }

        let vm_bo = self.vm_bo();
        let gpuva_guard = vm_bo.lock_gpuva();
        if !prev_ptr.is_null() {
            // SAFETY: The prev_ptr is a valid drm_gpuva prepared for insertion. The vm_bo is still
            // valid as the not-yet-unlinked gpuva holds a refcount on the vm_bo.
            unsafe { vm_bo.link(prev_ptr) };
        }
        if !next_ptr.is_null() {
            // SAFETY: The next_ptr is a valid drm_gpuva prepared for insertion. The vm_bo is still
            // valid as the not-yet-unlinked gpuva holds a refcount on the vm_bo.
            unsafe { vm_bo.link(next_ptr) };
        }
        drop(gpuva_guard);

        // SAFETY: The va is no longer in the interval tree so we may unlink it.
        unsafe { GpuVmBo::unlink_defer(old) };

        (
            OpRemapped {
                _invariant: self._invariant,
            },
            OpRemapRet {
                // SAFETY: We just removed this va from the `GpuVm<T>`.
                unmapped_va: unsafe { GpuVaRemoved::from_raw(old) },
                unused_va,
            },
        )
    }
}

/// Part of an [`OpRemap`] that represents a new mapping.
#[repr(transparent)]
pub struct OpRemapMapData(RawOpMap);

impl OpRemapMapData {
    /// The base address of the new mapping.
    pub fn addr(&self) -> u64 {
        self.0.addr
    }

    /// The length of the new mapping.
    pub fn length(&self) -> u64 {
        self.0.range
    }

    /// The offset within the [`drm_gem_object`](DriverGpuVm::Object).
    pub fn gem_offset(&self) -> u64 {
        self.0.offset
    }
}

/// Struct containing objects removed or not used by [`OpRemap::remap`].
pub struct OpRemapRet<T: DriverGpuVm> {
    /// The `drm_gpuva` that was removed.
    pub unmapped_va: GpuVaRemoved<T>,
    /// If the remap did not split the region into two pieces, then the unused `drm_gpuva` is
    /// returned here.
    pub unused_va: Option<GpuVaAlloc<T>>,
}

/// Represents a completed [`OpRemap`] operation.
pub struct OpRemapped<'op, T> {
    _invariant: PhantomData<*mut &'op mut T>,
}

/// What one step of a walk is given: the C side's `drm_gpuva_op`.
enum Step<T: DriverGpuVm> {
    Unmap(RawOpUnmap<T>),
    Remap(RawOpRemap<T>),
    Map(RawOpMap),
}

/// The state one `sm_*` call threads through its steps (`SmData` / `SmMapData`).
struct Walk<'a, 'ctx, T: DriverGpuVm + 'ctx> {
    gpuvm: &'a GpuVm<T>,
    data: &'a mut T,
    context: &'a mut T::SmContext<'ctx>,
    /// For `sm_map()`: the request's vm_bo, of `gpuvm`.
    vm_bo: Option<&'a GpuVmBo<T>>,
}

impl<T: DriverGpuVm> Walk<'_, '_, T> {
    /// `op_*_cb()`: calls the driver's step.
    fn step(&mut self, step: Step<T>) -> Result {
        match step {
            Step::Unmap(raw) => {
                let op = OpUnmap {
                    op: &raw,
                    _invariant: PhantomData,
                };
                self.data.sm_step_unmap(op, self.context).map(|_| ())
            }
            Step::Remap(raw) => {
                let op = OpRemap {
                    op: &raw,
                    _invariant: PhantomData,
                };
                self.data.sm_step_remap(op, self.context).map(|_| ())
            }
            Step::Map(raw) => {
                let Some(vm_bo) = self.vm_bo else {
                    return Err(EINVAL);
                };
                let op = OpMap {
                    op: &raw,
                    vm_bo,
                    _invariant: PhantomData,
                };
                self.data.sm_step_map(op, self.context).map(|_| ())
            }
        }
    }

    /// `drm_gpuvm_for_each_va_range_safe()` over `[req_addr, req_end)`: calls `f` on each VA
    /// (its key, pointer and fields), the successor taken before `f` runs; `f` returns whether
    /// to go on.
    fn for_each_va_range_safe(
        &mut self,
        req_addr: u64,
        req_range: u64,
        mut f: impl FnMut(&mut Self, *mut GpuVa<T>, &RawGpuva<T>) -> Result<bool>,
    ) -> Result {
        let req_end = req_addr.wrapping_add(req_range);
        // SAFETY: The walk holds the unique reference mutably and keeps no reference to the tree
        // across steps (the same holds for each `tree()` below).
        let mut cur = unsafe { self.gpuvm.tree() }.find_first(req_addr, req_range);
        let mut next = cur.and_then(|k| {
            // SAFETY: See above.
            unsafe { self.gpuvm.tree() }.next(k)
        });
        while let Some(key) = cur {
            // SAFETY: See above.
            let Some(node) = unsafe { self.gpuvm.tree() }.get(key) else {
                break;
            };
            if key.0 >= req_end {
                break;
            }
            // The kernel-reserved node is never reached: `drm_gpuvm_range_valid()` refused any
            // request it would overlap.
            let Some(va) = node.va else {
                return Err(EINVAL);
            };
            // SAFETY: A VA in the tree is valid; we copy its fields before the step changes it.
            let raw = unsafe { &*(*va.as_ptr()).as_raw() };
            let fields = RawGpuva { ..*raw };
            if !f(self, va.as_ptr(), &fields)? {
                break;
            }
            cur = next;
            next = cur.and_then(|k| {
                // SAFETY: See above.
                unsafe { self.gpuvm.tree() }.next(k)
            });
        }
        Ok(())
    }
}

impl<T: DriverGpuVm> Clone for RawGpuva<T> {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

impl<T: DriverGpuVm> UniqueRefGpuVm<T> {
    /// Both halves of the unique reference: the VM and its data.
    fn walk<'a, 'ctx>(
        &'a mut self,
        context: &'a mut T::SmContext<'ctx>,
        vm_bo: Option<&'a GpuVmBo<T>>,
    ) -> Walk<'a, 'ctx, T> {
        let gpuvm: &GpuVm<T> = &self.0;
        // SAFETY: By the type invariants we may access `data`; `self` is borrowed mutably for
        // `'a`, so nothing else does.
        let data = unsafe { &mut *gpuvm.data.get() };
        Walk {
            gpuvm,
            data,
            context,
            vm_bo,
        }
    }

    /// Create a mapping, removing or remapping anything that overlaps.
    ///
    /// Internally calls the [`DriverGpuVm`] callbacks similar to [`Self::sm_unmap`], except that
    /// the [`DriverGpuVm::sm_step_map`] is called once to create the requested mapping.
    #[inline]
    pub fn sm_map(&mut self, req: OpMapRequest<'_, '_, T>) -> Result {
        if req.vm_bo.gpuvm() != &**self {
            return Err(EINVAL);
        }
        let raw_req = req.raw_request();
        let mut w = self.walk(req.context, Some(req.vm_bo));
        sm_map_walk(&mut w, raw_req)
    }

    /// Remove any mappings in the given region.
    ///
    /// Internally calls [`DriverGpuVm::sm_step_unmap`] for ranges entirely contained within the
    /// given range, and [`DriverGpuVm::sm_step_remap`] for ranges that overlap with the range.
    #[inline]
    pub fn sm_unmap(&mut self, addr: u64, length: u64, context: &mut T::SmContext<'_>) -> Result {
        let mut w = self.walk(context, None);
        sm_unmap_walk(&mut w, addr, length)
    }
}

/// `__drm_gpuvm_sm_map()` without madvise (`drm_gpuvm.c`).
fn sm_map_walk<T: DriverGpuVm>(w: &mut Walk<'_, '_, T>, req: RawOpMap) -> Result {
    let req_obj = req.obj;
    let req_offset = req.offset;
    let req_range = req.range;
    let req_addr = req.addr;
    let req_end = req_addr.wrapping_add(req_range);

    if !w.gpuvm.range_valid(req_addr, req_range) {
        return Err(EINVAL);
    }

    w.for_each_va_range_safe(req_addr, req_range, |w, va, f| {
        let (obj, offset, addr, range) = (f.obj, f.offset, f.addr, f.range);
        let end = addr + range;
        let mut merge = !obj.is_null();
        let unmap = |keep| RawOpUnmap { va, keep };
        let part = |addr, range, offset| {
            Some(OpRemapMapData(RawOpMap {
                addr,
                range,
                offset,
                obj,
            }))
        };

        if addr == req_addr {
            merge &= obj == req_obj && offset == req_offset;
            if end == req_end {
                w.step(Step::Unmap(unmap(merge)))?;
                return Ok(false);
            }
            if end < req_end {
                w.step(Step::Unmap(unmap(merge)))?;
                return Ok(true);
            }
            // end > req_end
            w.step(Step::Remap(RawOpRemap {
                prev: None,
                next: part(req_end, range - req_range, offset + req_range),
                unmap: unmap(merge),
            }))?;
            Ok(false)
        } else if addr < req_addr {
            let ls_range = req_addr - addr;
            let p = part(addr, ls_range, offset);
            merge &= obj == req_obj && offset + ls_range == req_offset;
            if end == req_end {
                w.step(Step::Remap(RawOpRemap {
                    prev: p,
                    next: None,
                    unmap: unmap(merge),
                }))?;
                return Ok(false);
            }
            if end < req_end {
                w.step(Step::Remap(RawOpRemap {
                    prev: p,
                    next: None,
                    unmap: unmap(merge),
                }))?;
                return Ok(true);
            }
            // end > req_end
            w.step(Step::Remap(RawOpRemap {
                prev: p,
                next: part(req_end, end - req_end, offset + ls_range + req_range),
                unmap: unmap(merge),
            }))?;
            Ok(false)
        } else {
            // addr > req_addr
            merge &= obj == req_obj && offset == req_offset + (addr - req_addr);
            if end == req_end {
                w.step(Step::Unmap(unmap(merge)))?;
                return Ok(false);
            }
            if end < req_end {
                w.step(Step::Unmap(unmap(merge)))?;
                return Ok(true);
            }
            // end > req_end
            w.step(Step::Remap(RawOpRemap {
                prev: None,
                next: part(req_end, end - req_end, offset + req_end - addr),
                unmap: unmap(merge),
            }))?;
            Ok(false)
        }
    })?;
    w.step(Step::Map(req))
}

/// `__drm_gpuvm_sm_unmap()` (`drm_gpuvm.c`).
fn sm_unmap_walk<T: DriverGpuVm>(w: &mut Walk<'_, '_, T>, req_addr: u64, req_range: u64) -> Result {
    let req_end = req_addr.wrapping_add(req_range);

    if !w.gpuvm.range_valid(req_addr, req_range) {
        return Err(EINVAL);
    }

    w.for_each_va_range_safe(req_addr, req_range, |w, va, f| {
        let (obj, offset, addr, range) = (f.obj, f.offset, f.addr, f.range);
        let end = addr + range;
        let part = |addr, range, offset| {
            OpRemapMapData(RawOpMap {
                addr,
                range,
                offset,
                obj,
            })
        };
        let prev = (addr < req_addr).then(|| part(addr, req_addr - addr, offset));
        let next = (end > req_end).then(|| part(req_end, end - req_end, offset + (req_end - addr)));
        let unmap = RawOpUnmap { va, keep: false };
        if prev.is_some() || next.is_some() {
            w.step(Step::Remap(RawOpRemap { prev, next, unmap }))?;
        } else {
            w.step(Step::Unmap(unmap))?;
        }
        Ok(true)
    })
}
