// SPDX-License-Identifier: GPL-2.0

//! Tables whose entries are addressed by index and whose freed places are reused: the driver's
//! VM and buffer registries, where a destroyed entry's place serves the next one.

use kernel::prelude::*;

/// Puts `x` in the first free (`None`) entry of `v`, or a new one at the end; returns its index.
pub fn insert_vacant<T>(v: &mut KVVec<Option<T>>, x: T) -> Result<usize> {
    match v.iter().position(Option::is_none) {
        Some(i) => {
            v[i] = Some(x);
            Ok(i)
        }
        None => {
            v.push(Some(x), GFP_KERNEL)?;
            Ok(v.len() - 1)
        }
    }
}
