// SPDX-License-Identifier: GPL-2.0

//! The host twin of `rust/kernel/drm/gpuvm/va.rs` (Linux 7.3).

use super::*;

/// The host twin of `struct drm_gpuva`.
pub(super) struct RawGpuva<T: DriverGpuVm> {
    /// `vm`.
    pub(super) vm: *const GpuVm<T>,
    /// `vm_bo`: holds a reference while linked, null after `drm_gpuva_unlink_defer()`.
    pub(super) vm_bo: *mut GpuVmBo<T>,
    /// `va.addr`.
    pub(super) addr: u64,
    /// `va.range`.
    pub(super) range: u64,
    /// `gem.offset`.
    pub(super) offset: u64,
    /// `gem.obj`.
    pub(super) obj: *mut RawObject,
    /// Where the VA sits in the tree, while it is there.
    pub(super) key: Option<tree::Key>,
}

/// Represents that a range of a GEM object is mapped in this [`GpuVm`] instance.
///
/// Does not assume that GEM lock is held.
///
/// # Invariants
///
/// * This is a valid `drm_gpuva` object that is resident in a [`GpuVm<T>`] instance.
/// * It is associated with a [`GpuVmBo<T>`]. Or in other words, it's not an
///   `gpuvm->kernel_alloc_node` and `DRM_GPUVA_SPARSE` is not set.
/// * The associated [`GpuVmBo<T>`] is part of the GEM list.
#[repr(C)]
pub struct GpuVa<T: DriverGpuVm> {
    inner: UnsafeCell<RawGpuva<T>>,
    data: T::VaData,
}

impl<T: DriverGpuVm> PartialEq for GpuVa<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.as_raw(), other.as_raw())
    }
}
impl<T: DriverGpuVm> Eq for GpuVa<T> {}

impl<T: DriverGpuVm> GpuVa<T> {
    /// Access this [`GpuVa`] from a raw pointer.
    ///
    /// # Safety
    ///
    /// * For the duration of `'a`, the pointer must reference a valid `drm_gpuva` associated with
    ///   a [`GpuVm<T>`].
    /// * It must be associated with a [`GpuVmBo<T>`].
    /// * The associated [`GpuVmBo<T>`] is part of the GEM list.
    #[inline]
    pub(super) unsafe fn from_raw<'a>(ptr: *mut GpuVa<T>) -> &'a Self {
        // SAFETY: The safety requirements match the invariants of `GpuVa`.
        unsafe { &*ptr }
    }

    /// Returns a raw pointer to underlying `drm_gpuva`.
    #[inline]
    pub(super) fn as_raw(&self) -> *mut RawGpuva<T> {
        self.inner.get()
    }

    /// Returns the address of this mapping in the GPU virtual address space.
    #[inline]
    pub fn addr(&self) -> u64 {
        // SAFETY: The `va.addr` field of `drm_gpuva` is immutable.
        unsafe { (*self.as_raw()).addr }
    }

    /// Returns the length of this mapping.
    #[inline]
    pub fn length(&self) -> u64 {
        // SAFETY: The `va.range` field of `drm_gpuva` is immutable.
        unsafe { (*self.as_raw()).range }
    }

    /// Returns `addr..addr+length`.
    #[inline]
    pub fn range(&self) -> Range<u64> {
        let addr = self.addr();
        addr..addr + self.length()
    }

    /// Returns the offset within the GEM object.
    #[inline]
    pub fn gem_offset(&self) -> u64 {
        // SAFETY: The `gem.offset` field of `drm_gpuva` is immutable.
        unsafe { (*self.as_raw()).offset }
    }

    /// Returns the GEM object.
    #[inline]
    pub fn obj(&self) -> &T::Object {
        // SAFETY: The `gem.obj` field of `drm_gpuva` is immutable. We know that it's not null
        // because this VA is associated with a `GpuVmBo<T>`, which holds a reference to it.
        unsafe { <T::Object as IntoGEMObject>::from_raw((*self.as_raw()).obj) }
    }

    /// Returns the underlying [`GpuVmBo`] object that backs this [`GpuVa`].
    #[inline]
    pub fn vm_bo(&self) -> &GpuVmBo<T> {
        // SAFETY: The `vm_bo` field of `drm_gpuva` is immutable while the VA is resident. We know
        // that it's not null because this VA is associated with a `GpuVmBo<T>`.
        unsafe { &*(*self.as_raw()).vm_bo }
    }

    /// The driver data of this VA (host only; 7.3 reaches it through [`GpuVaRemoved`]).
    #[inline]
    pub(crate) fn data(&self) -> &T::VaData {
        &self.data
    }
}

/// A pre-allocated [`GpuVa`] object.
///
/// # Invariants
///
/// The allocation holds no initialized value.
pub struct GpuVaAlloc<T: DriverGpuVm>(Box<MaybeUninit<GpuVa<T>>>);

// SAFETY: A `GpuVaAlloc` is an owned, uninitialised allocation with no live `T::VaData` and no
// thread-bound state.
unsafe impl<T: DriverGpuVm> Send for GpuVaAlloc<T> {}

// SAFETY: A `GpuVaAlloc` has no `&self` method that reaches its contents, so a shared
// `&GpuVaAlloc` cannot access the allocation.
unsafe impl<T: DriverGpuVm> Sync for GpuVaAlloc<T> {}

