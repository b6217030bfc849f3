// SPDX-License-Identifier: GPL-2.0

//! The few `Vec` operations the driver needs that 6.12's `KVec` lacks: insertion and removal in
//! the middle of a sorted list, and a table of entries whose freed places are reused.

use kernel::prelude::*;

/// Inserts `x` at `at`, shifting the tail. Allocates only if the vector is full.
pub fn insert_at<T>(v: &mut KVec<T>, at: usize, x: T) -> Result {
    v.push(x, GFP_KERNEL)?;
    v[at..].rotate_right(1);
    Ok(())
}

/// Removes the element at `at`, shifting the tail; `None` if `at` is out of bounds.
pub fn remove_at<T: Copy>(v: &mut KVec<T>, at: usize) -> Option<T> {
    let len = v.len();
    let x = *v.get(at)?;
    v[at..].rotate_left(1);
    // SAFETY: `len - 1 < len`, so the elements up to it stay initialized; the one left past the
    // new length is a `Copy` value (a copy of `x`), which needs no drop.
    unsafe { v.set_len(len - 1) };
    Some(x)
}

/// Puts `x` in the first free (`None`) entry of `v`, or a new one at the end; returns its index.
pub fn insert_vacant<T>(v: &mut KVec<Option<T>>, x: T) -> Result<usize> {
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
