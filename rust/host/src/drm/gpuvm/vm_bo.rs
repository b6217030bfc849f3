// SPDX-License-Identifier: GPL-2.0

//! The host twin of `rust/kernel/drm/gpuvm/vm_bo.rs` (Linux 7.3).

use super::*;

/// The host twin of `struct drm_gpuvm_bo`.
pub(super) struct RawVmBo<T: DriverGpuVm> {
    /// `vm`: holds a reference.
    vm: NonNull<GpuVm<T>>,
    /// `obj`: holds a reference.
    obj: NonNull<RawObject>,
    /// `kref`.
    kref: AtomicUsize,
    /// `list.gpuva`: the addresses of the VAs linked to this vm_bo, changed and read only under
    /// the GEM's `gpuva.lock`.
    vas: UnsafeCell<Vec<usize>>,
}

/// Represents that a given GEM object has at least one mapping on this [`GpuVm`] instance.
///
/// Does not assume that GEM lock is held.
///
/// # Invariants
///
/// * Allocated with `kmalloc` and refcounted via `inner`.
/// * Is present in the gem list.
#[repr(C)]
pub struct GpuVmBo<T: DriverGpuVm> {
    inner: RawVmBo<T>,
    data: T::VmBoData,
}

// SAFETY: It is safe to send a `GpuVmBo<T>` to another thread: dropping it there drops
// `T::VmBoData` and the GEM `T::Object`, both `Send` by the `DriverGpuVm` bounds.
unsafe impl<T: DriverGpuVm> Send for GpuVmBo<T> {}

// SAFETY: It is safe to share a `&GpuVmBo<T>` between threads: it effectively shares
// `&T::VmBoData` and the GEM `&T::Object` (both `Sync`), and any thread may upgrade to an
// `ARef` and ultimately drop them (both `Send`), per the `DriverGpuVm` bounds.
unsafe impl<T: DriverGpuVm> Sync for GpuVmBo<T> {}

// SAFETY: By type invariants, the allocation is managed by the refcount in `self.inner`.
unsafe impl<T: DriverGpuVm> AlwaysRefCounted for GpuVmBo<T> {
    fn inc_ref(&self) {
        self.get();
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: By type invariants, the allocation is managed by the refcount in `self.inner`.
        // This GPUVM instance uses immediate mode, so we may put the refcount using the deferred
        // mechanism.
        unsafe { Self::put_deferred(obj) };
    }
}

impl<T: DriverGpuVm> PartialEq for GpuVmBo<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self, other)
    }
}
impl<T: DriverGpuVm> Eq for GpuVmBo<T> {}

impl<T: DriverGpuVm> GpuVmBo<T> {
    /// The [`GpuVm`] that this GEM object is mapped in.
    #[inline]
    pub fn gpuvm(&self) -> &GpuVm<T> {
        // SAFETY: The vm_bo holds a reference to its VM.
        unsafe { self.inner.vm.as_ref() }
    }

    /// The [`drm_gem_object`](DriverGpuVm::Object) for these mappings.
    #[inline]
    pub fn obj(&self) -> &T::Object {
        // SAFETY: The vm_bo holds a reference to the object, which is a `T::Object`
        // (`GpuVmBoAlloc::new`).
        unsafe { <T::Object as IntoGEMObject>::from_raw(self.inner.obj.as_ptr()) }
    }

    /// The driver data with this buffer object.
    #[inline]
    pub fn data(&self) -> &T::VmBoData {
        &self.data
    }

