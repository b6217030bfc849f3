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

// 7.3 has this in `rust/kernel/error.rs`; `GpuVm::new::<Error, _>` needs it. (Kept here so that
// this change stays in the DRM files; it can move to `error.rs`.)
impl From<core::convert::Infallible> for crate::error::Error {
    fn from(e: core::convert::Infallible) -> Self {
        match e {}
    }
}
