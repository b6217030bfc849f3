// SPDX-License-Identifier: GPL-2.0

//! DRM GEM API: the host twin of `rust/kernel/drm/gem/mod.rs` (Linux 7.3), reduced to a
//! reference-counted object with a size and the driver's data.
//!
//! [`RawObject`] stands for `struct drm_gem_object`: reference count, size, the identity of its
//! `dma_resv`, and the `gpuva` list (with its lock) that links the object to its
//! [`GpuVmBo`](crate::drm::gpuvm::GpuVmBo)s. Left out: handles and mmap offsets
//! (`BaseObject::create_handle`, `lookup_handle`, `create_mmap_offset`), `DriverObject::open` /
//! `close` (DRM files), shmem objects and PRIME.

use crate::{
    drm::{
        self,
        device::{DeviceContext, Normal, RawDevice},
        driver::AllocImpl,
        private::Sealed,
    },
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
};
use core::{
    marker::PhantomData,
    mem::MaybeUninit,
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use pin_init::PinInit;

/// The host twin of `struct drm_gem_object`.
///
/// # Invariants
///
/// `refcount` counts the references; `free` is called, once, when it drops to zero.
pub struct RawObject {
    refcount: AtomicUsize,
    size: usize,
    free: unsafe fn(NonNull<RawObject>),
    /// Identity of the object's `dma_resv` (the address of the object that owns it).
    resv: usize,
    /// `gpuva.list` under `gpuva.lock`: (address of the `GpuVm`, address of the `GpuVmBo`) of
    /// every vm_bo of this object that is not a zombie.
    pub(crate) gpuva: std::sync::Mutex<Vec<(usize, usize)>>,
}

impl RawObject {
    /// `drm_gem_object_get()`.
    pub(crate) fn get(&self) {
        self.refcount.fetch_add(1, Ordering::Relaxed);
    }

    /// `drm_gem_object_put()`.
    ///
    /// # Safety
    ///
    /// The caller owns a reference to `this` and gives it up: it must not use `this` afterwards
    /// unless it owns another reference.
    pub(crate) unsafe fn put(this: NonNull<RawObject>) {
        // SAFETY: The caller owns a reference, so the object is alive.
        let obj = unsafe { this.as_ref() };
        if obj.refcount.fetch_sub(1, Ordering::Release) == 1 {
            core::sync::atomic::fence(Ordering::Acquire);
            // SAFETY: That was the last reference.
            unsafe { (obj.free)(this) };
        }
    }

    /// The reference count (host only: for [`crate::drm::gpuvm::sim::obj_refcount`]).
    pub(crate) fn refcount(&self) -> usize {
        self.refcount.load(Ordering::Relaxed)
    }

    /// The identity of the object's `dma_resv`.
    pub(crate) fn resv(&self) -> usize {
        self.resv
    }
}

/// GEM object functions, which must be implemented by drivers.
pub trait DriverObject: Sync + Send + Sized + 'static {
    /// Parent `Driver` for this object.
    type Driver: drm::Driver;

    /// The data type to use for passing arguments to [`DriverObject::new`].
    type Args;

    /// Create a new driver data object for a GEM object of a given size.
    fn new(
        dev: &drm::Device<Self::Driver>,
        size: usize,
        args: Self::Args,
    ) -> impl PinInit<Self, Error>;
}

/// Trait that represents a GEM object subtype
pub trait IntoGEMObject: Sized + Sealed {
    /// Returns a reference to the raw `drm_gem_object` structure, which must be valid as long as
    /// this owning object is valid.
    fn as_raw(&self) -> *mut RawObject;

    /// Converts a pointer to a `struct drm_gem_object` into a reference to `Self`.
    ///
    /// # Safety
    ///
    /// - `self_ptr` must be a valid pointer to the `struct drm_gem_object` embedded in a
    ///   valid instance of `Self`.
    /// - The caller promises that holding the immutable reference returned by this function does
    ///   not violate rust's data aliasing rules and remains valid throughout the lifetime of `'a`.
    unsafe fn from_raw<'a>(self_ptr: *mut RawObject) -> &'a Self;
}

/// Base operations shared by all GEM object classes
pub trait BaseObject: IntoGEMObject {
    /// Returns the size of the object in bytes.
    fn size(&self) -> usize {
        // SAFETY: `self.as_raw()` is guaranteed to be a pointer to a valid `struct drm_gem_object`.
        unsafe { (*self.as_raw()).size }
    }
}

impl<T: IntoGEMObject> BaseObject for T {}

/// A base GEM object.
///
/// # Invariants
///
/// * `self.obj` is a valid [`RawObject`] whose reference count manages this allocation (a `Box`
///   made by [`Object::new`]).
/// * `self.dev` holds a reference to the device.
#[repr(C)]
pub struct Object<T: DriverObject + Send + Sync, Ctx: DeviceContext = Normal> {
    obj: RawObject,
    dev: NonNull<RawDevice>,
    data: T,
    _ctx: PhantomData<Ctx>,
}

