// SPDX-License-Identifier: GPL-2.0

//! DRM driver core: the host twin of `rust/kernel/drm/driver.rs` (Linux 7.3), reduced to what
//! `drm::gpuvm` names.
//!
//! [`Driver`] keeps `Data`, `Object` and `INFO`. Left out: `RegistrationData`, `File`,
//! `ParentDevice`, `IOCTLS`, `FEAT_RENDER` (they need DRM files, ioctls and a bus device) and
//! `AllocImpl::ALLOC_OPS` (C callbacks).

use crate::drm::{self, private::Sealed};
use core::ffi::CStr;

/// Information data for a DRM Driver.
pub struct DriverInfo {
    /// Driver major version.
    pub major: i32,
    /// Driver minor version.
    pub minor: i32,
    /// Driver patchlevel version.
    pub patchlevel: i32,
    /// Driver name.
    pub name: &'static CStr,
    /// Driver description.
    pub desc: &'static CStr,
}

/// Trait for memory manager implementations. Implemented internally (sealed): by
/// [`drm::gem::Object`].
pub trait AllocImpl: Sealed + drm::gem::IntoGEMObject {
    /// The [`Driver`] implementation for this [`AllocImpl`].
    type Driver: drm::Driver;
}

/// The DRM `Driver` trait (host subset).
pub trait Driver {
    /// Context data associated with the DRM driver
    type Data: Sync + Send;

    /// The type used to manage memory for this driver.
    type Object: AllocImpl;

    /// Driver metadata
    const INFO: DriverInfo;
}
