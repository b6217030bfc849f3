// SPDX-License-Identifier: GPL-2.0

//! DRM GPUVM in immediate mode: the host twin of `rust/kernel/drm/gpuvm/mod.rs` (Linux 7.3).
//!
//! Rust abstractions for using GPUVM in immediate mode. This is when the GPUVM state is updated
//! during `run_job()`, i.e., in the DMA fence signalling critical path, to ensure that the GPUVM
//! and the GPU's virtual address space has the same state at all times.
//!
//! The public items, their generics, lifetimes, bounds and contracts are 7.3's. Underneath, the
//! C side (`drivers/gpu/drm/drm_gpuvm.c`) is reimplemented with the same semantics: the split and
//! merge walk of `__drm_gpuvm_sm_map()` / `__drm_gpuvm_sm_unmap()`, `drm_gpuvm_range_valid()`,
//! the kernel-reserved node, and the reference counting and deferred cleanup of
//! `drm_gpuvm_bo`s. The interval tree is an ordered map (see `tree.rs`). The raw-pointer items
//! of 7.3 (`as_raw`, `from_raw` over `bindings::*`) are left out: the host has no bindings.
//! [`sim`] is host-only inspection for tests.

use crate::{
    alloc::{AllocError, Flags as AllocFlags},
    drm,
    drm::gem::{IntoGEMObject, RawObject},
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
};
use core::{
    cell::UnsafeCell,
    ffi::CStr,
    marker::PhantomData,
    mem::{ManuallyDrop, MaybeUninit},
    ops::{Deref, DerefMut, Range},
    ptr::{self, NonNull},
    sync::atomic::{AtomicUsize, Ordering},
};
use pin_init::PinInit;

mod sm_ops;
pub use self::sm_ops::*;

mod vm_bo;
pub use self::vm_bo::*;

mod va;
pub use self::va::*;

pub mod sim;
mod tree;

use self::tree::Tree;

/// The host twin of the `struct drm_gpuvm` fields GPUVM itself uses.
struct RawGpuVm<T: DriverGpuVm> {
    kref: AtomicUsize,
    name: &'static CStr,
    drm: NonNull<drm::device::RawDevice>,
    r_obj: NonNull<RawObject>,
    mm_start: u64,
    mm_range: u64,
    /// `kernel_alloc_node.va`: (addr, range).
    kernel_alloc_node: (u64, u64),
    /// The interval tree and the address-ordered list `rb`.
    rb: UnsafeCell<Tree<T>>,
    /// `bo_defer`: zombie vm_bos waiting for [`GpuVm::deferred_cleanup`].
    bo_defer: std::sync::Mutex<Vec<NonNull<GpuVmBo<T>>>>,
}

/// A DRM GPU VA manager.
///
/// This object is refcounted, but the locations of mapped ranges may only be accessed or changed
/// via the special unique handle [`UniqueRefGpuVm`].
///
/// # Invariants
///
/// * Stored in an allocation managed by the refcount in `self.vm`.
/// * Access to `data` and the gpuvm interval tree is controlled via the [`UniqueRefGpuVm`] type.
/// * Does not contain any sparse [`GpuVa<T>`] instances.
pub struct GpuVm<T: DriverGpuVm> {
    vm: RawGpuVm<T>,
    /// Accessed only through the [`UniqueRefGpuVm`] reference.
    data: UnsafeCell<T>,
}

// SAFETY: It is safe to send a `GpuVm<T>` to another thread: all data reachable through it
// (`T`, `T::VmBoData`, and the GEM `T::Object`) is `Send` by the `DriverGpuVm` bounds.
unsafe impl<T: DriverGpuVm> Send for GpuVm<T> {}
// SAFETY: It is safe to share a `&GpuVm<T>` between threads: `&self` methods only alias data
// that is `Sync` by the `DriverGpuVm` bounds, and any thread may drop that data, or upgrade the
// reference and ultimately drop `T`, which the same bounds make `Send`.
unsafe impl<T: DriverGpuVm> Sync for GpuVm<T> {}

// SAFETY: By type invariants, the allocation is managed by the refcount in `self.vm`.
unsafe impl<T: DriverGpuVm> AlwaysRefCounted for GpuVm<T> {
    fn inc_ref(&self) {
        self.get();
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it owns.
        unsafe { Self::put(obj) };
    }
}

impl<T: DriverGpuVm> PartialEq for GpuVm<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self, other)
    }
}
impl<T: DriverGpuVm> Eq for GpuVm<T> {}

