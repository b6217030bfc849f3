// SPDX-License-Identifier: GPL-2.0

//! DRM subsystem abstractions: the host twin of the parts of `rust/kernel/drm/` (Linux 7.3) that
//! `drm::gpuvm` needs.
//!
//! [`gpuvm`] mirrors 7.3's `drm::gpuvm` item for item. [`Device`], [`Driver`] and [`gem`] are
//! small stand-ins carrying only what GPUVM's signatures name (a device reference, a driver's
//! data and object types, a reference-counted GEM object with a size); each says what of 7.3 it
//! leaves out.

pub mod device;
pub mod driver;
pub mod gem;
pub mod gpuvm;

pub use self::device::Device;
pub use self::device::DeviceContext;
pub use self::device::Normal;
pub use self::device::Registered;
pub use self::driver::Driver;
pub use self::driver::DriverInfo;

pub(crate) mod private {
    pub trait Sealed {}
}
