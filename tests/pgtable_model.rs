// SPDX-License-Identifier: GPL-2.0

//! Random sequences of map / map-scatter / map-repeat / unmap / unmap keeping the tables /
//! reprot / prealloc, checked after every step against the interval-map model: results, walk,
//! translations, table count, leaks;
//! and a corrupt leaf descriptor among the pages an operation meets: reported (EIO), nothing
//! changed; except in a leaf table whose every page an unmap holds, which it takes unread (its
//! descriptors are never followed): unlinked and freed after the flush, or, keeping the tables,
//! cleared; and a corrupt table descriptor (second level or top level) above a mapped page:
//! every operation that meets it reports it, nothing changed. The occupancies (counts and
//! spans) are checked against a full scan of every table after every step (`check`).

use asahi::pgtable::PageTable;
use kernel::error::code::{EEXIST, EIO, ENOENT};
use proptest::prelude::*;
use uat_tests::config::config;
use uat_tests::leak::LeakCheck;
use uat_tests::model::{VaModel, PG};
use uat_tests::ops::{apply, cfg, check, expect, op, touched, va, Op, REACH_PAGES};

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let mut pt = PageTable::new(cfg()).unwrap();
    let mut model = VaModel::new();
    let mut preallocated = false;
    for (i, op) in ops.iter().enumerate() {
        let (want, next) = expect(&model, op);
        let got = apply(&mut pt, op);
        prop_assert_eq!(got, want, "step {} {:?}", i, op);
        model = next;
        // Both leave tables that no mapping needs.
        preallocated |= matches!(op, Op::Prealloc { .. } | Op::UnmapKeep { .. });
        if let Op::Prune { page, pages } = *op {
            // Every leaf table the range meets holds pages, and every leaf-table span it meets
            // that the model maps has its table.
            let span = 2048 * PG;
            let first = va(page) & !(span - 1);
            for at in (first..va(page) + pages * PG).step_by(span as usize) {
                prop_assert_eq!(
                    leaf_slot(&pt, at).is_some(),
                    model.overlaps(at, span),
                    "step {} leaf table at {:#x}",
                    i,
                    at
                );
            }
            if page == 0 && pages == REACH_PAGES {
                // Everything an operation can reach: no table left that no mapping needs.
                preallocated = false;
            }
        }
        check(&pt, &model, Some(touched(op)), i as u64 + 1);
        prop_assert_eq!(
            leak.live_since(),
            1 + pt.table_pages() as i64,
            "table accounting"
        );
        if !preallocated {
            // Exactly the tables the mappings need: empty ones are freed by unmap.
            prop_assert_eq!(pt.table_pages(), model.tables_needed(36, 25), "step {}", i);
        }
    }
    drop(pt);
    prop_assert_eq!(leak.live_since(), 0, "pages leaked");
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_sequences_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}

/// The leaf descriptor of `va` in `pt`: its table page and byte offset.
fn leaf_slot(pt: &PageTable, va: u64) -> Option<(u64, usize)> {
    use asahi::pte::{Desc, Oas};
    let mut table = pt.ttb();
    for (level, shift) in [(1u32, 36u32), (2, 25)] {
        let off = (((va >> shift) & 0x7ff) * 8) as usize;
        let raw = read_word(table, off);
        match Desc::decode(raw, level, Oas::BITS_40) {
            Desc::Table(next) => table = next,
            _ => return None,
        }
    }
    Some((table, (((va >> 14) & 0x7ff) * 8) as usize))
}

fn read_word(table: u64, off: usize) -> u64 {
    // SAFETY: `table` is a table page of the page table under test, alive during the test.
    let page = unsafe { kernel::page::Page::borrow_phys(table) }.unwrap();
    let mut raw = [0u8; 8];
    // SAFETY: 8 writable bytes, in bounds; nothing else touches the page.
    unsafe { page.read_raw(raw.as_mut_ptr(), off, 8) }.unwrap();
    u64::from_le_bytes(raw)
}

fn write_word(table: u64, off: usize, v: u64) {
    // SAFETY: As in `read_word`; this is the corruption under test.
    let page = unsafe { kernel::page::Page::borrow_phys(table) }.unwrap();
    // SAFETY: 8 readable bytes, in bounds; nothing else touches the page.
    unsafe { page.write_raw(v.to_le_bytes().as_ptr(), off, 8) }.unwrap();
}

/// Every table page of `pt`, byte for byte.
fn snapshot(pt: &PageTable) -> Vec<(u64, Vec<u8>)> {
    let mut pas = Vec::new();
    pt.for_each_table_page(|pa| pas.push(pa)).unwrap();
    pas.iter()
        .map(|&pa| {
            let bytes = (0..2048)
                .flat_map(|i| read_word(pa, i * 8).to_le_bytes())
                .collect();
            (pa, bytes)
        })
        .collect()
}