impl<T: DriverGpuVm> GpuVm<T> {
    /// Creates a GPUVM instance.
    #[expect(clippy::new_ret_no_self)]
    pub fn new<E, Ctx: drm::DeviceContext>(
        name: &'static CStr,
        dev: &drm::Device<T::Driver, Ctx>,
        r_obj: &T::Object,
        range: Range<u64>,
        reserve_range: Range<u64>,
        data: T,
    ) -> Result<UniqueRefGpuVm<T>, E>
    where
        E: From<AllocError>,
        E: From<core::convert::Infallible>,
    {
        crate::sim::kmalloc_hook()?;
        // drm_gpuvm_init()
        let drm = dev.raw();
        // SAFETY: `dev` is borrowed, so valid: `drm_dev_get()`.
        unsafe { drm.as_ref() }.get();
        // SAFETY: `r_obj` is borrowed, so valid: `drm_gem_object_get()`.
        let r_raw = unsafe { NonNull::new_unchecked(r_obj.as_raw()) };
        // SAFETY: As above.
        unsafe { r_raw.as_ref() }.get();
        let start_offset = range.start;
        let mm_range = range.end - range.start;
        let reserve_offset = reserve_range.start;
        let reserve_len = reserve_range.end - reserve_range.start;
        warn_check_overflow(start_offset, mm_range);
        let mut tree = Tree::new();
        if reserve_len != 0 && !warn_check_overflow(reserve_offset, reserve_len) {
            // Into the empty tree: cannot fail.
            let _ = tree.insert(reserve_offset, reserve_len, None);
        }
        let vm = Box::new(Self {
            vm: RawGpuVm {
                kref: AtomicUsize::new(1),
                name,
                drm,
                r_obj: r_raw,
                mm_start: start_offset,
                mm_range,
                kernel_alloc_node: (reserve_offset, reserve_len),
                rb: UnsafeCell::new(tree),
                bo_defer: std::sync::Mutex::new(Vec::new()),
            },
            data: UnsafeCell::new(data),
        });
        // SAFETY: This transfers the initial refcount to the ARef.
        let aref = unsafe { ARef::from_raw(NonNull::from(Box::leak(vm))) };
        // INVARIANT: This reference is unique.
        Ok(UniqueRefGpuVm(aref))
    }

