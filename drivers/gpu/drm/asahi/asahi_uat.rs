// SPDX-License-Identifier: GPL-2.0

//! Apple AGX GPU: the UAT (GPU MMU) component of the `drm/asahi` driver.
//!
//! This is the in-tree crate root. Nothing in Linux 6.12 drives the page tables yet (there are
//! no DRM/GEM Rust abstractions to hang them on), so until the GPU driver proper lands on top of
//! this component, the module's job at init is to run its self-tests when they are enabled.

// The users of most of this code are the rest of drm/asahi, not part of this tree yet.
#![allow(dead_code)]

// Public so that the rest of drm/asahi (and the host test build, which declares the same
// modules) can use them.
pub mod crashdump;
pub mod gem;
pub mod geometry;
pub mod gpuvm;
pub mod handoff;
pub mod kalloc;
pub mod page_list;
pub mod pgtable;
pub mod pte;
pub mod region;
pub mod selftest;
pub mod selftest_bind;
pub mod selftest_uat;
pub mod slots;
pub mod tlb;
pub mod tlbi;
pub mod ttbat;
pub mod uat;
pub mod vacant;

use kernel::prelude::*;

module! {
    type: AsahiUat,
    name: "asahi_uat",
    author: "Asahi Linux UAT contributors",
    description: "Apple AGX GPU MMU (UAT) page tables",
    license: "GPL",
}

struct AsahiUat;

impl kernel::Module for AsahiUat {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        #[cfg(CONFIG_DRM_ASAHI_UAT_SELFTEST)]
        selftest::run_all(&selftest::Env {
            // The QEMU `virt` machine's PL011 UART: MMIO, never RAM.
            non_ram: 0x0900_0000,
            // The top 16 MiB of QEMU's 512 MiB, kept from the kernel with `mem=496M` (what
            // `make kernel-check` boots with) as a reserved-memory region would be.
            carveout: 0x5f00_0000,
        });
        Ok(AsahiUat)
    }
}
