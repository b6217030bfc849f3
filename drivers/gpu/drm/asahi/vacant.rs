// SPDX-License-Identifier: GPL-2.0

//! Tables whose entries are addressed by index and whose freed places are reused: the driver's
//! registry of a file's kernel-VM objects, where an unbound object's place serves the next one.

use kernel::alloc::Flags;
use kernel::prelude::*;

/// The index of the first free (`None`) entry of `v`, made at the end (with `flags`) if there is
/// none.
///
/// A caller takes the place before it does anything it would have to undo, and fills it once
/// that is done: filling cannot fail. A place it then leaves free is the next one's.
pub fn vacant_place<T>(v: &mut KVVec<Option<T>>, flags: Flags) -> Result<usize> {
    if let Some(i) = v.iter().position(Option::is_none) {
        return Ok(i);
    }
    v.push(None, flags)?;
    Ok(v.len() - 1)
}
