// SPDX-License-Identifier: GPL-2.0

//! A borrowed top-level table (the kernel VM's upper half, in the bootloader's `pagetables`
//! region) adopts nothing it did not create: whatever the managed entries already hold was left
//! by someone else, so the table is refused (`EBUSY`) and nothing of it is followed or freed.

use asahi::geometry::{Geometry, VaRange};
use asahi::pgtable::{PageTable, PtConfig};
use asahi::pte::{Oas, Prot};
use asahi::region::Region;
use kernel::error::code::{EBUSY, EINVAL, ENOMEM};
use kernel::io::PhysAddr;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use uat_tests::leak::LeakCheck;

const PG: u64 = 1 << 14;

fn kernel_cfg() -> PtConfig {
    PtConfig {
        geometry: Geometry::G13,
        range: VaRange {
            start: 0xffff_ffa0_0000_0000,
            last: 0xffff_ffaf_ffff_ffff,
        },
        oas: Oas::BITS_40,
        user: false,
        global: true,
    }
}

/// The kernel VM's upper half on the top-level table at `root`, mapped as the driver maps its
/// `pagetables` region.
///
/// # Safety
///
/// `root` must stay a table that nothing else modifies while the returned table lives.
unsafe fn borrowed(root: PhysAddr) -> Result<PageTable> {
    // SAFETY: `root` is a page of RAM (the caller's table).
    let map = unsafe { Region::new("pagetables", root, PG, PAGE_SIZE, false) }?;
    // SAFETY: Forwarded to the caller.
    unsafe { PageTable::new_borrowed(map, kernel_cfg()) }
}

fn write_word(p: &Page, index: usize, v: u64) {
    // SAFETY: We own `p`; 8 readable bytes inside the page.
    unsafe { p.write_raw(v.to_le_bytes().as_ptr(), index * 8, 8) }.unwrap();
}

fn read_words(p: &Page) -> Vec<u64> {
    let mut raw = vec![0u8; PG as usize];
    // SAFETY: `raw` is a page of writable bytes, nothing else writes `p`.
    unsafe { p.read_raw(raw.as_mut_ptr(), 0, raw.len()) }.unwrap();
    raw.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn entries_left_in_the_managed_range_are_refused_and_never_freed() {
    let leaks = LeakCheck::start();
    {
        let boot = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
        // An earlier kernel's L2 table at L1 index 2 (the managed one), with an L3 below it.
        let l2 = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
        let l3 = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
        write_word(&l2, 0, l3.phys() | 3);
        write_word(&boot, 2, l2.phys() | 3);
        let before = (read_words(&boot), read_words(&l2), read_words(&l3));
        // SAFETY: `boot` outlives the attempt; nothing else touches it meanwhile.
        let r = unsafe { borrowed(boot.phys()) };
        assert_eq!(r.err(), Some(EBUSY));
        // Nothing was pruned or freed: the pages are still ours, with the same contents.
        assert_eq!(
            (read_words(&boot), read_words(&l2), read_words(&l3)),
            before
        );
        assert_eq!(leaks.live_since(), 3);
        // A corrupt (block) entry there is refused the same way, a foreign entry elsewhere is
        // left alone.
        write_word(&boot, 2, 0x8_0000_0001);
        // SAFETY: As above.
        let r = unsafe { borrowed(boot.phys()) };
        assert_eq!(r.err(), Some(EBUSY));
        write_word(&boot, 2, 0);
        write_word(&boot, 0, l2.phys() | 3);
        {
            // SAFETY: As above.
            let mut pt = unsafe { borrowed(boot.phys()) }.unwrap();
            pt.map(
                0xffff_ffa0_0000_0000,
                0x8_0000_0000,
                2 * PG,
                Prot::FW_PRIV_RW,
            )
            .unwrap();
            assert_eq!(pt.table_pages(), 2);
        }
        // Its own tables went with it; the foreign entry and tables stayed.
        let words = read_words(&boot);
        assert_eq!(words[0], l2.phys() | 3);
        assert!(words[1..].iter().all(|&w| w == 0));
        assert_eq!(read_words(&l2)[0], l3.phys() | 3);
        assert_eq!(leaks.live_since(), 3);
    }
    leaks.assert_clean();
}

#[test]
fn a_borrowed_root_must_be_an_aligned_memory_page() {
    // SAFETY: Refused before anything is mapped or read.
    let r = unsafe { borrowed(0x8_0000_0100) };
    assert_eq!(r.err(), Some(EINVAL));
    // SAFETY: Not memory: `memremap` refuses it, and its error is passed on.
    let r = unsafe { borrowed(0x1_0000_0000) };
    assert_eq!(r.err(), Some(ENOMEM));
}

#[test]
fn ttbat_slots_are_never_wrapped() {
    use asahi::ttbat::{checked_slot, SLOTS};
    for slot in 0..SLOTS {
        assert_eq!(checked_slot(slot), Ok(slot));
    }
    for slot in [SLOTS, SLOTS + 1, 2 * SLOTS, usize::MAX] {
        assert_eq!(checked_slot(slot), Err(EINVAL));
    }
}
