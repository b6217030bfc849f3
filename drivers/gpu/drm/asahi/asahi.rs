// SPDX-License-Identifier: GPL-2.0

//! Apple AGX GPU DRM driver: the render node and its GPU MMU (the UAT).
//!
//! This is the in-tree crate root. The driver binds to the GPU's device-tree node, brings the UAT
//! up on the reserved-memory regions the node names, and registers a render node that speaks the
//! uAPI of `include/uapi/drm/asahi_drm.h`: VMs and their page tables (through `drm::gpuvm`),
//! shmem GEM objects, and their binding. Running work on the GPU is not part of it yet: the queue
//! and submit ioctls answer `EOPNOTSUPP`.
//!
//! The modules without DRM types (page tables, contexts, handoff, TLB invalidation, ...) are
//! compiled on the host too (`tests/asahi`), against a simulated SoC.

// Parts of the component have no user in the kernel yet (crash dumps, the buffer model the host
// tests drive).
#![allow(dead_code)]

mod bo;
pub mod crashdump;
pub mod desc_run;
mod driver;
mod file;
#[cfg(any(CONFIG_DRM_ASAHI_FW_STANDIN, CONFIG_DRM_ASAHI_KUNIT_TEST))]
pub mod fw_standin;
pub mod gem;
pub mod geometry;
mod gpu_mem;
pub mod gpuvm;
pub mod handoff;
pub mod kalloc;
#[cfg(CONFIG_DRM_ASAHI_KUNIT_TEST)]
mod kunit;
pub mod occupancy;
pub mod page_list;
mod page_source;
pub mod pgtable;
pub mod pte;
pub mod region;
#[cfg(CONFIG_DRM_ASAHI_KUNIT_TEST)]
pub mod selftest;
#[cfg(CONFIG_DRM_ASAHI_KUNIT_TEST)]
pub mod selftest_bind;
#[cfg(CONFIG_DRM_ASAHI_KUNIT_TEST)]
pub mod selftest_uat;
pub mod sg;
pub mod slots;
pub mod tlb;
pub mod tlbi;
pub mod ttbat;
pub mod uapi_layout;
pub mod uat;
pub mod vacant;
mod vm;
pub mod vm_bind;
pub mod vm_steps;

kernel::module_platform_driver! {
    type: driver::AsahiPlatformDriver,
    name: "asahi",
    authors: ["Asahi Linux UAT contributors"],
    description: "Apple AGX GPU DRM driver",
    license: "GPL",
}