    /// The name given to [`GpuVm::new`] (host only: 7.3 reads it through `as_raw()`).
    #[inline]
    pub(crate) fn name(&self) -> &'static CStr {
        self.vm.name
    }

    /// The start of the VA space.
    #[inline]
    pub fn va_start(&self) -> u64 {
        self.vm.mm_start
    }

    /// The length of the GPU's virtual address space.
    #[inline]
    pub fn va_length(&self) -> u64 {
        self.vm.mm_range
    }

    /// Returns the range of the GPU virtual address space.
    #[inline]
    pub fn va_range(&self) -> Range<u64> {
        let start = self.va_start();
        // OVERFLOW: This reconstructs the Range<u64> passed to the constructor, so it won't fail.
        let end = start + self.va_length();
        Range { start, end }
    }

    /// Get or create the [`GpuVmBo`] for this gem object.
    #[inline]
    pub fn obtain(
        &self,
        obj: &T::Object,
        data: impl PinInit<T::VmBoData>,
    ) -> Result<ARef<GpuVmBo<T>>, AllocError> {
        Ok(GpuVmBoAlloc::new(self, obj, data)?.obtain())
    }

    /// Looks up the [`GpuVmBo`] of `obj` in this GPUVM, without creating one: `None` if `obj`
    /// has none here (it is not mapped, and no one holds a [`GpuVmBo`] for it).
    pub fn find_bo(&self, obj: &T::Object) -> Option<ARef<GpuVmBo<T>>> {
        // SAFETY: `obj` is borrowed, so valid.
        let raw = unsafe { &*obj.as_raw() };
        let list = lock(&raw.gpuva);
        let me = ptr::from_ref(self) as usize;
        let &(_, found) = list.iter().find(|&&(vm, _)| vm == me)?;
        let found = found as *mut GpuVmBo<T>;
        // SAFETY: Entries of the GEM list are live vm_bos of the VM at their address, here this
        // `GpuVm<T>`; under the lock, they cannot become zombies (`drm_gpuvm_bo_find()`).
        let found = unsafe { NonNull::new_unchecked(found) };
        // SAFETY: As above.
        unsafe { found.as_ref() }.get();
        // SAFETY: We took a reference above.
        Some(unsafe { ARef::from_raw(found) })
    }

    /// Clean up buffer objects that are no longer used.
    #[inline]
    pub fn deferred_cleanup(&self) {
        // drm_gpuvm_bo_deferred_cleanup(): take the whole list, then free each.
        let zombies = core::mem::take(&mut *lock(&self.vm.bo_defer));
        for vm_bo in zombies {
            // SAFETY: A zombie is in no list and has no reference left; it was put on
            // `bo_defer` exactly once.
            unsafe { GpuVmBo::destroy_not_in_lists(vm_bo) };
        }
    }

    /// Check if this GEM object is an external object for this GPUVM.
    #[inline]
    pub fn is_extobj(&self, obj: &T::Object) -> bool {
        // SAFETY: Both objects are alive (`obj` is borrowed, `r_obj` is held by the VM).
        unsafe { (*obj.as_raw()).resv() != self.vm.r_obj.as_ref().resv() }
    }

    /// `drm_gpuvm_get()`.
    pub(crate) fn get(&self) {
        self.vm.kref.fetch_add(1, Ordering::Relaxed);
    }

    /// `drm_gpuvm_put()`: on the last reference, `drm_gpuvm_fini()`, then `vm_free`, then the
    /// device reference.
    ///
    /// # Safety
    ///
    /// The caller owns a reference to `this` and gives it up.
    pub(crate) unsafe fn put(this: NonNull<Self>) {
        // SAFETY: The caller owns a reference.
        let me = unsafe { this.as_ref() };
        if me.vm.kref.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        core::sync::atomic::fence(Ordering::Acquire);
        // drm_gpuvm_fini(): every VA and vm_bo holds a reference, so none is left but the
        // kernel-reserved node.
        // SAFETY: No reference is left, so nothing else accesses the tree.
        let tree = unsafe { &*me.vm.rb.get() };
        if tree.len() != usize::from(me.vm.kernel_alloc_node.1 != 0) {
            pr_warn!("GPUVA tree is not empty, potentially leaking memory.\n");
        }
        if !lock(&me.vm.bo_defer).is_empty() {
            pr_warn!("VM BO cleanup list should be empty.\n");
        }
        let (r_obj, drm) = (me.vm.r_obj, me.vm.drm);
        // SAFETY: `vm_free`: the allocation is a `Box` from `new` with no reference left.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
        // SAFETY: The VM owned a reference to `r_obj` and to the device (`drm_gpuvm_init()`).
        unsafe {
            RawObject::put(r_obj);
            drm::device::RawDevice::put(drm);
        }
    }

    /// The tree, for a short exclusive access.
    ///
    /// # Safety
    ///
    /// The caller has the exclusive access [`UniqueRefGpuVm`] gives (it holds it mutably, or runs
    /// inside a step of one of its `sm_*` calls) and keeps no other reference to the tree.
    #[expect(clippy::mut_from_ref)]
    unsafe fn tree(&self) -> &mut Tree<T> {
        // SAFETY: Exclusive by the caller's guarantee.
        unsafe { &mut *self.vm.rb.get() }
    }

    /// The tree, for reading.
    ///
    /// # Safety
    ///
    /// The caller holds the [`UniqueRefGpuVm`] (shared or mutably) and no `sm_*` call runs.
    unsafe fn tree_ref(&self) -> &Tree<T> {
        // SAFETY: Nothing changes the tree without the unique reference held mutably.
        unsafe { &*self.vm.rb.get() }
    }

    /// `drm_gpuvm_range_valid()`: no overflow, inside the VA space, clear of the kernel node.
    pub(crate) fn range_valid(&self, addr: u64, range: u64) -> bool {
        !check_overflow(addr, range)
            && self.in_mm_range(addr, range)
            && !self.in_kernel_node(addr, range)
    }

    /// `drm_gpuvm_in_mm_range()` (C's `u64` arithmetic wraps).
    fn in_mm_range(&self, addr: u64, range: u64) -> bool {
        let end = addr.wrapping_add(range);
        let mm_start = self.vm.mm_start;
        let mm_end = mm_start.wrapping_add(self.vm.mm_range);
        addr >= mm_start && end <= mm_end
    }

    /// `drm_gpuvm_in_kernel_node()` (C's `u64` arithmetic wraps).
    fn in_kernel_node(&self, addr: u64, range: u64) -> bool {
        let end = addr.wrapping_add(range);
        let (kstart, krange) = self.vm.kernel_alloc_node;
        let kend = kstart.wrapping_add(krange);
        krange != 0 && addr < kend && kstart < end
    }
}

/// `drm_gpuvm_check_overflow()`.
fn check_overflow(addr: u64, range: u64) -> bool {
    addr.checked_add(range).is_none()
}

/// `drm_gpuvm_warn_check_overflow()`.
fn warn_check_overflow(addr: u64, range: u64) -> bool {
    let overflow = check_overflow(addr, range);
    if overflow {
        pr_warn!("GPUVA address limited to 8 bytes.\n");
    }
    overflow
}