/// Whether `got` is how `op` may fail over a corrupt descriptor it meets: `EIO`, or, for a map,
/// `EEXIST` when it finds a mapped page first, for a reprot `ENOENT` when it finds a hole first.
fn refused_over_corruption(op: &Op, got: kernel::error::Result<u64>) -> bool {
    let allowed: &[kernel::error::Error] = match op {
        Op::Map { .. } | Op::MapSg { .. } | Op::MapRepeat { .. } => &[EIO, EEXIST],
        Op::Reprot { .. } => &[EIO, ENOENT],
        _ => &[EIO],
    };
    matches!(got, Err(e) if allowed.contains(&e))
}

/// Corrupt leaf values: block and reserved types, a non-zero invalid entry (address only),
/// stray bits, an address beyond the OAS.
fn corrupt_value() -> impl Strategy<Value = u64> {
    let pa = 0x8_0000_0000u64;
    prop::sample::select(vec![
        pa | 0b01,
        pa | 0b10,
        pa,
        0x400,
        pa | 0b11 | (1 << 58),
        pa | 0b11 | (1 << 12),
        (1u64 << 41) | 0b11 | (1 << 10) | (1 << 55),
    ])
}

/// A new page table with the `base.1` pages at window page `base.0` mapped (read-write, from
/// physical page 0), checked against `target`, which it returns with the map applied.
fn mapped(base: (u64, u64), target: &VaModel) -> Result<(PageTable, VaModel), TestCaseError> {
    let mut pt = PageTable::new(cfg()).unwrap();
    let map = Op::Map {
        page: base.0,
        pages: base.1,
        pa_page: 0,
        prot: asahi::pte::Prot::GPU_SHARED_RW,
    };
    let (want, model) = expect(target, &map);
    prop_assert_eq!(apply(&mut pt, &map), want);
    Ok((pt, model))
}

/// A corrupt leaf descriptor among the pages an operation meets (the corruption is made on a
/// mapped page, inside its table's span) makes it fail with EIO (or, for a map, EEXIST when a
/// mapped page comes first; for a reprot, ENOENT when a hole does) and change nothing. The
/// exception is an unmap that covers every page of the corrupt descriptor's
/// leaf table (the span its occupancy records; a table covered whole is one case): that table
/// is unlinked without being read (its count gives its pages), so the unmap succeeds as the
/// model says, the table is freed after the flush, and nothing the descriptor points at is
/// touched (the leak check and the allocator's double-free check); an unmap keeping its tables
/// clears that span unread instead, the corrupt descriptor with it.
fn corrupt_run(
    base: (u64, u64),
    at: u64,
    value: u64,
    op: &Op,
    target: &VaModel,
) -> Result<(), TestCaseError> {
    use uat_tests::ops::WINDOW;
    let leak = LeakCheck::start();
    let (mut pt, model) = mapped(base, target)?;
    let va = WINDOW + at * PG;
    // `at` is in the range just mapped: its descriptor exists.
    let slot = leaf_slot(&pt, va);
    prop_assert!(slot.is_some(), "mapped page {} has no leaf descriptor", at);
    let (table, off) = slot.unwrap();
    let old = read_word(table, off);
    write_word(table, off, value);
    let before = snapshot(&pt);
    let tables = pt.table_pages();
    if let Op::Unmap { page, pages } | Op::UnmapKeep { page, pages } = *op {
        // The first window page of the leaf table holding `at` (tables are aligned in VA).
        let off = (WINDOW / PG) % 2048;
        let first = (at + off) / 2048 * 2048 - off;
        // The pages the map left in that table: the unmap holds them all when it covers their
        // span, a table covered whole being one case.
        let (lo, hi) = (base.0.max(first), (base.0 + base.1).min(first + 2048) - 1);
        if page <= lo && page + pages > hi {
            let (want, after) = expect(&model, op);
            prop_assert_eq!(
                apply(&mut pt, op),
                want,
                "unmap over every page of a corrupt table"
            );
            if matches!(op, Op::Unmap { .. }) {
                prop_assert!(
                    leaf_slot(&pt, va).is_none(),
                    "the corrupt table is still linked"
                );
            } else {
                let word = leaf_slot(&pt, va).map(|(table, off)| read_word(table, off));
                prop_assert_eq!(word, Some(0), "the kept table still holds the corruption");
            }
            check(&pt, &after, None, 3);
            drop(pt);
            prop_assert_eq!(leak.live_since(), 0, "pages leaked");
            return Ok(());
        }
    }
    let got = apply(&mut pt, op);
    prop_assert!(
        refused_over_corruption(op, got),
        "{:?} over a corrupt {:#x} returned {:?}",
        op,
        value,
        got
    );
    prop_assert!(snapshot(&pt) == before, "{:?} changed the tables", op);
    prop_assert_eq!(pt.table_pages(), tables);
    write_word(table, off, old);
    check(&pt, &model, None, 3);
    drop(pt);
    prop_assert_eq!(leak.live_since(), 0, "pages leaked");
    Ok(())
}

