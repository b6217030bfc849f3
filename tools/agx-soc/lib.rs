// SPDX-License-Identifier: GPL-2.0

//! A simulated Apple SoC for the UAT driver: reserved-memory regions as the bootloader leaves
//! them, a GPU that walks the tables through a TLB ([`gpu`]), and firmware that follows the
//! handoff protocol on its own thread ([`firmware`]).
//!
//! Host-only: the driver sources never see this crate; tests and tools put a [`Soc`] under
//! them.

pub mod engine;
pub mod firmware;
pub mod gpu;

use asahi::geometry::Geometry;
use asahi::pte::Oas;
use asahi::tlbi::Broadcast;
use asahi::uat::{RegionDesc, Uat, UatConfig};
use firmware::{Firmware, FwKnobs, FwPort};
use gpu::{Gpu, GpuTlbi};
use kernel::error::Result;
use kernel::page::PAGE_SIZE;
use kernel::sim;
use std::sync::Arc;

/// The UAT as the simulated SoC runs it.
pub type SimUat = Uat<Broadcast<GpuTlbi>, FwPort>;
/// The render node's VMs and buffers on it ([`engine`]).
pub type SimGpuvm = engine::Engine;

/// The SoC: its reserved regions, GPU and firmware.
pub struct Soc {
    /// The `ttbs` region.
    pub ttbs: RegionDesc,
    /// The `pagetables` region (the firmware's upper-half top-level table).
    pub pagetables: RegionDesc,
    /// The `handoff` region.
    pub handoff: RegionDesc,
    /// The GPU.
    pub gpu: Arc<Gpu>,
    /// The firmware.
    pub fw: Firmware,
    /// Table geometry (G13).
    pub geometry: Geometry,
    /// Output address size.
    pub oas: Oas,
}

fn reserve(size: u64) -> RegionDesc {
    let phys = sim::reserve_region(size).expect("the reserved-memory pool is exhausted");
    RegionDesc { phys, size }
}

impl Soc {
    /// A G13 SoC (40-bit OAS) whose firmware behaves as `knobs` say.
    pub fn new(knobs: FwKnobs) -> Soc {
        let page = PAGE_SIZE as u64;
        let ttbs = reserve(page);
        let pagetables = reserve(page);
        let handoff = reserve(page);
        Self::with_regions(ttbs, pagetables, handoff, Oas::BITS_40, knobs)
    }

    /// A G13 SoC whose reserved regions are at fixed places (as a device tree gives them).
    /// `None` if a region is not free in the simulated reserved-memory pool.
    pub fn from_regions(
        ttbs: RegionDesc,
        pagetables: RegionDesc,
        handoff: RegionDesc,
        oas: Oas,
        knobs: FwKnobs,
    ) -> Option<Soc> {
        let mut done: Vec<RegionDesc> = Vec::new();
        for r in [ttbs, pagetables, handoff] {
            if sim::reserve_at(r.phys, r.size).is_none() {
                for d in done {
                    // SAFETY: Reserved just above, not used yet.
                    unsafe { sim::unreserve_region(d.phys, d.size) };
                }
                return None;
            }
            done.push(r);
        }
        Some(Self::with_regions(ttbs, pagetables, handoff, oas, knobs))
    }

    fn with_regions(
        ttbs: RegionDesc,
        pagetables: RegionDesc,
        handoff: RegionDesc,
        oas: Oas,
        knobs: FwKnobs,
    ) -> Soc {
        let geometry = Geometry::G13;
        let gpu = Gpu::new(ttbs.phys, oas.bits(), geometry.ias());
        Soc {
            ttbs,
            pagetables,
            handoff,
            fw: Firmware::start(handoff.phys, knobs, Some(gpu.clone())),
            gpu,
            geometry,
            oas,
        }
    }

    /// The configuration the device tree would give the driver.
    pub fn uat_config(&self) -> UatConfig {
        UatConfig {
            geometry: self.geometry,
            oas: self.oas,
            ttbs: self.ttbs,
            pagetables: self.pagetables,
            handoff: self.handoff,
        }
    }

    /// Brings the driver's UAT up on this SoC.
    pub fn boot(&self) -> Result<SimUat> {
        // SAFETY: The regions were reserved for this SoC and are used by nothing else; the
        // pagetables region (zeroed, an empty table) lives as long as the SoC. The simulated GPU
        // walks the tables only when a test asks it to, which no test does for a dropped UAT's
        // kernel context.
        unsafe {
            Uat::new(
                self.uat_config(),
                Broadcast(GpuTlbi(self.gpu.clone())),
                self.fw.port(),
            )
        }
    }
}

impl Soc {
    /// Brings the UAT up and puts the render node's VMs and buffers on it.
    pub fn boot_gpuvm(&self) -> Result<SimGpuvm> {
        engine::Engine::new(self.boot()?)
    }
}

impl Drop for Soc {
    fn drop(&mut self) {
        self.fw.stop();
        // Whatever the test checked, the driver kept to the firmware's protocol (a test that
        // breaks it on purpose takes the log first: `Firmware::take_protocol_errors`). Not
        // while a failing test unwinds: a second panic would abort the process.
        if !std::thread::panicking() {
            let errors = self.fw.take_protocol_errors();
            assert!(errors.is_empty(), "firmware protocol errors: {errors:#?}");
            // And to the GPU's: no valid descriptor replaced by another under a cached
            // translation (break-before-make).
            let stats = self.gpu.stats();
            assert_eq!(
                stats.bbm_violations, 0,
                "translations replaced without break-before-make"
            );
            assert_eq!(stats.freed_table_walks, 0, "the GPU walked freed tables");
        }
        for r in [self.ttbs, self.pagetables, self.handoff] {
            // SAFETY: The firmware has stopped, and a UAT booted on this SoC is dropped by its
            // owner before the SoC (declared after it): nothing uses the regions any more.
            unsafe { sim::unreserve_region(r.phys, r.size) };
        }
    }
}
