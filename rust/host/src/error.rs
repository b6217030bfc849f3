// SPDX-License-Identifier: GPL-2.0

//! Kernel errors: negative errno values, as in `rust/kernel/error.rs`.

use crate::alloc::AllocError;
use core::fmt;
use core::num::NonZeroI32;

/// Contains the C-compatible error codes.
pub mod code {
    macro_rules! declare_err {
        ($($err:tt = $num:literal),* $(,)?) => {
            $(
                #[doc = concat!("Kernel error code ", stringify!($err), ".")]
                pub const $err: super::Error = super::Error::from_const(-$num);
            )*

            pub(super) fn name(errno: i32) -> Option<&'static str> {
                match -errno {
                    $($num => Some(stringify!($err)),)*
                    _ => None,
                }
            }
        };
    }

    declare_err!(
        EPERM = 1,
        ENOENT = 2,
        EINTR = 4,
        EIO = 5,
        ENXIO = 6,
        E2BIG = 7,
        EAGAIN = 11,
        ENOMEM = 12,
        EACCES = 13,
        EFAULT = 14,
        EBUSY = 16,
        EEXIST = 17,
        ENODEV = 19,
        EINVAL = 22,
        ENOSPC = 28,
        ERANGE = 34,
        EOVERFLOW = 75,
        ETIMEDOUT = 110,
    );
}

/// Generic integer kernel error: a negative errno.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error(NonZeroI32);

impl Error {
    const fn from_const(errno: i32) -> Error {
        match NonZeroI32::new(errno) {
            Some(v) => Error(v),
            None => panic!("errno 0 is not an error"),
        }
    }

    /// Creates an [`Error`] from a kernel error code; anything that is not a valid negative
    /// errno becomes `EINVAL`, as in the kernel.
    pub fn from_errno(errno: i32) -> Error {
        if !(-4095..0).contains(&errno) {
            return code::EINVAL;
        }
        Error::from_const(errno)
    }

    /// Returns the kernel error code.
    pub fn to_errno(self) -> i32 {
        self.0.get()
    }

    /// Returns the error's name (`"ENOMEM"`), if it is one of the known codes.
    pub fn name(&self) -> Option<&'static str> {
        code::name(self.0.get())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => f.debug_tuple("Error").field(&-self.0.get()).finish(),
        }
    }
}

impl From<AllocError> for Error {
    fn from(_: AllocError) -> Error {
        code::ENOMEM
    }
}

impl From<core::num::TryFromIntError> for Error {
    fn from(_: core::num::TryFromIntError) -> Error {
        code::EINVAL
    }
}

/// A [`Result`] with an [`Error`] error type.
pub type Result<T = (), E = Error> = core::result::Result<T, E>;