    /// The GEM object's `gpuva.lock`, held.
    pub(super) fn lock_gpuva(&self) -> std::sync::MutexGuard<'_, Vec<(usize, usize)>> {
        // SAFETY: The vm_bo holds a reference to the object.
        lock(&unsafe { self.inner.obj.as_ref() }.gpuva)
    }

    /// The addresses of the VAs linked to this vm_bo (`list.gpuva`), for `f`.
    ///
    /// # Safety
    ///
    /// The caller holds the GEM's `gpuva.lock` ([`GpuVmBo::lock_gpuva`]).
    pub(super) unsafe fn linked_vas<R>(&self, f: impl FnOnce(&[usize]) -> R) -> R {
        // SAFETY: `vas` is only accessed under the gpuva lock, which the caller holds.
        f(unsafe { &*self.inner.vas.get() })
    }

    /// `drm_gpuvm_bo_get()`.
    pub(super) fn get(&self) {
        self.inner.kref.fetch_add(1, Ordering::Relaxed);
    }

    /// `drm_gpuvm_bo_destroy_not_in_lists()`: frees the vm_bo, then puts its VM and object.
    ///
    /// # Safety
    ///
    /// `this` has no reference left and is in no list; it is not used afterwards.
    pub(super) unsafe fn destroy_not_in_lists(this: NonNull<Self>) {
        // SAFETY: `this` is valid and unused by anyone else (caller).
        let (vm, obj) = unsafe { (this.as_ref().inner.vm, this.as_ref().inner.obj) };
        // SAFETY: `vm_bo_free`: allocated as a `Box` by `GpuVmBoAlloc::new`, with a valid
        // `T::VmBoData` that we drop.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
        // SAFETY: The vm_bo owned a reference to both (`drm_gpuvm_bo_create()`).
        unsafe {
            GpuVm::put(vm);
            RawObject::put(obj);
        }
    }

    /// `drm_gpuvm_bo_make_zombie()`: the last reference is gone; off the GEM list.
    fn make_zombie(&self, gem_list: &mut Vec<(usize, usize)>) {
        let me = ptr::from_ref(self) as usize;
        gem_list.retain(|&(_, vm_bo)| vm_bo != me);
    }

    /// `drm_gpuvm_bo_defer_zombie_cleanup()`.
    ///
    /// # Safety
    ///
    /// `this` is a zombie (no reference, off the GEM list), put on `bo_defer` only once.
    unsafe fn defer_zombie_cleanup(this: NonNull<Self>) {
        // SAFETY: A zombie still holds its VM reference.
        let vm = unsafe { this.as_ref().inner.vm.as_ref() };
        lock(&vm.vm.bo_defer).push(this);
    }

    /// `drm_gpuvm_bo_put_deferred()`: `kref_put_mutex()` on the GEM's `gpuva.lock`.
    ///
    /// # Safety
    ///
    /// The caller owns a reference to `this` and gives it up.
    pub(super) unsafe fn put_deferred(this: NonNull<Self>) {
        // SAFETY: The caller owns a reference.
        let me = unsafe { this.as_ref() };
        // `refcount_dec_and_mutex_lock()`: the fast path never takes the count to zero.
        let mut cur = me.inner.kref.load(Ordering::Relaxed);
        while cur > 1 {
            match me.inner.kref.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
        let mut list = me.lock_gpuva();
        if me.inner.kref.fetch_sub(1, Ordering::AcqRel) == 1 {
            me.make_zombie(&mut list);
            drop(list);
            // SAFETY: It just became a zombie.
            unsafe { Self::defer_zombie_cleanup(this) };
        }
    }

    /// `drm_gpuva_link()`: the VA takes a reference to its vm_bo.
    ///
    /// # Safety
    ///
    /// `va` is a VA being mapped with this vm_bo's object; the GEM's `gpuva.lock` is held.
    pub(super) unsafe fn link(&self, va: *mut GpuVa<T>) {
        self.get();
        // SAFETY: The caller has the VA exclusively.
        unsafe { (*(*va).as_raw()).vm_bo = ptr::from_ref(self).cast_mut() };
        // SAFETY: The caller holds the gpuva lock, under which alone `vas` is accessed.
        unsafe { &mut *self.inner.vas.get() }.push(va as usize);
    }

    /// `drm_gpuva_unlink_defer()`: the VA gives up its reference to its vm_bo.
    ///
    /// # Safety
    ///
    /// `va` has been removed from the tree and is linked.
    pub(super) unsafe fn unlink_defer(va: *mut GpuVa<T>) {
        // SAFETY: The caller has the removed VA exclusively.
        let raw = unsafe { &mut *(*va).as_raw() };
        let Some(vm_bo) = NonNull::new(raw.vm_bo) else {
            return;
        };
        // SAFETY: The VA holds a reference to the vm_bo.
        let me = unsafe { vm_bo.as_ref() };
        let mut list = me.lock_gpuva();
        // SAFETY: We hold the gpuva lock, under which alone `vas` is accessed.
        unsafe { &mut *me.inner.vas.get() }.retain(|&v| v != va as usize);
        let should_defer_bo = me.inner.kref.fetch_sub(1, Ordering::AcqRel) == 1;
        if should_defer_bo {
            me.make_zombie(&mut list);
        }
        drop(list);
        if should_defer_bo {
            // SAFETY: It just became a zombie.
            unsafe { Self::defer_zombie_cleanup(vm_bo) };
        }
        raw.vm_bo = ptr::null_mut();
    }
}

