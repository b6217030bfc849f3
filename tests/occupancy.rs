// SPDX-License-Identifier: GPL-2.0

//! A leaf table's occupancy against the set of entries that hold pages: from an empty table or
//! a recounted one (`Held::anywhere`), after any sequence of maps of free runs and unmaps of
//! runs, the count is the size of the set, the span holds every member, a run is `within` only
//! if it holds every member, `clip` keeps every member of a run, an end of the span an unmap
//! covers moves past it, and the packed word gives back what was stored.
//!
//! The page-table suites check the same invariants on real tables (`check_occupancy` after
//! every operation); this one reaches the corners (spans touching index 0 or the last entry,
//! unmaps of holes, ends moving past each other) directly.

use asahi::geometry::PTES_PER_TABLE;
use asahi::occupancy::{Held, Occupancy};
use proptest::prelude::*;
use uat_tests::config::config;

#[derive(Clone, Copy, Debug)]
enum Op {
    Map(usize, usize),
    Unmap(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    // Runs often at the table's ends, where the span arithmetic is the most fragile.
    let first = prop_oneof![
        Just(0usize),
        Just(PTES_PER_TABLE - 1),
        0..PTES_PER_TABLE,
        0usize..16,
        PTES_PER_TABLE - 16..PTES_PER_TABLE,
    ];
    (first, 1usize..300, any::<bool>()).prop_map(|(first, len, map)| {
        let len = len.min(PTES_PER_TABLE - first);
        if map {
            Op::Map(first, len)
        } else {
            Op::Unmap(first, len)
        }
    })
}

/// Checks `o` (and its round trip through an `Occupancy`) against the entries `set`.
fn check(o: Held, set: &[bool]) -> Result<(), TestCaseError> {
    let members: Vec<usize> = (0..set.len()).filter(|&i| set[i]).collect();
    prop_assert_eq!(o.pages(), members.len());
    match (o.span(), members.first(), members.last()) {
        (None, None, None) => {}
        (Some((lo, hi)), Some(&first), Some(&last)) => {
            prop_assert!(
                lo <= first && last <= hi,
                "{:?} misses {}..={}",
                o,
                first,
                last
            );
        }
        (span, first, _) => {
            prop_assert!(false, "span {:?} with first member {:?}", span, first);
        }
    }
    let word = Occupancy::new();
    word.set(o);
    prop_assert_eq!(word.get(), o);
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn occupancy_follows_the_mapped_entries(
        recounted in prop::option::of(prop::collection::btree_set(0..PTES_PER_TABLE, 1..20)),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut set = vec![false; PTES_PER_TABLE];
        // From an empty table, or from one whose count was redone (`Held::anywhere`, what
        // `undo_map` leaves).
        let mut o = Held::EMPTY;
        if let Some(pages) = recounted {
            pages.iter().for_each(|&i| set[i] = true);
            o = Held::anywhere(pages.len());
        }
        check(o, &set)?;
        for op in ops {
            match op {
                Op::Map(first, len) => {
                    let last = first + len - 1;
                    // A map only writes entries that hold nothing.
                    if set[first..=last].iter().any(|&m| m) {
                        continue;
                    }
                    set[first..=last].iter_mut().for_each(|m| *m = true);
                    o = o.added(first, last, len);
                }
                Op::Unmap(first, len) => {
                    let last = first + len - 1;
                    let held: Vec<usize> = (0..PTES_PER_TABLE).filter(|&i| set[i]).collect();
                    let n = held.iter().filter(|&&i| (first..=last).contains(&i)).count();
                    // `within` must never claim a page outside the run.
                    if o.within(first, last) {
                        prop_assert_eq!(n, held.len(), "{:?} within {}..={}", o, first, last);
                    }
                    // `clip` keeps every page of the run.
                    let clipped = o.clip(first, last);
                    for &i in held.iter().filter(|&&i| (first..=last).contains(&i)) {
                        prop_assert!(
                            clipped.is_some_and(|(a, b)| a <= i && i <= b),
                            "{:?} clips {}..={} to {:?}, losing {}", o, first, last, clipped, i
                        );
                    }
                    set[first..=last].iter_mut().for_each(|m| *m = false);
                    let old = o.span();
                    o = o.removed(first, last, n);
                    // An end of the span the run covers moves past it: a table unmapped in
                    // order keeps a span that an unmap of the rest covers.
                    if let (Some((lo, hi)), Some(_)) = (old, o.span()) {
                        let covers = |i: usize| first <= i && i <= last;
                        if covers(lo) != covers(hi) {
                            prop_assert_eq!(
                                o.clip(first, last), None,
                                "{:?} still meets {}..={} after its end moved", o, first, last
                            );
                        }
                    }
                }
            }
            check(o, &set)?;
        }
        // Unmapping the whole table empties it, whatever its span.
        prop_assert_eq!(o.removed(0, PTES_PER_TABLE - 1, o.pages()), Held::EMPTY);
    }
}

/// A count redone by reading the table knows nothing of where the pages are: no run is
/// `within` it, not even the whole table, and `clip` keeps runs as they are.
#[test]
fn a_recounted_table_has_no_span() {
    let o = Held::anywhere(5);
    assert_eq!(o.pages(), 5);
    assert!(!o.within(0, PTES_PER_TABLE - 1));
    assert_eq!(o.clip(3, 9), Some((3, 9)));
    assert_eq!(Held::anywhere(0), Held::EMPTY);
}