// SAFETY: `T` is `Send + Sync` by the `DriverObject` bounds, the device is shared by reference
// count, and the rest is atomics and a mutex.
unsafe impl<T: DriverObject, Ctx: DeviceContext> Send for Object<T, Ctx> {}
// SAFETY: As for `Send`.
unsafe impl<T: DriverObject, Ctx: DeviceContext> Sync for Object<T, Ctx> {}

impl<T: DriverObject, Ctx: DeviceContext> Object<T, Ctx> {
    /// Returns the `Device` that owns this GEM object.
    pub fn dev(&self) -> &drm::Device<T::Driver, Ctx> {
        // SAFETY: By the type invariants the object holds a reference to its device, which is
        // a `Device<T::Driver, _>` (`Object::new`), the same layout for every context.
        unsafe { &*self.dev.as_ptr().cast::<drm::Device<T::Driver, Ctx>>() }
    }

    /// The `free` callback: the last reference is gone.
    ///
    /// # Safety
    ///
    /// `raw` is the `obj` field of an `Object<T, Ctx>` made by [`Object::new`], with no reference
    /// left.
    unsafe fn free_callback(raw: NonNull<RawObject>) {
        // SAFETY: `obj` is the first field of this `repr(C)` struct, allocated as a `Box` by
        // `Object::new`; nothing references it any more.
        let this = unsafe { Box::from_raw(raw.as_ptr().cast::<Self>()) };
        let dev = this.dev;
        drop(this);
        // SAFETY: The object owned this device reference (type invariants).
        unsafe { RawDevice::put(dev) };
    }
}

impl<T: DriverObject> Object<T> {
    /// Create a new GEM object.
    pub fn new(dev: &drm::Device<T::Driver>, size: usize, args: T::Args) -> Result<ARef<Self>> {
        crate::sim::kmalloc_hook()?;
        let mut uninit: Box<MaybeUninit<Self>> = Box::new_uninit();
        let slot = uninit.as_mut_ptr();
        // SAFETY: `slot` is valid for writes; the data is initialized in place and never moves
        // afterwards (the box is leaked into the `ARef` below).
        unsafe { T::new(dev, size, args).__pinned_init(&raw mut (*slot).data) }?;
        let raw_dev = dev.raw();
        // SAFETY: `raw_dev` is valid as `dev` is borrowed.
        unsafe { raw_dev.as_ref() }.get();
        // SAFETY: `slot` is valid for writes; these are the remaining fields.
        unsafe {
            (&raw mut (*slot).obj).write(RawObject {
                refcount: AtomicUsize::new(1),
                size,
                free: Self::free_callback,
                resv: slot as usize,
                gpuva: std::sync::Mutex::new(Vec::new()),
            });
            (&raw mut (*slot).dev).write(raw_dev);
            (&raw mut (*slot)._ctx).write(PhantomData);
        }
        // SAFETY: Every field is initialized.
        let obj = unsafe { uninit.assume_init() };
        // SAFETY: We take over the initial reference count.
        Ok(unsafe { ARef::from_raw(NonNull::from(Box::leak(obj))) })
    }
}

// SAFETY: All GEM objects are refcounted by their `RawObject`.
unsafe impl<T: DriverObject> AlwaysRefCounted for Object<T> {
    fn inc_ref(&self) {
        self.obj.get();
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: `obj` is a valid pointer to an `Object<T>` whose reference the caller gives up.
        unsafe { RawObject::put(NonNull::new_unchecked(obj.as_ref().as_raw())) };
    }
}

impl<T: DriverObject, Ctx: DeviceContext> IntoGEMObject for Object<T, Ctx> {
    fn as_raw(&self) -> *mut RawObject {
        core::ptr::from_ref(&self.obj).cast_mut()
    }

    unsafe fn from_raw<'a>(self_ptr: *mut RawObject) -> &'a Self {
        // SAFETY: `obj` is the first field of this `repr(C)` struct, and the caller guarantees
        // `self_ptr` is the one in a valid `Object<T, Ctx>` for `'a`.
        unsafe { &*self_ptr.cast::<Self>() }
    }
}

impl<T: DriverObject, Ctx: DeviceContext> Sealed for Object<T, Ctx> {}

impl<T: DriverObject, Ctx: DeviceContext> Deref for Object<T, Ctx> {
    type Target = T;

    fn deref(&self) -> &Self::Target {
        &self.data
    }
}

impl<T: DriverObject, Ctx: DeviceContext> AllocImpl for Object<T, Ctx> {
    type Driver = T::Driver;
}