/// A pre-allocated [`GpuVmBo`] object.
///
/// # Invariants
///
/// Points at a `drm_gpuvm_bo` that contains a valid `T::VmBoData`, has a refcount of one, and is
/// absent from any gem, extobj, or evict lists.
pub(super) struct GpuVmBoAlloc<T: DriverGpuVm>(NonNull<GpuVmBo<T>>);

impl<T: DriverGpuVm> GpuVmBoAlloc<T> {
    /// Create a new pre-allocated [`GpuVmBo`] (`drm_gpuvm_bo_create()`).
    ///
    /// It's intentional that the initializer is infallible because `drm_gpuvm_bo_put` will call
    /// drop on the data, so we don't have a way to free it when the data is missing.
    #[inline]
    pub(super) fn new(
        gpuvm: &GpuVm<T>,
        gem: &T::Object,
        value: impl PinInit<T::VmBoData>,
    ) -> Result<GpuVmBoAlloc<T>, AllocError> {
        crate::sim::kmalloc_hook()?;
        let mut uninit: Box<MaybeUninit<GpuVmBo<T>>> = Box::new(MaybeUninit::uninit());
        let slot = uninit.as_mut_ptr();
        // SAFETY: `gem` is borrowed, so valid.
        let obj = unsafe { NonNull::new_unchecked(gem.as_raw()) };
        gpuvm.get();
        // SAFETY: As above: `drm_gem_object_get()`.
        unsafe { obj.as_ref() }.get();
        // SAFETY: `slot` is valid for writes; the data is initialized in place and never moves
        // (the allocation is leaked below and freed by `destroy_not_in_lists`). The initializer
        // cannot fail (`Infallible`).
        unsafe {
            (&raw mut (*slot).inner).write(RawVmBo {
                vm: NonNull::from(gpuvm),
                obj,
                kref: AtomicUsize::new(1),
                vas: UnsafeCell::new(Vec::new()),
            });
            let Ok(()) = value.__pinned_init(&raw mut (*slot).data);
        }
        let ptr = NonNull::from(Box::leak(uninit)).cast::<GpuVmBo<T>>();
        // INVARIANTS: We just created the vm_bo so it's absent from lists, and the data is valid
        // as we just initialized it.
        Ok(GpuVmBoAlloc(ptr))
    }

    /// Look up whether there is an existing [`GpuVmBo`] for this gem object
    /// (`drm_gpuvm_bo_obtain_prealloc()`).
    ///
    /// The caller should not hold the GEM mutex or DMA resv lock.
    #[inline]
    pub(super) fn obtain(self) -> ARef<GpuVmBo<T>> {
        let me = ManuallyDrop::new(self);
        let vm_addr = ptr::from_ref(me.gpuvm()) as usize;
        let mut list = me.lock_gpuva();
        if let Some(&(_, found)) = list.iter().find(|&&(vm, _)| vm == vm_addr) {
            let found = found as *mut GpuVmBo<T>;
            // SAFETY: Entries of the GEM list are live vm_bos of the VM at `vm_addr`, which is a
            // `GpuVm<T>`; under the lock, they cannot become zombies.
            let found = unsafe { NonNull::new_unchecked(found) };
            // SAFETY: As above.
            unsafe { found.as_ref() }.get();
            drop(list);
            // SAFETY: The pre-allocated vm_bo has its single reference and is in no list.
            unsafe { GpuVmBo::destroy_not_in_lists(me.0) };
            // SAFETY: We took a reference above.
            return unsafe { ARef::from_raw(found) };
        }
        list.push((vm_addr, me.0.as_ptr() as usize));
        drop(list);
        // The extobj list is not kept on the host (no 7.3 Rust API reads it).
        // INVARIANTS: the bo is in the GEM list.
        // SAFETY: We hand over the pre-allocated vm_bo's reference.
        unsafe { ARef::from_raw(me.0) }
    }
}

impl<T: DriverGpuVm> Deref for GpuVmBoAlloc<T> {
    type Target = GpuVmBo<T>;
    #[inline]
    fn deref(&self) -> &GpuVmBo<T> {
        // SAFETY: By the type invariants we may deref while `Self` exists.
        unsafe { self.0.as_ref() }
    }
}

impl<T: DriverGpuVm> Drop for GpuVmBoAlloc<T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: It's safe to perform a deferred put in any context.
        unsafe { GpuVmBo::put_deferred(self.0) };
    }
}
