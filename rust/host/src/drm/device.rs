// SPDX-License-Identifier: GPL-2.0

//! DRM device: the host twin of `rust/kernel/drm/device.rs` (Linux 7.3), reduced to a
//! reference-counted device carrying the driver's data.
//!
//! Left out: registration (`UnregisteredDevice`, `Registration`, `RegistrationGuard`), the
//! `Ioctl` context and the parent bus device, which need a bus on the host. A host device is
//! made with [`Device::new_host`], which the kernel does not have.

use crate::{
    drm::{self, private::Sealed},
    prelude::*,
    sync::aref::{ARef, AlwaysRefCounted},
};
use core::{
    marker::PhantomData,
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};

/// The typestate of a [`Device`] (sealed).
pub trait DeviceContext: Sealed + Send + Sync + 'static {}

/// The [`Device`] context of a device that may or may not be registered.
pub struct Normal;
impl Sealed for Normal {}
impl DeviceContext for Normal {}

/// The [`Device`] context of a device known to be registered.
pub struct Registered;
impl Sealed for Registered {}
impl DeviceContext for Registered {}

/// The host twin of `struct drm_device`: its reference count.
pub(crate) struct RawDevice {
    refcount: AtomicUsize,
    release: unsafe fn(NonNull<RawDevice>),
}

impl RawDevice {
    /// `drm_dev_get()`.
    pub(crate) fn get(&self) {
        self.refcount.fetch_add(1, Ordering::Relaxed);
    }

    /// `drm_dev_put()`.
    ///
    /// # Safety
    ///
    /// The caller owns a reference and does not use `this` afterwards.
    pub(crate) unsafe fn put(this: NonNull<RawDevice>) {
        // SAFETY: The caller owns a reference, so the device is alive.
        let dev = unsafe { this.as_ref() };
        if dev.refcount.fetch_sub(1, Ordering::Release) == 1 {
            core::sync::atomic::fence(Ordering::Acquire);
            // SAFETY: That was the last reference.
            unsafe { (dev.release)(this) };
        }
    }
}

/// A DRM device (host stand-in for `struct drm_device` with the driver's data).
///
/// # Invariants
///
/// Allocated by [`Device::new_host`] and freed when `raw`'s reference count drops to zero.
#[repr(C)]
pub struct Device<T: drm::Driver, C: DeviceContext = Normal> {
    raw: RawDevice,
    data: T::Data,
    _ctx: PhantomData<C>,
}

impl<T: drm::Driver> Device<T> {
    /// Creates a device with the driver's `data` (host only: the kernel creates DRM devices
    /// through `UnregisteredDevice::new` on a bound bus device).
    pub fn new_host(data: T::Data) -> Result<ARef<Self>> {
        crate::sim::kmalloc_hook()?;
        let dev = Box::new(Self {
            raw: RawDevice {
                refcount: AtomicUsize::new(1),
                release: Self::release,
            },
            data,
            _ctx: PhantomData,
        });
        // SAFETY: The initial reference is handed to the `ARef`.
        Ok(unsafe { ARef::from_raw(NonNull::from(Box::leak(dev))) })
    }

    /// # Safety
    ///
    /// `raw` is the `raw` field of a `Device<T>` from [`Device::new_host`] with no reference left.
    unsafe fn release(raw: NonNull<RawDevice>) {
        // SAFETY: `raw` is the first field of this `repr(C)` struct, allocated by a `Box` in
        // `new_host`, and no reference is left.
        drop(unsafe { Box::from_raw(raw.as_ptr().cast::<Self>()) });
    }
}

impl<T: drm::Driver, C: DeviceContext> Device<T, C> {
    /// The host twin of `as_raw()`: the `struct drm_device` part.
    pub(crate) fn raw(&self) -> NonNull<RawDevice> {
        NonNull::from(&self.raw)
    }
}

impl<T: drm::Driver> Deref for Device<T> {
    type Target = T::Data;

    fn deref(&self) -> &Self::Target {
        &self.data
    }
}

impl<T: drm::Driver> Deref for Device<T, Registered> {
    type Target = Device<T>;

    fn deref(&self) -> &Self::Target {
        // SAFETY: `Device<T, C>` has the same layout for every `C` (`repr(C)`, `C` only in a
        // `PhantomData`), and a registered device is a device.
        unsafe { &*core::ptr::from_ref(self).cast::<Device<T>>() }
    }
}

// SAFETY: The device lives until its reference count drops to zero (`RawDevice::put`).
unsafe impl<T: drm::Driver, C: DeviceContext> AlwaysRefCounted for Device<T, C> {
    fn inc_ref(&self) {
        self.raw.get();
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns the reference it gives back; `raw` is in `obj`.
        unsafe { RawDevice::put(NonNull::from(&(*obj.as_ptr()).raw)) };
    }
}

// SAFETY: A device only hands out `&T::Data`, which is `Send + Sync` by the `Driver` bounds, and
// its reference count is atomic.
unsafe impl<T: drm::Driver, C: DeviceContext> Send for Device<T, C> {}
// SAFETY: As for `Send`.
unsafe impl<T: drm::Driver, C: DeviceContext> Sync for Device<T, C> {}
