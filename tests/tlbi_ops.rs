// SPDX-License-Identifier: GPL-2.0

//! The TLBI operands the driver issues for a range, decoded independently (as the Arm ARM defines
//! the fields): together they must cover exactly the range, in order, with no gap and nothing
//! outside it, for any size up to the ASID-wide threshold, huge ones included (a loop that does
//! not advance its base past one instruction's 32 GiB is the bug this guards against).

use agx_soc::firmware::FwKnobs;
use agx_soc::gpu::GpuTlbi;
use agx_soc::Soc;
use asahi::geometry::VaRange;
use asahi::pte::Prot;
use asahi::tlb::TlbInvalidate;
use asahi::tlbi::{range_ops, Broadcast, Tlbi, ASID_THRESHOLD_PAGES, MAX_RANGE_PAGES};
use asahi::uat::kernel_va;
use proptest::prelude::*;
use uat_tests::config::config;

const PG: u64 = 1 << 14;

/// `(first page number, pages)` of one operand, its ASID.
fn decode(op: Tlbi) -> (u64, u64, u16) {
    match op {
        Tlbi::Va(x) => {
            assert_eq!(x & 3, 0, "VA[13:12] of a 16 KiB page operand must be zero");
            (((x & ((1 << 44) - 1)) << 12) >> 14, 1, (x >> 48) as u16)
        }
        Tlbi::Range(x) => {
            assert_eq!((x >> 46) & 3, 2, "TG must say 16 KiB");
            assert_eq!((x >> 37) & 3, 0, "no level hint");
            let scale = (x >> 44) & 3;
            let num = (x >> 39) & 31;
            (
                x & ((1 << 37) - 1),
                (num + 1) << (5 * scale + 1),
                (x >> 48) as u16,
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn check_cover(asid: u16, start: u64, pages: u64) -> usize {
    let range = VaRange {
        start,
        last: start + (pages * PG - 1),
    };
    let ops: Vec<Tlbi> = range_ops(asid, range).collect();
    let mask = (1u64 << 37) - 1;
    let mut next = (start >> 14) & mask;
    let mut covered = 0;
    for &op in &ops {
        let (first, n, a) = decode(op);
        assert_eq!(a, asid);
        assert_eq!(
            first & mask,
            next,
            "operand {op:x?} does not start where the last ended"
        );
        next = (next + n) & mask;
        covered += n;
    }
    assert_eq!(covered, pages, "{ops:x?}");
    ops.len()
}

#[test]
fn single_page_is_a_page_operand() {
    let ops: Vec<Tlbi> = range_ops(
        5,
        VaRange {
            start: 0x4000,
            last: 0x7fff,
        },
    )
    .collect();
    assert_eq!(ops, vec![Tlbi::va(5, 0x4000)]);
    assert_eq!(ops[0], Tlbi::Va((5 << 48) | 4));
}

#[test]
fn huge_ranges_advance_past_32_gib() {
    for gib in [32u64, 33, 64, 100, 255] {
        let pages = (gib << 30) / PG;
        let n = check_cover(9, 0x10_0000_0000, pages);
        assert!(n <= 8 + 4, "{gib} GiB took {n} instructions");
    }
    // An odd number of pages beyond one instruction's reach.
    check_cover(1, 0x4000, MAX_RANGE_PAGES * 3 + 12345);
}

#[test]
fn above_the_threshold_the_whole_asid_goes() {
    let pages = ASID_THRESHOLD_PAGES + 1;
    let ops: Vec<Tlbi> = range_ops(
        7,
        VaRange {
            start: 0,
            last: pages * PG - 1,
        },
    )
    .collect();
    assert_eq!(ops, vec![Tlbi::Asid(7 << 48)]);
}

/// The kernel VM (ASID 0) maps globally, and an ASID-wide instruction leaves global entries:
/// above the threshold, its fallback invalidates everything. Checked through the simulated GPU,
/// whose TLB keeps global entries across ASID-wide instructions as the hardware does.
#[test]
fn above_the_threshold_the_kernel_vm_invalidates_everything() {
    let pages = ASID_THRESHOLD_PAGES + 1;
    let range = VaRange {
        start: 0,
        last: pages * PG - 1,
    };
    assert_eq!(range_ops(0, range).collect::<Vec<_>>(), vec![Tlbi::All]);
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let kva = kernel_va(soc.geometry).start;
    uat.kernel_map(kva, 0x8_0010_0000, PG, Prot::GPU_RO_FW_PRIV_RW)
        .unwrap();
    // Cached by the GPU through slot 0, then unmapped behind the TLB's back.
    soc.gpu.translate(0, kva, false).unwrap();
    soc.gpu.set_ignore_tlbi(true);
    uat.kernel_unmap(kva, PG).unwrap();
    soc.gpu.set_ignore_tlbi(false);
    assert!(
        soc.gpu.translate(0, kva, false).is_ok(),
        "the stale entry is cached"
    );
    // The kernel VM's invalidation of a range beyond the threshold drops it.
    Broadcast(GpuTlbi(soc.gpu.clone())).invalidate_range(
        0,
        VaRange {
            start: kva,
            last: kva + pages * PG - 1,
        },
    );
    assert!(soc.gpu.translate(0, kva, false).is_err());
    drop(uat);
}

#[test]
fn upper_half_ranges() {
    check_cover(0, 0xffff_ffa0_0000_0000, 2048 * 3 + 1);
    check_cover(0, 0xffff_ffff_ffff_c000, 1);
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn ranges_are_covered_exactly(
        asid in 0u16..64,
        upper in any::<bool>(),
        start_page in 0u64..(1 << 25),
        pages in prop_oneof![1u64..4096, 1u64..ASID_THRESHOLD_PAGES],
    ) {
        let base = if upper { 0xffff_ff80_0000_0000u64 } else { 0 };
        let start_page = start_page.min((1 << 25) - pages.min(1 << 25));
        let start = base + start_page * PG;
        prop_assume!(start.checked_add(pages * PG - 1).is_some());
        let n = check_cover(asid, start, pages);
        prop_assert!(n <= 16);
    }
}