impl<T: DriverGpuVm> GpuVaAlloc<T> {
    /// Pre-allocate a [`GpuVa`] object.
    pub fn new(flags: AllocFlags) -> Result<GpuVaAlloc<T>, AllocError> {
        let _ = flags;
        crate::sim::kmalloc_hook()?;
        // INVARIANT: Nothing is initialized yet.
        Ok(GpuVaAlloc(Box::new(MaybeUninit::uninit())))
    }

    /// Prepare this `drm_gpuva` for insertion into the GPUVM.
    #[must_use]
    pub(super) fn prepare(mut self, va_data: impl PinInit<T::VaData>) -> *mut GpuVa<T> {
        let va_ptr = MaybeUninit::as_mut_ptr(&mut self.0);
        // SAFETY: The `data` field is valid for writes and is never moved afterwards (the
        // allocation is leaked here and only freed as a `GpuVaRemoved`). The initializer cannot
        // fail (`Infallible`).
        let Ok(()) = unsafe { va_data.__pinned_init(&raw mut (*va_ptr).data) };
        // SAFETY: As above, for the `drm_gpuva` part, which `drm_gpuva_map()` and
        // `drm_gpuva_remap()` fill in (`drm_gpuva_init_from_op()`).
        unsafe {
            (&raw mut (*va_ptr).inner).write(UnsafeCell::new(RawGpuva {
                vm: ptr::null(),
                vm_bo: ptr::null_mut(),
                addr: 0,
                range: 0,
                offset: 0,
                obj: ptr::null_mut(),
                key: None,
            }))
        };
        Box::into_raw(self.0).cast()
    }
}

/// A [`GpuVa`] object that has been removed.
///
/// # Invariants
///
/// The `drm_gpuva` is not resident in the [`GpuVm`].
pub struct GpuVaRemoved<T: DriverGpuVm>(Box<GpuVa<T>>);

impl<T: DriverGpuVm> GpuVaRemoved<T> {
    /// Convert a raw pointer into a [`GpuVaRemoved`].
    ///
    /// # Safety
    ///
    /// * Must have been removed from a [`GpuVm<T>`].
    /// * It must not be a `gpuvm->kernel_alloc_node` va.
    pub(super) unsafe fn from_raw(ptr: *mut GpuVa<T>) -> Self {
        // SAFETY: Since it used to be a VA in a `GpuVm<T>` and it's not a kernel_alloc_node, this
        // pointer references a `GpuVa<T>` with a valid `T::VaData`, allocated by `GpuVaAlloc`.
        // Since it has been removed, we can take ownership of the allocation.
        GpuVaRemoved(unsafe { Box::from_raw(ptr) })
    }

    /// Take ownership of the VA data.
    pub fn into_inner(self) -> T::VaData
    where
        T::VaData: Unpin,
    {
        self.0.data
    }
}

impl<T: DriverGpuVm> Deref for GpuVaRemoved<T> {
    type Target = T::VaData;
    fn deref(&self) -> &T::VaData {
        &self.0.data
    }
}

impl<T: DriverGpuVm> DerefMut for GpuVaRemoved<T>
where
    T::VaData: Unpin,
{
    fn deref_mut(&mut self) -> &mut T::VaData {
        &mut self.0.data
    }
}

/// `drm_gpuva_init_from_op()` then `drm_gpuva_insert()`; an insert that fails is ignored, as
/// `drm_gpuva_map()` and `drm_gpuva_remap()` ignore it (the VA is then not in the tree).
///
/// # Safety
///
/// `va` comes from [`GpuVaAlloc::prepare`]; the caller has the tree access of
/// [`GpuVm::tree`].
pub(super) unsafe fn map_raw<T: DriverGpuVm>(gpuvm: &GpuVm<T>, va: *mut GpuVa<T>, op: &RawOpMap) {
    // SAFETY: `va` is a prepared, exclusively owned `GpuVa` (caller).
    let raw = unsafe { &mut *(*va).inner.get() };
    raw.addr = op.addr;
    raw.range = op.range;
    raw.offset = op.offset;
    raw.obj = op.obj;
    raw.vm = gpuvm;
    if !gpuvm.range_valid(op.addr, op.range) {
        pr_warn!("drm_gpuva_insert: range not valid, VA left out of the tree\n");
        return;
    }
    // SAFETY: Tree access by the caller's guarantee.
    match unsafe { gpuvm.tree() }.insert(op.addr, op.range, NonNull::new(va)) {
        Ok(key) => {
            raw.key = Some(key);
            // The inserted VA holds a reference to the VM.
            gpuvm.get();
        }
        Err(_) => pr_warn!("drm_gpuva_insert: overlap, VA left out of the tree\n"),
    }
}

/// `drm_gpuva_remove()`.
///
/// # Safety
///
/// `va` is a VA of `gpuvm` (not the kernel node); the caller has the tree access of
/// [`GpuVm::tree`] and owns a reference to the VM besides the VA's.
pub(super) unsafe fn remove_raw<T: DriverGpuVm>(va: *mut GpuVa<T>) {
    // SAFETY: `va` is valid (caller); its `drm_gpuva` part is only changed under the tree access.
    let raw = unsafe { &mut *(*va).inner.get() };
    // SAFETY: A VA points at its VM, alive (the caller holds a reference).
    let gpuvm = unsafe { &*raw.vm };
    if let Some(key) = raw.key.take() {
        // SAFETY: Tree access by the caller's guarantee.
        unsafe { gpuvm.tree() }.remove(key);
        // SAFETY: The VA's reference, taken in `map_raw`; the caller holds another.
        unsafe { GpuVm::put(NonNull::from(gpuvm)) };
    }
}
