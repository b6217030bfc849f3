// SPDX-License-Identifier: GPL-2.0

//! `SgList` against a model: the buffer as the plain list of its pages' physical addresses.
//! Lookups by offset (the binary search binds rely on), the tail handed to `map_sg`, the reverse
//! lookup debugfs uses, merging, and refused entries changing nothing.

use asahi::pgtable::PhysRange;
use asahi::sg::SgList;
use kernel::error::code::*;
use kernel::sim;
use proptest::prelude::*;
use uat_tests::config::config;

const PG: u64 = 1 << 14;

/// Entries as (first page frame, pages, whether it starts right after the previous one).
fn entries() -> impl Strategy<Value = Vec<(u64, u64, bool)>> {
    prop::collection::vec((0u64..1 << 20, 1u64..6, any::<bool>()), 1..40)
}

/// Builds the list and the model from `spec`; distinct frames, so that every page has one
/// offset. Entries that would reuse a frame are skipped.
fn build(spec: &[(u64, u64, bool)]) -> (SgList, Vec<u64>) {
    let mut sg = SgList::new();
    let mut pages: Vec<u64> = Vec::new();
    let mut next = 0u64;
    for &(frame, n, follow) in spec {
        let first = if follow { next } else { frame * 8 };
        let range: Vec<u64> = (first..first + n).map(|f| f * PG).collect();
        if range.iter().any(|pa| pages.contains(pa)) {
            continue;
        }
        sg.push(PhysRange {
            addr: first * PG,
            len: n * PG,
        })
        .unwrap();
        pages.extend(range);
        next = first + n;
    }
    (sg, pages)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn lookups_match_the_page_model(
        spec in entries(),
        probes in prop::collection::vec((any::<u64>(), any::<u64>()), 16),
    ) {
        let (sg, pages) = build(&spec);
        let size = pages.len() as u64 * PG;
        prop_assert_eq!(sg.size(), size);
        // Canonical: aligned, non-empty, never two entries that could be one.
        let ranges = sg.ranges();
        prop_assert_eq!(ranges.iter().map(|r| r.len).sum::<u64>(), size);
        for r in ranges {
            prop_assert!(r.len > 0 && (r.addr | r.len) % PG == 0);
        }
        for w in ranges.windows(2) {
            prop_assert_ne!(w[0].addr + w[0].len, w[1].addr, "contiguous entries are merged");
        }
        for (page, byte) in probes {
            // A page of the buffer mostly (some past it), at its start half of the time: entry
            // boundaries are where a lookup goes wrong.
            let byte = if byte % 2 == 0 { 0 } else { byte % PG };
            let offset = (page % (pages.len() as u64 + 2)) * PG + byte;
            let Some(pa) = sg.phys_at(offset) else {
                prop_assert!(offset >= size);
                prop_assert!(sg.locate(offset).is_none() && sg.from_offset(offset).is_none());
                continue;
            };
            prop_assert!(offset < size);
            prop_assert_eq!(pa, pages[(offset / PG) as usize] + offset % PG);
            let (i, into) = sg.locate(offset).unwrap();
            prop_assert!(into < ranges[i].len);
            prop_assert_eq!(ranges[i].addr + into, pa);
            // The tail maps the rest of the buffer, from the offset on.
            let (tail, skip) = sg.from_offset(offset).unwrap();
            prop_assert_eq!(skip, into);
            let from_tail: Vec<u64> = tail
                .iter()
                .flat_map(|r| (0..r.len / PG).map(move |k| r.addr + k * PG))
                .skip((skip / PG) as usize)
                .collect();
            prop_assert_eq!(&from_tail[..], &pages[(offset / PG) as usize..]);
            // And back.
            prop_assert_eq!(sg.offset_of(pa), Some(offset));
        }
        prop_assert_eq!(sg.offset_of(!(PG - 1)), None);
    }

    #[test]
    fn refused_entries_change_nothing(spec in entries(), bad in 0usize..5) {
        let (mut sg, pages) = build(&spec);
        let before = (sg.ranges().to_vec(), sg.size());
        let r = match bad {
            0 => PhysRange { addr: 1 << 40, len: 0 },
            1 => PhysRange { addr: (1 << 40) + 512, len: PG },
            2 => PhysRange { addr: 1 << 40, len: PG + 512 },
            // Wraps past the end of the physical address space.
            3 => PhysRange { addr: !(PG - 1), len: 2 * PG },
            _ => PhysRange { addr: 1 << 40, len: !(PG - 1) },
        };
        prop_assert_eq!(sg.push(r), Err(EINVAL));
        prop_assert_eq!((sg.ranges().to_vec(), sg.size()), before);
        prop_assert_eq!(sg.phys_at(0), pages.first().copied());
    }
}

#[test]
fn an_empty_list_holds_nothing() {
    let sg = SgList::new();
    assert_eq!(sg.size(), 0);
    assert!(sg.ranges().is_empty());
    assert_eq!(sg.locate(0), None);
    assert_eq!(sg.from_offset(0), None);
    assert_eq!(sg.offset_of(0), None);
}

/// An allocation failing at either vector (the entries' or their starts') changes nothing;
/// continuing the last entry allocates nothing.
#[test]
fn a_failed_allocation_changes_nothing() {
    let r = |frame: u64| PhysRange {
        addr: frame * PG,
        len: PG,
    };
    for nth in 0..2 {
        let mut sg = SgList::new();
        // Entries two frames apart (none merge) until an allocation fails: the first one the
        // list makes (its entries), or the second (their starts).
        sim::fail_nth_alloc(nth);
        let mut frame = 0;
        loop {
            let before = (sg.ranges().to_vec(), sg.size());
            match sg.push(r(2 * frame)) {
                Ok(()) => {
                    assert_eq!(sg.ranges().len(), before.0.len() + 1);
                    frame += 1;
                    assert!(frame < 1000, "no allocation failed");
                }
                Err(e) => {
                    assert_eq!(e, ENOMEM);
                    assert_eq!((sg.ranges().to_vec(), sg.size()), before);
                    break;
                }
            }
        }
        sim::clear_faults();
        sg.push(r(2 * frame)).unwrap();
        assert_eq!(sg.phys_at(frame * PG), Some(2 * frame * PG));
        sim::fail_nth_alloc(0);
        sg.push(r(2 * frame + 1)).unwrap();
        sim::clear_faults();
        assert_eq!(sg.ranges().len() as u64, frame + 1);
        assert_eq!(sg.size(), (frame + 2) * PG);
    }
}