fn covering_op(at: u64) -> impl Strategy<Value = Op> {
    use asahi::pte::Prot;
    use uat_tests::ops::WINDOW_PAGES;
    // Ranges around `at`, from one page to several whole leaf tables.
    (0u64..=4100, 1u64..=4100, 0usize..6).prop_map(move |(before, after, kind)| {
        let page = at.saturating_sub(before);
        let pages = (at - page + after).min(WINDOW_PAGES - page);
        match kind {
            0 | 1 => Op::Unmap { page, pages },
            5 => Op::UnmapKeep { page, pages },
            2 => Op::Reprot {
                page,
                pages,
                prot: Prot::GPU_SHARED_RO,
            },
            3 => Op::Prealloc { page, pages },
            _ => Op::Map {
                page,
                pages,
                pa_page: 64,
                prot: Prot::GPU_SHARED_RW,
            },
        }
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn corrupt_leaves_are_reported_and_nothing_changes(
        (start, len, at) in (0u64..2048, 1u64..6144).prop_flat_map(|(s, l)| {
            let l = l.min(uat_tests::ops::WINDOW_PAGES - s);
            (Just(s), Just(l), s..s + l)
        }),
        value in corrupt_value(),
        op in (0u64..8192).prop_flat_map(covering_op),
    ) {
        // `op` is regenerated around `at`: its strategy is only a shape.
        let op = retarget(op, at);
        corrupt_run((start, len), at, value, &op, &VaModel::new())?;
    }
}

/// A corrupt table descriptor above a mapped page (the second-level entry of its leaf table,
/// or the top-level entry above that) makes every operation that meets it fail, `EIO` (a map
/// may find a mapped page first: `EEXIST`; a reprot a hole: `ENOENT`), and change nothing: the
/// descriptor is never followed. The caches name another top-level entry's tables, so the
/// operations walk down to it; `translate` and the mapping walk report it too.
fn corrupt_table_run(
    base: (u64, u64),
    at: u64,
    level: u32,
    value: u64,
    op: &Op,
) -> Result<(), TestCaseError> {
    use asahi::pte::Prot;
    let leak = LeakCheck::start();
    let (mut pt, model) = mapped(base, &VaModel::new())?;
    // Mapped last, under another top-level entry: what the caches name.
    let far = 5u64 << 36;
    pt.map(far, 0x8_0000_0000, PG, Prot::GPU_SHARED_RW).unwrap();
    let va = uat_tests::ops::va(at);
    // The descriptor of `level` on the way to `va`'s leaf table.
    let mut table = pt.ttb();
    let mut slot = (table, ((va >> 36) & 0x7ff) as usize * 8);
    if level == 2 {
        let l1 = read_word(table, slot.1);
        table = l1 & 0xffff_ffff_c000;
        slot = (table, ((va >> 25) & 0x7ff) as usize * 8);
    }
    let old = read_word(slot.0, slot.1);
    prop_assert_eq!(old & 3, 3, "a table descriptor");
    // The tables as they are, taken before the corruption (a snapshot walks them).
    let before = snapshot(&pt);
    let tables = pt.table_pages();
    write_word(slot.0, slot.1, value);
    let got = apply(&mut pt, op);
    prop_assert!(
        refused_over_corruption(op, got),
        "{:?} over a corrupt L{} {:#x} returned {:?}",
        op,
        level,
        value,
        got
    );
    prop_assert_eq!(pt.translate(va).err(), Some(EIO));
    prop_assert_eq!(pt.for_each_mapping_all(|_| {}).err(), Some(EIO));
    prop_assert_eq!(pt.table_pages(), tables);
    prop_assert_eq!(
        read_word(slot.0, slot.1),
        value,
        "the corrupt descriptor changed"
    );
    write_word(slot.0, slot.1, old);
    prop_assert!(snapshot(&pt) == before, "{:?} changed the tables", op);
    let unmap_far = Op::Unmap {
        page: (far - uat_tests::ops::va(0)) / PG,
        pages: 1,
    };
    prop_assert_eq!(apply(&mut pt, &unmap_far), Ok(1));
    check(&pt, &model, None, 3);
    drop(pt);
    prop_assert_eq!(leak.live_since(), 0, "pages leaked");
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn corrupt_tables_are_reported_and_nothing_changes(
        (start, len, at) in (0u64..2048, 1u64..6144).prop_flat_map(|(s, l)| {
            let l = l.min(uat_tests::ops::WINDOW_PAGES - s);
            (Just(s), Just(l), s..s + l)
        }),
        level in 1u32..=2,
        value in corrupt_value(),
        op in (0u64..8192).prop_flat_map(covering_op),
    ) {
        let op = retarget(op, at);
        corrupt_table_run((start, len), at, level, value, &op)?;
    }
}

/// Moves `op` so that it covers page `at` (keeping its length where it can).
fn retarget(op: Op, at: u64) -> Op {
    use uat_tests::ops::WINDOW_PAGES;
    let fit = |page: u64, pages: u64| {
        let page = page.min(at);
        let pages = pages.max(at - page + 1).min(WINDOW_PAGES - page);
        (page, pages)
    };
    match op {
        Op::Unmap { page, pages } => {
            let (page, pages) = fit(page, pages);
            Op::Unmap { page, pages }
        }
        Op::UnmapKeep { page, pages } => {
            let (page, pages) = fit(page, pages);
            Op::UnmapKeep { page, pages }
        }
        Op::Reprot { page, pages, prot } => {
            let (page, pages) = fit(page, pages);
            Op::Reprot { page, pages, prot }
        }
        Op::Prealloc { page, pages } => {
            let (page, pages) = fit(page, pages);
            Op::Prealloc { page, pages }
        }
        Op::Map {
            page,
            pages,
            pa_page,
            prot,
        } => {
            let (page, pages) = fit(page, pages);
            Op::Map {
                page,
                pages,
                pa_page,
                prot,
            }
        }
        other => other,
    }
}

/// The 42-bit OAS of t600x (`agx-g13s/c/d`), against the 40 bits the model suites run at, on the
/// same operations: the highest page below the OAS maps and the first above it does not
/// (`ERANGE`, a range across it neither); a PA with bits 40 and 41 maps at 42 bits only; a leaf
/// whose address has bit 41 set is a page at 42 bits and corrupt at 40 (`EIO`, nothing changed),
/// one with the OAS bit itself is corrupt at both.
#[test]
fn the_output_address_size_bounds_maps_and_corruption() {
    use asahi::pte::{Oas, Prot};
    use asahi::selftest::RecordingTlb;
    use asahi::tlb::Gather;
    use kernel::error::code::ERANGE;
    let rw = Prot::GPU_SHARED_RW;
    let unmap = |pt: &mut PageTable, va: u64, size: u64| {
        let mut gather = Gather::new();
        let r = pt.unmap(va, size, &mut gather);
        gather.flush(&RecordingTlb::default(), 1);
        r
    };
    for (oas, bits) in [(Oas::BITS_40, 40u32), (Oas::BITS_42, 42)] {
        let leak = LeakCheck::start();
        let mut c = cfg();
        c.oas = oas;
        let mut pt = PageTable::new(c).unwrap();
        let va = 0x100_0000;
        let top = 1u64 << bits;
        assert_eq!(pt.map(va, top - PG, PG, rw), Ok(()), "{bits} bits");
        assert_eq!(pt.map(va + PG, top, PG, rw), Err(ERANGE), "{bits} bits");
        assert_eq!(pt.map(va + PG, top - PG, 2 * PG, rw), Err(ERANGE));
        let high = (1u64 << 41) | (1 << 40);
        let want = if bits == 42 { Ok(()) } else { Err(ERANGE) };
        assert_eq!(pt.map(va + 2 * PG, high, PG, rw), want, "{bits} bits");
        // Two more pages in low memory, whose descriptors are then given high address bits.
        pt.map(va + 3 * PG, 0x8_0000_0000, 2 * PG, rw).unwrap();
        let (table, off) = leaf_slot(&pt, va + 3 * PG).unwrap();
        let raw = read_word(table, off);
        write_word(table, off, raw | 1 << 41);
        let before = snapshot(&pt);
        if bits == 42 {
            assert_eq!(unmap(&mut pt, va + 3 * PG, PG), Ok(1), "a page at 42 bits");
        } else {
            assert_eq!(
                unmap(&mut pt, va + 3 * PG, PG),
                Err(EIO),
                "corrupt at 40 bits"
            );
            assert!(
                snapshot(&pt) == before,
                "the failed unmap changed the tables"
            );
        }
        let (table, off) = leaf_slot(&pt, va + 4 * PG).unwrap();
        let raw = read_word(table, off);
        write_word(table, off, raw | top);
        let before = snapshot(&pt);
        assert_eq!(
            unmap(&mut pt, va + 4 * PG, PG),
            Err(EIO),
            "the OAS bit, {bits} bits"
        );
        assert!(
            snapshot(&pt) == before,
            "the failed unmap changed the tables"
        );
        write_word(table, off, raw);
        drop(pt);
        assert_eq!(leak.live_since(), 0, "{bits} bits: pages leaked");
    }
}
