// SPDX-License-Identifier: GPL-2.0

//! The UAT driver, built on the host.
//!
//! This crate has no code of its own: it declares the modules of `drivers/gpu/drm/asahi/` as the
//! in-tree crate root (`asahi_uat.rs`) does, so the driver's sources compile unchanged against the
//! host `kernel` crate, and makes them public for the host tests and tools.

#[path = "../../drivers/gpu/drm/asahi/crashdump.rs"]
pub mod crashdump;
#[path = "../../drivers/gpu/drm/asahi/desc_run.rs"]
pub mod desc_run;
#[path = "../../drivers/gpu/drm/asahi/fw_standin.rs"]
pub mod fw_standin;
#[path = "../../drivers/gpu/drm/asahi/gem.rs"]
pub mod gem;
#[path = "../../drivers/gpu/drm/asahi/geometry.rs"]
pub mod geometry;
#[path = "../../drivers/gpu/drm/asahi/gpuvm.rs"]
pub mod gpuvm;
#[path = "../../drivers/gpu/drm/asahi/handoff.rs"]
pub mod handoff;
#[path = "../../drivers/gpu/drm/asahi/kalloc.rs"]
pub mod kalloc;
#[path = "../../drivers/gpu/drm/asahi/occupancy.rs"]
pub mod occupancy;
#[path = "../../drivers/gpu/drm/asahi/page_list.rs"]
pub mod page_list;
#[path = "../../drivers/gpu/drm/asahi/page_source.rs"]
pub mod page_source;
#[path = "../../drivers/gpu/drm/asahi/pgtable/mod.rs"]
pub mod pgtable;
#[path = "../../drivers/gpu/drm/asahi/pte.rs"]
pub mod pte;
#[path = "../../drivers/gpu/drm/asahi/region.rs"]
pub mod region;
#[path = "../../drivers/gpu/drm/asahi/selftest.rs"]
pub mod selftest;
#[path = "../../drivers/gpu/drm/asahi/selftest_bind.rs"]
pub mod selftest_bind;
#[path = "../../drivers/gpu/drm/asahi/selftest_uat.rs"]
pub mod selftest_uat;
#[path = "../../drivers/gpu/drm/asahi/sg.rs"]
pub mod sg;
#[path = "../../drivers/gpu/drm/asahi/slots.rs"]
pub mod slots;
#[path = "../../drivers/gpu/drm/asahi/tlb.rs"]
pub mod tlb;
#[path = "../../drivers/gpu/drm/asahi/tlbi.rs"]
pub mod tlbi;
#[path = "../../drivers/gpu/drm/asahi/ttbat.rs"]
pub mod ttbat;
#[path = "../../drivers/gpu/drm/asahi/uapi_layout.rs"]
pub mod uapi_layout;
#[path = "../../drivers/gpu/drm/asahi/uat.rs"]
pub mod uat;
#[path = "../../drivers/gpu/drm/asahi/vacant.rs"]
pub mod vacant;
#[path = "../../drivers/gpu/drm/asahi/vm_bind.rs"]
pub mod vm_bind;
#[path = "../../drivers/gpu/drm/asahi/vm_steps.rs"]
pub mod vm_steps;
