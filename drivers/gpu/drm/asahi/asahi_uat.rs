// SPDX-License-Identifier: GPL-2.0

//! Apple AGX GPU: the UAT (GPU MMU) component of the `drm/asahi` driver.
//!
//! This is the in-tree crate root. Until the GPU driver proper lands on top of this component,
//! the module has nothing to do at init: its code is exercised by its KUnit suites
//! (`CONFIG_DRM_ASAHI_UAT_KUNIT_TEST`, see [`kunit`]).

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
#[cfg(CONFIG_DRM_ASAHI_UAT_KUNIT_TEST)]
mod kunit;
pub mod page_list;
pub mod pgtable;
pub mod pte;
pub mod region;
#[cfg(CONFIG_DRM_ASAHI_UAT_KUNIT_TEST)]
pub mod selftest;
#[cfg(CONFIG_DRM_ASAHI_UAT_KUNIT_TEST)]
pub mod selftest_bind;
#[cfg(CONFIG_DRM_ASAHI_UAT_KUNIT_TEST)]
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
    authors: ["Asahi Linux UAT contributors"],
    description: "Apple AGX GPU MMU (UAT) page tables",
    license: "GPL",
}

struct AsahiUat;

impl kernel::Module for AsahiUat {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(AsahiUat)
    }
}