/// Locks a host mutex; a panic while it was held does not poison the GPUVM.
fn lock<U>(m: &std::sync::Mutex<U>) -> std::sync::MutexGuard<'_, U> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The manager for a GPUVM.
pub trait DriverGpuVm: Sized + Send + Sync {
    /// Parent `Driver` for this object.
    type Driver: drm::Driver;

    /// The kind of GEM object stored in this GPUVM.
    type Object: drm::driver::AllocImpl<Driver = Self::Driver> + Send + Sync;

    /// Data stored with each [`struct drm_gpuva`](struct@GpuVa).
    ///
    /// Only `Send` is required: the data has a single owner at all times, moving
    /// between threads by value (handed back as a [`GpuVaRemoved`]) but never
    /// accessed by two threads concurrently.
    type VaData: Send;

    /// Data stored with each [`struct drm_gpuvm_bo`](struct@GpuVmBo).
    type VmBoData: Send + Sync;

    /// The private data passed to callbacks.
    type SmContext<'ctx>
    where
        Self: 'ctx;

    /// Indicates that a new mapping should be created.
    fn sm_step_map<'op, 'ctx>(
        &mut self,
        op: OpMap<'op, Self>,
        context: &mut Self::SmContext<'ctx>,
    ) -> Result<OpMapped<'op, Self>, Error>;

    /// Indicates that an existing mapping should be removed.
    fn sm_step_unmap<'op, 'ctx>(
        &mut self,
        op: OpUnmap<'op, Self>,
        context: &mut Self::SmContext<'ctx>,
    ) -> Result<OpUnmapped<'op, Self>, Error>;

    /// Indicates that an existing mapping should be split up.
    fn sm_step_remap<'op, 'ctx>(
        &mut self,
        op: OpRemap<'op, Self>,
        context: &mut Self::SmContext<'ctx>,
    ) -> Result<OpRemapped<'op, Self>, Error>;
}

/// The core of the DRM GPU VA manager.
///
/// This object is a unique reference to the VM that can access the interval tree and the Rust
/// `data` field.
///
/// # Invariants
///
/// Each `GpuVm` instance has at most one `UniqueRefGpuVm` reference.
// `Send`/`Sync` derive from `ARef<GpuVm<T>>`; the trait bounds make them correct for the unique
// handle's `&mut T` access.
pub struct UniqueRefGpuVm<T: DriverGpuVm>(ARef<GpuVm<T>>);

impl<T: DriverGpuVm> UniqueRefGpuVm<T> {
    /// Calls `f` on the mappings ([`GpuVa`]) of `vm_bo` in this GPUVM, in no particular order,
    /// until it returns `Some`; returns that, or `None` if it never did (so also when `vm_bo`
    /// belongs to another GPUVM: it has no mapping here).
    ///
    /// `f` runs with the GEM object's gpuva lock held, so it must not take it again (through
    /// [`GpuVm::obtain`], [`GpuVm::find_bo`], or a map or unmap of the object). The mappings
    /// stay as they are while `self` is borrowed, since only [`UniqueRefGpuVm::sm_map`] and
    /// [`UniqueRefGpuVm::sm_unmap`] change them: a driver that unmaps what `f` found does so
    /// with `sm_unmap` after this returns.
    pub fn find_va<R>(
        &self,
        vm_bo: &GpuVmBo<T>,
        mut f: impl FnMut(&GpuVa<T>) -> Option<R>,
    ) -> Option<R> {
        if vm_bo.gpuvm() != &*self.0 {
            return None;
        }
        let _guard = vm_bo.lock_gpuva();
        // SAFETY: We hold the gpuva lock.
        unsafe {
            vm_bo.linked_vas(|vas| {
                vas.iter().find_map(|&va| {
                    // SAFETY: A VA linked to `vm_bo` is a `GpuVa<T>` of this GPUVM, resident:
                    // only a step of `sm_map` or `sm_unmap` takes one out of the tree, unlinking
                    // it in the same step, and neither can run while `self` is borrowed.
                    f(GpuVa::<T>::from_raw((va as *mut GpuVa<T>).cast()))
                })
            })
        }
    }

    /// Access the data owned by this `UniqueRefGpuVm` immutably.
    #[inline]
    pub fn data_ref(&self) -> &T {
        // SAFETY: By the type invariants we may access `data`.
        unsafe { &*self.0.data.get() }
    }

    /// Access the data owned by this `UniqueRefGpuVm` mutably.
    #[inline]
    pub fn data(&mut self) -> &mut T {
        // SAFETY: By the type invariants we may access `data`.
        unsafe { &mut *self.0.data.get() }
    }
}

impl<T: DriverGpuVm> Deref for UniqueRefGpuVm<T> {
    type Target = GpuVm<T>;

    #[inline]
    fn deref(&self) -> &GpuVm<T> {
        &self.0
    }
}
