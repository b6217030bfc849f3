// SPDX-License-Identifier: GPL-2.0

//! The kernel prelude: what every driver file `use kernel::prelude::*` gets.

pub use crate::alloc::{flags::*, KBox, KVVec, KVec};
pub use crate::error::{code::*, Error, Result};
pub use crate::init::Init;
pub use crate::{pr_debug, pr_err, pr_info, pr_warn};
pub use pin_init::{pin_data, pin_init, PinInit};
