// SPDX-License-Identifier: GPL-2.0

//! The host `kernel::maple_tree` against a model of 96 indices (at the bottom or the top of
//! `usize`), each free or holding the value of its range: `alloc_range` takes the lowest gap that
//! fits inside its bounds (`Busy` when none does, `InvalidRequest` for a size of zero or larger
//! than the bounds), `insert_range` refuses any overlap, and `erase` of any index of a range
//! removes the whole range and gives back its value. The kernel VA allocator of the driver and of
//! the simulated SoC relies on exactly this on the host; in the kernel, the real maple tree
//! answers the same calls (the selftests).

use kernel::alloc::{flags::GFP_KERNEL, KBox};
use kernel::maple_tree::{AllocErrorKind, InsertErrorKind, MapleTreeAlloc};
use proptest::prelude::*;
use uat_tests::config::config;

const N: usize = 96;

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, min: usize, max: usize },
    Insert { first: usize, last: usize },
    Erase(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..24, 0..N, 0..N).prop_map(|(size, a, b)| Op::Alloc {
            size,
            min: a.min(b),
            max: a.max(b),
        }),
        (0..N, 0usize..8).prop_map(|(first, len)| Op::Insert {
            first,
            last: (first + len).min(N - 1),
        }),
        (0..N).prop_map(Op::Erase),
    ]
}

/// The lowest `s` in `min..=max - size + 1` with `s..s + size` free.
fn lowest_fit(model: &[Option<u32>], size: usize, min: usize, max: usize) -> Option<usize> {
    (min..=max + 1 - size).find(|&s| model[s..s + size].iter().all(Option::is_none))
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn maple_tree_matches_the_model(
        ops in prop::collection::vec(op(), 1..60),
        top in any::<bool>(),
    ) {
        // The indices at the bottom of `usize`, or at its top (where the driver's upper-half
        // addresses are, and where a range's end plus one overflows).
        let base = if top { usize::MAX - (N - 1) } else { 0 };
        let tree = KBox::pin_init(MapleTreeAlloc::<u32>::new(), GFP_KERNEL).unwrap();
        let mut model: Vec<Option<u32>> = vec![None; N];
        for (tag, op) in ops.into_iter().enumerate() {
            let tag = tag as u32;
            match op {
                Op::Alloc { size, min, max } => {
                    let got = tree.alloc_range(size, tag, base + min..=base + max, GFP_KERNEL);
                    if size == 0 || max - min < size - 1 {
                        prop_assert!(matches!(got, Err(ref e) if e.cause == AllocErrorKind::InvalidRequest && e.value == tag));
                        continue;
                    }
                    match lowest_fit(&model, size, min, max) {
                        Some(s) => {
                            prop_assert_eq!(got.ok(), Some(base + s));
                            model[s..s + size].fill(Some(tag));
                        }
                        None => prop_assert!(matches!(got, Err(ref e) if e.cause == AllocErrorKind::Busy && e.value == tag)),
                    }
                }
                Op::Insert { first, last } => {
                    let got = tree.insert_range(base + first..=base + last, tag, GFP_KERNEL);
                    if model[first..=last].iter().all(Option::is_none) {
                        prop_assert!(got.is_ok());
                        model[first..=last].fill(Some(tag));
                    } else {
                        prop_assert!(matches!(got, Err(ref e) if e.cause == InsertErrorKind::Occupied && e.value == tag));
                    }
                }
                Op::Erase(i) => {
                    let got = tree.erase(base + i);
                    prop_assert_eq!(got, model[i]);
                    if let Some(v) = model[i] {
                        model.iter_mut().filter(|e| **e == Some(v)).for_each(|e| *e = None);
                    }
                }
            }
        }
    }
}
