// SPDX-License-Identifier: GPL-2.0

//! The KUnit suites of the UAT component (`CONFIG_DRM_ASAHI_KUNIT_TEST`).
//!
//! Each KUnit test runs one case of `selftest*.rs`, which the host test suite runs too (under its
//! leak and fault accounting): the same code checked on the simulated SoC and in the kernel. A
//! case that fails prints the check that failed, with its line.
//!
//! The cases expect the QEMU `virt` machine that `make kernel-check` boots, with the `no-map`
//! carve-out of its device tree, which no driver uses: [`ENV`].

use crate::selftest::{Case, Env};
use kernel::prelude::*;

/// The test machine: QEMU `virt` with the device tree of `make kernel-check`.
const ENV: Env = Env {
    // The PL011 UART: MMIO, never RAM.
    non_ram: 0x0900_0000,
    // The `no-map` reserved-memory region at the top of the 512 MiB of RAM, used by no driver.
    carveout: 0x5f00_0000,
};

/// Runs the case `name` of `cases`; `EINVAL` after printing the check that failed.
fn run(cases: &[Case], name: &str) -> Result {
    let case = cases.iter().find(|c| c.name == name).ok_or(ENOENT)?;
    (case.run)(&ENV).map_err(|what| {
        pr_err!("{}: {}\n", name, what);
        EINVAL
    })
}

/// The page tables on the real page allocator, and borrowing pages by physical address.
#[kunit_tests(asahi_uat_pgtable)]
mod pgtable {
    use super::run;
    use crate::selftest::CASES;
    use kernel::prelude::*;

    #[test]
    fn encoding_vectors() -> Result {
        run(CASES, "encoding_vectors")
    }

    #[test]
    fn map_translate_unmap() -> Result {
        run(CASES, "map_translate_unmap")
    }

    #[test]
    fn bad_arguments() -> Result {
        run(CASES, "bad_arguments")
    }

    #[test]
    fn overlap_refused() -> Result {
        run(CASES, "overlap_refused")
    }

    #[test]
    fn boundaries() -> Result {
        run(CASES, "boundaries")
    }

    #[test]
    fn scatter_and_repeat() -> Result {
        run(CASES, "scatter_and_repeat")
    }

    #[test]
    fn reprot_in_place() -> Result {
        run(CASES, "reprot_in_place")
    }

    #[test]
    fn unmap_frees_tables_after_flush() -> Result {
        run(CASES, "unmap_frees_tables_after_flush")
    }

    #[test]
    fn prune_frees_only_empty_tables() -> Result {
        run(CASES, "prune_frees_only_empty_tables")
    }

    #[test]
    fn table_pages_released() -> Result {
        run(CASES, "table_pages_released")
    }

    #[test]
    fn prealloc_then_map() -> Result {
        run(CASES, "prealloc_then_map")
    }

    #[test]
    fn corrupt_descriptor_reported() -> Result {
        run(CASES, "corrupt_descriptor_reported")
    }

    #[test]
    fn occupancy_spans() -> Result {
        run(CASES, "occupancy_spans")
    }

    #[test]
    fn failed_walks_accounted() -> Result {
        run(CASES, "failed_walks_accounted")
    }

    #[test]
    fn empty_kept_tables_unlinked() -> Result {
        run(CASES, "empty_kept_tables_unlinked")
    }

    #[test]
    fn borrowed_pages() -> Result {
        run(CASES, "borrowed_pages")
    }

    #[test]
    fn borrowed_top_table() -> Result {
        run(CASES, "borrowed_top_table")
    }

    /// Every case of `selftest.rs` has its test above.
    #[test]
    fn every_case_has_a_test() {
        assert_eq!(CASES.len(), 17);
    }
}

/// Contexts, the TTBAT and the handoff against a stand-in firmware, on `memremap` mappings of
/// the carve-out and the real TLBI instructions.
#[kunit_tests(asahi_uat_contexts)]
mod contexts {
    use super::run;
    use crate::selftest_uat::CASES;
    use kernel::prelude::*;

    #[test]
    fn uat_contexts() -> Result {
        run(CASES, "uat_contexts")
    }

    #[test]
    fn uat_refuses_bad_regions() -> Result {
        run(CASES, "uat_refuses_bad_regions")
    }

    #[test]
    fn uat_firmware_absent() -> Result {
        run(CASES, "uat_firmware_absent")
    }

    #[test]
    fn tlbi_ranges() -> Result {
        run(CASES, "tlbi_ranges")
    }

    #[test]
    fn slot_policy() -> Result {
        run(CASES, "slot_policy")
    }

    /// Every case of `selftest_uat.rs` has its test above.
    #[test]
    fn every_case_has_a_test() {
        assert_eq!(CASES.len(), 5);
    }
}

/// VM_BIND's rules, firmware objects in the kernel VM, and crash dumps.
#[kunit_tests(asahi_uat_vm_bind)]
mod vm_bind {
    use super::run;
    use crate::selftest_bind::CASES;
    use kernel::prelude::*;

    #[test]
    fn bind_rules() -> Result {
        run(CASES, "bind_rules")
    }

    #[test]
    fn firmware_objects() -> Result {
        run(CASES, "firmware_objects")
    }

    #[test]
    fn crash_dump() -> Result {
        run(CASES, "crash_dump")
    }

    /// Every case of `selftest_bind.rs` has its test above.
    #[test]
    fn every_case_has_a_test() {
        assert_eq!(CASES.len(), 3);
    }
}
