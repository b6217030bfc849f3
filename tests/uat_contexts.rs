// SPDX-License-Identifier: GPL-2.0

//! The UAT on the simulated SoC: contexts bound to TTBAT slots, seen through the simulated GPU
//! (which walks the tables by physical address and caches translations until invalidated) and
//! the simulated firmware (handshake, `cur_slot`, cache flushes).

use agx_soc::firmware::{FlushAnswer, FlushRecord, FwKnobs};
use agx_soc::gpu::{Fault, Gpu};
use agx_soc::Soc;
use asahi::pgtable::PhysRange;
use asahi::pte::Prot;
use asahi::uat::{kernel_va, UatConfig};
use kernel::alloc::flags::{__GFP_ZERO, GFP_KERNEL};
use kernel::error::code::*;
use kernel::sim;
use proptest::prelude::*;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use uat_tests::config::config_scaled;
use uat_tests::leak::LeakCheck;
use uat_tests::pages::{gpu_tag, TaggedPages};

const PG: u64 = 1 << 14;

fn read_u64(pa: u64) -> u64 {
    sim::read_phys_u64(pa).unwrap()
}

#[test]
fn boot_binds_the_kernel_context() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let before_boot = sim::page_stats().live;
    let uat = soc.boot().unwrap();
    // Handshake.
    assert_eq!(read_u64(soc.handoff.phys), 0x4b1d_0000_0000_0002);
    assert_eq!(read_u64(soc.handoff.phys + 8), 0x4b1d_0000_0000_0002);
    // Slot 0: the kernel's lower table and the bootloader's upper table, ASID 0, valid.
    let ttb0 = read_u64(soc.ttbs.phys);
    let ttb1 = read_u64(soc.ttbs.phys + 8);
    assert_eq!(ttb1, soc.pagetables.phys | 1);
    assert_eq!(ttb0 & 1, 1);
    assert_eq!(ttb0 >> 48, 0);
    assert!(sim::is_allocated(ttb0 & !1));
    // Every user slot is clear.
    for slot in 1..64 {
        assert_eq!(read_u64(soc.ttbs.phys + 16 * slot), 0);
        assert_eq!(read_u64(soc.ttbs.phys + 16 * slot + 8), 0);
    }
    assert_eq!(soc.gpu.stats().tlbi[3], 1, "one invalidate-all at boot");
    drop(uat);
    // Teardown unbinds everything; the bootloader's table stays.
    assert_eq!(read_u64(soc.ttbs.phys), 0);
    // Every page the boot allocated on this thread, the kernel's root table among them, is
    // freed. (Not "the root's page is free": another test's thread may have taken it since.)
    assert_eq!(sim::page_stats().live, before_boot);
    // Each invalidation came after a store barrier.
    assert_eq!(soc.gpu.stats().unordered_tlbi, 0);
    drop(soc);
    leak.assert_clean();
}

/// A firmware that died with its side of the handoff lock raised fails the boot with `EIO`
/// after the handshake's timeout, instead of hanging it.
#[test]
fn a_firmware_dead_with_the_lock_fails_the_boot() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs {
        boots: false,
        ..FwKnobs::default()
    });
    // lock_fw (0x011) raised, for good.
    sim::write_phys(soc.handoff.phys + 0x11, &[1]).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(soc.boot().err(), Some(EIO));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    drop(soc);
    leak.assert_clean();
}

#[test]
fn boot_fails_cleanly() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs {
        boots: false,
        ..FwKnobs::default()
    });
    assert_eq!(soc.boot().err(), Some(EIO));
    let good = soc.uat_config();
    let bad = |f: &dyn Fn(&mut UatConfig)| {
        let mut cfg = good;
        f(&mut cfg);
        // SAFETY: The regions are the SoC's; a refused configuration touches nothing.
        unsafe {
            asahi::uat::Uat::new(
                cfg,
                asahi::tlbi::Broadcast(agx_soc::gpu::GpuTlbi(soc.gpu.clone())),
                soc.fw.port(),
            )
        }
        .err()
    };
    assert_eq!(bad(&|c| c.ttbs.phys += 0x100), Some(EINVAL));
    assert_eq!(bad(&|c| c.ttbs.size = 0x200), Some(EINVAL));
    assert_eq!(bad(&|c| c.handoff.size = 0x600), Some(EINVAL));
    assert_eq!(bad(&|c| c.pagetables.size = 0x1000), Some(EINVAL));
    assert_eq!(bad(&|c| c.pagetables.phys += 0x2000), Some(EINVAL));
    // A pagetables region that is not memory: `memremap` refuses it, and its error is passed on.
    assert_eq!(bad(&|c| c.pagetables.phys = sim::HOLE.0), Some(ENOMEM));
    let log = kernel::print::take_log();
    assert!(log
        .iter()
        .any(|l| l.contains("ttbs") && l.contains("aligned")));
    assert!(log.iter().any(|l| l.contains("pagetables")));
    drop(soc);
    leak.assert_clean();
}

/// Maps `pages` one by one (they are scattered) at `va` in VM `vm`.
fn map_pages(
    uat: &mut agx_soc::SimUat,
    vm: u64,
    va: u64,
    pages: &[u64],
    prot: Prot,
) -> kernel::error::Result {
    let sg: Vec<PhysRange> = pages
        .iter()
        .map(|&addr| PhysRange { addr, len: PG })
        .collect();
    uat.vm_map_sg(vm, va, sg.len() as u64 * PG, &sg, 0, prot)
}

#[test]
fn kernel_mappings_and_permissions() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(4, 100);
    let kva = kernel_va(soc.geometry).start;
    uat.kernel_map(kva, data.phys(0), PG, Prot::GPUFW_SHARED_RW)
        .unwrap();
    uat.kernel_map(kva + PG, data.phys(1), PG, Prot::FW_SHARED_RW)
        .unwrap();
    uat.kernel_map(kva + 2 * PG, data.phys(2), PG, Prot::GPU_RO_FW_PRIV_RW)
        .unwrap();
    uat.kernel_map(0x10_0000, data.phys(3), PG, Prot::GPU_SHARED_RW)
        .unwrap();
    let gpu = &soc.gpu;
    assert_eq!(gpu_tag(gpu, 0, kva), Ok(100));
    assert_eq!(gpu.translate(0, kva + 8, true), Ok(data.phys(0) + 8));
    // Firmware only: the GPU has no access.
    assert!(matches!(
        gpu.translate(0, kva + PG, false),
        Err(Fault::Permission { .. })
    ));
    assert_eq!(gpu_tag(gpu, 0, kva + 2 * PG), Ok(102));
    assert!(matches!(
        gpu.translate(0, kva + 2 * PG, true),
        Err(Fault::Permission { write: true, .. })
    ));
    assert_eq!(gpu_tag(gpu, 0, 0x10_0000), Ok(103));
    // Outside the driver's part of the upper half: the firmware's, not mapped here.
    assert_eq!(
        uat.kernel_map(kva - PG, data.phys(0), PG, Prot::FW_PRIV_RW),
        Err(ERANGE)
    );
    assert!(matches!(
        gpu.translate(0, kva + 3 * PG, false),
        Err(Fault::Unmapped { level: 3, .. })
    ));
    // The GPU reported exactly the three faults, with address, slot and level.
    assert_eq!(
        gpu.take_faults(),
        vec![
            Fault::Permission {
                va: kva + PG,
                slot: 0,
                write: false
            },
            Fault::Permission {
                va: kva + 2 * PG,
                slot: 0,
                write: true
            },
            Fault::Unmapped {
                va: kva + 3 * PG,
                slot: 0,
                level: 3
            },
        ]
    );
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

#[test]
fn user_contexts_cannot_reach_kernel_only_mappings() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(3, 200);
    let kva = kernel_va(soc.geometry).start;
    uat.kernel_map(kva, data.phys(0), PG, Prot::FW_PRIV_RW)
        .unwrap();
    uat.kernel_map(kva + PG, data.phys(1), PG, Prot::GPU_RO_FW_PRIV_RW)
        .unwrap();
    let plain = uat.create_vm(false).unwrap();
    let visible = uat.create_vm(true).unwrap();
    map_pages(
        &mut uat,
        plain,
        0x4000,
        &[data.phys(2)],
        Prot::GPU_SHARED_RW,
    )
    .unwrap();
    let s_plain = uat.bind(plain).unwrap();
    let s_visible = uat.bind(visible).unwrap();
    assert_ne!(s_plain, s_visible);
    let gpu = &soc.gpu;
    assert_eq!(gpu_tag(gpu, s_plain, 0x4000), Ok(202));
    // No upper half at all in a plain user context.
    assert!(matches!(
        gpu.translate(s_plain, kva, false),
        Err(Fault::NoContext { .. })
    ));
    // A kernel-visible context sees the kernel's half with the kernel's permissions only.
    assert!(matches!(
        gpu.translate(s_visible, kva, false),
        Err(Fault::Permission { .. })
    ));
    assert_eq!(gpu_tag(gpu, s_visible, kva + PG), Ok(201));
    // Nor the user mapping of the other VM.
    assert!(matches!(
        gpu.translate(s_visible, 0x4000, false),
        Err(Fault::Unmapped { .. })
    ));
    uat.release(plain).unwrap();
    uat.release(visible).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// The kernel VM's leaves are global in its upper half only. Its lower half is the kernel
/// context's alone: a translation cached there is not found by user contexts, which map the same
/// VAs in their own tables. Its upper half is walked by kernel-visible user contexts under their
/// own ASIDs: a range invalidation in the kernel's ASID drops what they cached there too.
#[test]
fn kernel_vm_leaves_are_global_in_its_upper_half_only() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(4, 400);
    let va = 0x10_0000;
    uat.kernel_map(va, data.phys(0), PG, Prot::GPU_SHARED_RW)
        .unwrap();
    let kva = kernel_va(soc.geometry).start;
    for i in 0..2 {
        uat.kernel_map(
            kva + i * PG,
            data.phys(2 + i as usize),
            PG,
            Prot::GPU_RO_FW_PRIV_RW,
        )
        .unwrap();
    }
    let empty = uat.create_vm(false).unwrap();
    let own = uat.create_vm(false).unwrap();
    let visible = uat.create_vm(true).unwrap();
    map_pages(&mut uat, own, va, &[data.phys(1)], Prot::GPU_SHARED_RW).unwrap();
    let s_empty = uat.bind(empty).unwrap();
    let s_own = uat.bind(own).unwrap();
    let s_visible = uat.bind(visible).unwrap();
    let gpu = &soc.gpu;
    // The kernel context caches its lower-half translation first.
    assert_eq!(warm(gpu, 0, va), 400);
    assert!(matches!(
        gpu.translate(s_empty, va, false),
        Err(Fault::Unmapped { .. })
    ));
    assert_eq!(gpu_tag(gpu, s_own, va), Ok(401));
    // And the other way round: the user context's translation stays its own.
    assert_eq!(gpu_tag(gpu, 0, va), Ok(400));
    // Unmapping one page of a kernel leaf table that keeps another (no table freed, so no
    // invalidation of everything) drops the user context's cached translation of it.
    assert_eq!(warm(gpu, s_visible, kva), 402);
    assert_eq!(uat.kernel_unmap(kva, PG), Ok(1));
    assert!(matches!(
        gpu.translate(s_visible, kva, false),
        Err(Fault::Unmapped { .. })
    ));
    assert_eq!(gpu_tag(gpu, s_visible, kva + PG), Ok(403));
    for vm in [empty, own, visible] {
        uat.release(vm).unwrap();
    }
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// A map that fails while writing (a driver bug, injected here: a table page refused on the way
/// down) clears what it wrote, but the GPU may have cached some of it meanwhile, and the caller
/// is about to let go of the pages: the driver must invalidate the range in the user VM's ASID,
/// in the kernel context's for the kernel VM's lower half, and for its upper half (global
/// leaves) in every context.
#[test]
fn a_map_that_fails_while_writing_leaves_no_translation_cached() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(2, 600);
    let sg: Vec<PhysRange> = (0..2)
        .map(|i| PhysRange {
            addr: data.phys(i),
            len: PG,
        })
        .collect();
    let vm = uat.create_vm(true).unwrap();
    let slot = uat.bind(vm).unwrap();
    // Across two leaf tables: the first page is written before the second table is reached.
    let span = 1 << 25;
    let lower = span - PG;
    let upper = kernel_va(soc.geometry).start + span - PG;
    // The table mapped, where, and the contexts that reach it.
    for (kernel, va, slots) in [
        (false, lower, vec![slot]),
        (true, lower, vec![0]),
        (true, upper, vec![slot, 0]),
    ] {
        let mut reached = 0;
        for n in 0.. {
            let seen = Rc::new(Cell::new(false));
            let (gpu, s, at) = (soc.gpu.clone(), seen.clone(), slots.clone());
            // Where the borrow fails, the GPU reads the first page in every context that reaches
            // it, caching its translation if the map has written it by then.
            sim::fail_nth_borrow(n, move || {
                s.set(at.iter().all(|&c| gpu_tag(&gpu, c, va) == Ok(600)))
            });
            let r = if kernel {
                uat.kernel_map_sg(va, 2 * PG, &sg, 0, Prot::GPU_SHARED_RW)
            } else {
                uat.vm_map_sg(vm, va, 2 * PG, &sg, 0, Prot::GPU_SHARED_RW)
            };
            sim::clear_faults();
            if r.is_ok() {
                break;
            }
            assert_eq!(r, Err(EIO), "refusing borrow {n}");
            // Only where every context read the page (the map had written it) is there a
            // translation to drop.
            if !seen.get() {
                continue;
            }
            reached += 1;
            for &c in &slots {
                assert!(
                    matches!(soc.gpu.translate(c, va, false), Err(Fault::Unmapped { .. })),
                    "VA {va:#x}, borrow {n}: the GPU still reaches the page in context {c}"
                );
            }
        }
        assert!(
            reached > 0,
            "no failed map had written the first page at {va:#x}"
        );
        for &c in &slots {
            assert_eq!(gpu_tag(&soc.gpu, c, va + PG), Ok(data.tag(1)));
        }
        if kernel {
            assert_eq!(uat.kernel_unmap(va, 2 * PG), Ok(2));
        } else {
            assert_eq!(uat.vm_unmap(vm, va, 2 * PG), Ok(2));
        }
    }
    uat.release(vm).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// Fills the TLB with `va`'s translation in `slot`, checks it, and returns the tag.
fn warm(gpu: &Gpu, slot: usize, va: u64) -> u64 {
    let t = gpu_tag(gpu, slot, va).unwrap();
    assert_eq!(gpu_tag(gpu, slot, va), Ok(t));
    t
}

/// After `vm_unmap` returns, the GPU faults on the old VAs although it had them cached; returns
/// the VAs it still reached (empty when the driver invalidated correctly).
fn stale_after_unmap(ignore_tlbi: bool) -> Vec<u64> {
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(6, 300);
    let vm = uat.create_vm(false).unwrap();
    // Spread over more than 32 GiB (one range instruction's reach) and across leaf tables.
    let vas = [
        0x4000,
        0x1ff_c000,
        0x200_0000,
        33 << 30,
        100 << 30,
        (200 << 30) + 0x4000,
    ];
    for (i, &va) in vas.iter().enumerate() {
        map_pages(&mut uat, vm, va, &[data.phys(i)], Prot::GPU_SHARED_RW).unwrap();
    }
    let slot = uat.bind(vm).unwrap();
    for (i, &va) in vas.iter().enumerate() {
        assert_eq!(warm(&soc.gpu, slot, va), data.tag(i));
    }
    soc.gpu.set_ignore_tlbi(ignore_tlbi);
    // One unmap of the whole span: 200 GiB, several range instructions.
    let n = uat.vm_unmap(vm, 0x4000, (201 << 30) - 0x4000).unwrap();
    assert_eq!(n, vas.len());
    let reached: Vec<u64> = vas
        .iter()
        .copied()
        .filter(|&va| soc.gpu.translate(slot, va, false).is_ok())
        .collect();
    soc.gpu.set_ignore_tlbi(false);
    uat.release(vm).unwrap();
    drop(uat);
    drop(data);
    reached
}

#[test]
fn no_stale_translation_after_unmap() {
    let leak = LeakCheck::start();
    assert_eq!(stale_after_unmap(false), Vec::<u64>::new());
    leak.assert_clean();
}

/// The detector works: with the GPU ignoring TLB maintenance, every old VA is still reached.
#[test]
fn stale_translations_are_detected_when_invalidation_is_broken() {
    assert_eq!(stale_after_unmap(true).len(), 6);
}

#[test]
fn freed_tables_are_not_walked_after_unmap() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(2, 400);
    let vm = uat.create_vm(false).unwrap();
    let va = 5 << 36;
    map_pages(&mut uat, vm, va, &[data.phys(0)], Prot::GPU_SHARED_RW).unwrap();
    let slot = uat.bind(vm).unwrap();
    warm(&soc.gpu, slot, va);
    let tables = uat.vm_table(vm).unwrap().table_pages();
    assert_eq!(tables, 2);
    uat.vm_unmap(vm, va, PG).unwrap();
    assert_eq!(uat.vm_table(vm).unwrap().table_pages(), 0);
    // The freed tables are poisoned; a walk cache left pointing at them would read garbage.
    assert!(matches!(
        soc.gpu.translate(slot, va + PG, false),
        Err(Fault::Unmapped { level: 1, .. })
    ));
    uat.release(vm).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

#[test]
fn destroyed_vm_is_unreachable_after_slot_reuse() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(2, 500);
    // Occupy every user slot so that the new VM must reuse the destroyed one's.
    let busy: Vec<u64> = (0..62).map(|_| uat.create_vm(false).unwrap()).collect();
    for &vm in &busy {
        uat.bind(vm).unwrap();
    }
    let old = uat.create_vm(false).unwrap();
    map_pages(&mut uat, old, 0x8000, &[data.phys(0)], Prot::GPU_SHARED_RW).unwrap();
    let slot = uat.bind(old).unwrap();
    assert_eq!(warm(&soc.gpu, slot, 0x8000), 500);
    assert_eq!(uat.destroy_vm(old), Err(EBUSY), "work still bound");
    uat.release(old).unwrap();
    uat.destroy_vm(old).unwrap();
    assert_eq!(read_u64(soc.ttbs.phys + 16 * slot as u64), 0);
    assert!(matches!(
        soc.gpu.translate(slot, 0x8000, false),
        Err(Fault::NoContext { .. })
    ));
    let new = uat.create_vm(false).unwrap();
    map_pages(&mut uat, new, 0xc000, &[data.phys(1)], Prot::GPU_SHARED_RW).unwrap();
    assert_eq!(uat.bind(new), Ok(slot));
    assert!(matches!(
        soc.gpu.translate(slot, 0x8000, false),
        Err(Fault::Unmapped { .. })
    ));
    assert_eq!(gpu_tag(&soc.gpu, slot, 0xc000), Ok(501));
    assert_eq!(uat.destroy_vm(old), Err(ENOENT));
    // The work completes before the teardown, which leaves a VM with work to the firmware.
    for &vm in busy.iter().chain([&new]) {
        uat.release(vm).unwrap();
    }
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// A VM may be destroyed with its mappings in place (one ASID invalidation frees its tables)
/// only if the firmware caches none of them: those must be flushed one by one as they are
/// unmapped.
#[test]
fn only_vms_without_firmware_cached_mappings_are_destroyed_mapped() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(2, 700);
    let plain = uat.create_vm(false).unwrap();
    let cached = uat.create_vm(false).unwrap();
    map_pages(
        &mut uat,
        plain,
        0x8000,
        &[data.phys(0)],
        Prot::GPU_SHARED_RW,
    )
    .unwrap();
    map_pages(
        &mut uat,
        cached,
        0x8000,
        &[data.phys(1)],
        Prot::GPU_SHARED_RW,
    )
    .unwrap();
    assert!(uat.can_destroy_mapped(plain));
    assert!(uat.can_destroy_mapped(cached));
    map_pages(
        &mut uat,
        cached,
        0xc000,
        &[data.phys(1)],
        Prot::GPUFW_PRIV_RW,
    )
    .unwrap();
    assert!(
        !uat.can_destroy_mapped(cached),
        "a firmware-cached mapping needs its flush"
    );
    assert!(uat.can_destroy_mapped(plain));
    uat.destroy_vm(plain).unwrap();
    assert!(!uat.can_destroy_mapped(plain), "no such VM");
    uat.vm_unmap(cached, 0x8000, 2 * PG).unwrap();
    uat.destroy_vm(cached).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

#[test]
fn the_firmware_current_slot_is_never_rebound() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let vms: Vec<u64> = (0..63).map(|_| uat.create_vm(false).unwrap()).collect();
    for &vm in &vms {
        uat.bind(vm).unwrap();
    }
    // All slots busy.
    let extra = uat.create_vm(false).unwrap();
    assert_eq!(uat.bind(extra), Err(EBUSY));
    // One VM goes idle, but the firmware is still in its context.
    let idle = vms[10];
    let slot = uat.slot_of(idle).unwrap();
    uat.release(idle).unwrap();
    soc.fw.run_context(slot as u32);
    assert_eq!(uat.bind(extra), Err(EBUSY));
    assert_eq!(uat.destroy_vm(idle), Err(EBUSY));
    assert_eq!(uat.slot_of(idle), Some(slot));
    // The firmware moves on: the slot can be taken.
    soc.fw.run_context(0xffff_ffff);
    assert_eq!(uat.bind(extra), Ok(slot));
    assert_eq!(uat.slot_of(idle), None);
    assert_eq!(uat.stats().evictions, 1);
    // The work completes before the teardown, which leaves a VM with work to the firmware.
    for &vm in vms.iter().filter(|&&vm| vm != idle).chain([&extra]) {
        uat.release(vm).unwrap();
    }
    drop(uat);
    drop(soc);
    leak.assert_clean();
}

#[test]
fn cached_firmware_mappings_are_flushed_before_unmap() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let kva = kernel_va(soc.geometry).start;
    let pa = 0x8_0000_0000 + (1 << 30) - (2 << 30) / 2; // RAM, never accessed.
                                                        // 0x10000 + 3 pages: two firmware messages (page_count < 0x10000).
    let pages = 0x10003u64;
    uat.kernel_map(kva, pa, pages * PG, Prot::FW_PRIV_RW)
        .unwrap();
    uat.kernel_map(kva + (pages + 1) * PG, pa, PG, Prot::FW_SHARED_RW)
        .unwrap();
    assert_eq!(
        uat.kernel_unmap(kva, (pages + 2) * PG),
        Ok(pages as usize + 1)
    );
    let log = soc.fw.log();
    assert_eq!(
        log.flushes,
        vec![
            FlushRecord {
                slot: 64,
                addr: kva,
                size: 0xffff * PG
            },
            FlushRecord {
                slot: 64,
                addr: kva + 0xffff * PG,
                size: 4 * PG
            },
        ]
    );
    assert!(log.protocol_errors.is_empty(), "{:?}", log.protocol_errors);
    // The uncached mapping needed no flush; nothing is left mapped.
    assert_eq!(uat.stats().fw_flushes, 2);
    assert_eq!(uat.kernel_translate(kva), Err(ENOENT));
    drop(uat);
    drop(soc);
    leak.assert_clean();
}

/// The firmware's check of the flush sequence can fail: the flush of a range still mapped cached
/// (a driver that skipped the uncached remap) is a protocol error, which `Soc`'s drop would
/// report; the driver's own unmap of the same page keeps to the sequence.
#[test]
fn a_flush_of_a_cached_mapping_is_a_protocol_error() {
    use asahi::handoff::{FlushMsg, FwChannel, Handoff, KERNEL_FLUSH_SLOT};
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let kva = kernel_va(soc.geometry).start;
    let data = TaggedPages::new(1, 700);
    uat.kernel_map(kva, data.phys(0), PG, Prot::FW_PRIV_RW)
        .unwrap();
    {
        // SAFETY: The SoC's handoff region, RAM. The UAT's own `Handoff` on it lives on, but
        // nothing calls the UAT in this block (and `new` writes nothing): only this object and
        // the firmware use the region meanwhile.
        let handoff = unsafe { Handoff::new(soc.handoff.phys, soc.handoff.size) }.unwrap();
        handoff.begin_flush(KERNEL_FLUSH_SLOT, kva, PG).unwrap();
        let msg = FlushMsg {
            addr: kva,
            slot: KERNEL_FLUSH_SLOT as u32,
            page_count: 1,
        };
        soc.fw.port().flush_cache(&msg).unwrap();
        handoff.end_flush(KERNEL_FLUSH_SLOT, false).unwrap();
    }
    let errors = soc.fw.take_protocol_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("not mapped uncached"), "{errors:?}");
    assert_eq!(uat.kernel_unmap(kva, PG), Ok(1));
    assert_eq!(
        soc.fw.log().flushes.len(),
        2,
        "the driver's unmap flushed the page"
    );
    assert_eq!(soc.fw.take_protocol_errors(), Vec::<String>::new());
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// A `Soc` dropped with a protocol error in its firmware's log fails the test that dropped it.
#[test]
#[should_panic(expected = "firmware protocol errors")]
fn a_soc_dropped_after_a_protocol_error_fails() {
    use asahi::handoff::{FlushMsg, FwChannel};
    let soc = Soc::new(FwKnobs::default());
    let uat = soc.boot().unwrap();
    // No flush slot 65: the firmware logs the message as a protocol error.
    let bad = FlushMsg {
        addr: 0,
        slot: 65,
        page_count: 1,
    };
    assert!(soc.fw.port().flush_cache(&bad).is_err());
    drop(uat);
    drop(soc);
}

#[test]
fn a_firmware_that_does_not_flush_fails_the_unmap() {
    for answer in [FlushAnswer::Ignore, FlushAnswer::Garbage(7)] {
        let leak = LeakCheck::start();
        let soc = Soc::new(FwKnobs {
            answer,
            ..FwKnobs::default()
        });
        let mut uat = soc.boot().unwrap();
        let kva = kernel_va(soc.geometry).start;
        uat.kernel_map(kva, 0x8_0010_0000, 2 * PG, Prot::GPUFW_PRIV_RW)
            .unwrap();
        assert_eq!(uat.kernel_unmap(kva, 2 * PG), Err(EIO));
        // Nothing changed: still mapped, cached again; the firmware answered (wrongly), so the
        // flush slot is usable again.
        let t = uat.kernel_translate(kva).unwrap();
        assert_eq!(t.prot, Prot::GPUFW_PRIV_RW);
        assert_eq!(read_u64(soc.handoff.phys + 0x20 + 0x18 * 64), 0);
        assert!(kernel::print::take_log()
            .iter()
            .any(|l| l.contains("flush slot 64")));
        // So a retry asks for the flush again (and fails again), rather than taking the
        // mapping for one the firmware never cached and unmapping it without a flush.
        let asked = soc.fw.log().flushes.len();
        assert_eq!(uat.kernel_unmap(kva, 2 * PG), Err(EIO));
        assert_eq!(soc.fw.log().flushes.len(), asked + 1);
        assert_eq!(uat.kernel_translate(kva).unwrap().prot, Prot::GPUFW_PRIV_RW);
        kernel::print::take_log();
        drop(uat);
        drop(soc);
        leak.assert_clean();
    }
}

/// A firmware that does not answer a flush in time (the driver waits 1 s) may still process it:
/// its slot stays requested, and no new request is posted over it (the late "done" would pass
/// for the answer to the new one) until the firmware has answered; then the next flush of the
/// slot goes ahead.
#[test]
fn an_unanswered_flush_keeps_its_slot_until_the_firmware_answers() {
    let soc = Soc::new(FwKnobs {
        answer_delay: std::time::Duration::from_millis(1500),
        ..FwKnobs::default()
    });
    let mut uat = soc.boot().unwrap();
    let kva = kernel_va(soc.geometry).start;
    uat.kernel_map(kva, 0x8_0010_0000, PG, Prot::GPUFW_PRIV_RW)
        .unwrap();
    let state = soc.handoff.phys + 0x20 + 0x18 * 64;
    assert_eq!(uat.kernel_unmap(kva, PG), Err(ETIMEDOUT));
    assert_eq!(read_u64(state), 1, "still requested");
    // Before the firmware answers: refused without a new request.
    let asked = soc.fw.log().flushes.len();
    assert_eq!(uat.kernel_unmap(kva, PG), Err(EIO));
    assert_eq!(soc.fw.log().flushes.len(), asked);
    assert!(kernel::print::take_log()
        .iter()
        .any(|l| l.contains("flush slot 64: the firmware has not answered")));
    // Its late answer frees the slot: the next unmap asks again (and times out again).
    let start = std::time::Instant::now();
    while read_u64(state) != 2 {
        assert!(start.elapsed().as_secs() < 5, "the firmware never answered");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(uat.kernel_unmap(kva, PG), Err(ETIMEDOUT));
    assert!(soc.fw.log().flushes.len() > asked);
    assert_eq!(uat.kernel_translate(kva).unwrap().prot, Prot::GPUFW_PRIV_RW);
    kernel::print::take_log();
    let start = std::time::Instant::now();
    while read_u64(state) != 2 {
        assert!(start.elapsed().as_secs() < 5, "the firmware never answered");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(uat);
    // Its late flushes found the mapping cached again (the failed unmaps put it back): for the
    // simulated firmware's check, a protocol error, made on purpose here.
    soc.fw.take_protocol_errors();
    drop(soc);
}

/// A firmware that answers after the driver gave up on a flush leaves the slot done: the next
/// flush of the slot takes that as idle (with a warning) instead of failing for good.
#[test]
fn a_late_answer_does_not_block_the_next_flush() {
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let kva = kernel_va(soc.geometry).start;
    uat.kernel_map(kva, 0x8_0010_0000, PG, Prot::GPUFW_PRIV_RW)
        .unwrap();
    // The late answer, in the kernel VM's flush slot (64).
    let state = soc.handoff.phys + 0x20 + 0x18 * 64;
    sim::write_phys(state, &2u64.to_le_bytes()).unwrap();
    kernel::print::take_log();
    assert_eq!(uat.kernel_unmap(kva, PG), Ok(1));
    assert_eq!(soc.fw.log().flushes.len(), 1);
    assert_eq!(read_u64(state), 0);
    assert!(kernel::print::take_log()
        .iter()
        .any(|l| l.contains("flush slot 64: a late answer")));
    // A state the protocol never has still fails the flush.
    uat.kernel_map(kva, 0x8_0010_0000, PG, Prot::GPUFW_PRIV_RW)
        .unwrap();
    sim::write_phys(state, &7u64.to_le_bytes()).unwrap();
    assert_eq!(uat.kernel_unmap(kva, PG), Err(EIO));
    drop(uat);
}

#[test]
fn user_flush_only_while_the_firmware_runs_the_context() {
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let vm = uat.create_vm(false).unwrap();
    uat.vm_map(vm, 0x4000, 0x8_0010_0000, PG, Prot::GPUFW_PRIV_RW)
        .unwrap();
    uat.vm_map(vm, 0x8000, 0x8_0010_0000, PG, Prot::GPUFW_PRIV_RW)
        .unwrap();
    let slot = uat.bind(vm).unwrap();
    // The firmware runs another context: no flush request, but the mapping is made uncached
    // first all the same (its invalidation, then the unmap's), so that nothing can enter the
    // firmware's caches should it switch to this context before the unmap.
    let invalidations = |soc: &Soc| soc.gpu.stats().tlbi[..2].iter().sum::<u64>();
    let before = invalidations(&soc);
    uat.vm_unmap(vm, 0x4000, PG).unwrap();
    assert_eq!(
        invalidations(&soc) - before,
        2,
        "the uncached remap's, the unmap's"
    );
    assert!(soc.fw.log().flushes.is_empty());
    soc.fw.run_context(slot as u32);
    uat.vm_unmap(vm, 0x8000, PG).unwrap();
    assert_eq!(
        soc.fw.log().flushes,
        vec![FlushRecord {
            slot: slot as u32,
            addr: 0x8000,
            size: PG
        }]
    );
    soc.fw.run_context(0);
    uat.release(vm).unwrap();
}

// ---- Isolation, against a model, through the GPU ----

#[derive(Clone, Debug)]
enum Op {
    Map {
        vm: usize,
        page: u64,
        n: usize,
        first: usize,
        ro: bool,
    },
    Unmap {
        vm: usize,
        page: u64,
        n: u64,
    },
    Bind {
        vm: usize,
    },
    Release {
        vm: usize,
    },
}

const VMS: usize = 4;
const WINDOW: u64 = 96;
const PAGES_PER_VM: usize = 12;
/// The window straddles a leaf-table boundary (32 MiB).
const WINDOW_BASE: u64 = (1 << 25) - 48 * PG;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..VMS, 0..WINDOW, 1..5usize, 0..PAGES_PER_VM, any::<bool>())
            .prop_map(|(vm, page, n, first, ro)| Op::Map { vm, page, n, first, ro }),
        2 => (0..VMS, 0..WINDOW, 1..24u64).prop_map(|(vm, page, n)| Op::Unmap { vm, page, n }),
        2 => (0..VMS).prop_map(|vm| Op::Bind { vm }),
        1 => (0..VMS).prop_map(|vm| Op::Release { vm }),
    ]
}

fn isolation(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data: Vec<TaggedPages> = (0..VMS)
        .map(|v| TaggedPages::new(PAGES_PER_VM, 1000 * (v as u64 + 1)))
        .collect();
    let ids: Vec<u64> = (0..VMS).map(|_| uat.create_vm(false).unwrap()).collect();
    // Model: per VM, page in window -> (data page index, read-only); users.
    let mut model: Vec<BTreeMap<u64, (usize, bool)>> = vec![BTreeMap::new(); VMS];
    let mut users = [0u32; VMS];
    for op in ops {
        match *op {
            Op::Map {
                vm,
                page,
                n,
                first,
                ro,
            } => {
                let n = n.min((WINDOW - page) as usize);
                let idx: Vec<usize> = (0..n).map(|i| (first + i) % PAGES_PER_VM).collect();
                let pas: Vec<u64> = idx.iter().map(|&i| data[vm].phys(i)).collect();
                let prot = if ro {
                    Prot::GPU_SHARED_RO
                } else {
                    Prot::GPU_SHARED_RW
                };
                let got = map_pages(&mut uat, ids[vm], WINDOW_BASE + page * PG, &pas, prot);
                let clash = (page..page + n as u64).any(|p| model[vm].contains_key(&p));
                if clash {
                    prop_assert_eq!(got, Err(EEXIST));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    for (i, &d) in idx.iter().enumerate() {
                        model[vm].insert(page + i as u64, (d, ro));
                    }
                }
            }
            Op::Unmap { vm, page, n } => {
                let n = n.min(WINDOW - page);
                let got = uat.vm_unmap(ids[vm], WINDOW_BASE + page * PG, n * PG);
                let want = (page..page + n)
                    .filter(|p| model[vm].remove(p).is_some())
                    .count();
                prop_assert_eq!(got, Ok(want));
            }
            Op::Bind { vm } => {
                prop_assert!(uat.bind(ids[vm]).is_ok());
                users[vm] += 1;
            }
            Op::Release { vm } => {
                let got = uat.release(ids[vm]);
                if users[vm] == 0 {
                    prop_assert_eq!(got, Err(EINVAL));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    users[vm] -= 1;
                }
            }
        }
        // Every bound context sees exactly its model: its own pages, faults elsewhere.
        for vm in 0..VMS {
            let Some(slot) = uat.slot_of(ids[vm]) else {
                continue;
            };
            for page in 0..WINDOW {
                let va = WINDOW_BASE + page * PG;
                let got = gpu_tag(&soc.gpu, slot, va);
                match model[vm].get(&page) {
                    Some(&(d, ro)) => {
                        prop_assert_eq!(got, Ok(data[vm].tag(d)), "vm {} va {:#x}", vm, va);
                        let w = soc.gpu.translate(slot, va, true);
                        prop_assert_eq!(w.is_err(), ro);
                    }
                    None => prop_assert!(
                        matches!(got, Err(Fault::Unmapped { .. })),
                        "vm {} slot {} va {:#x}: {:?}",
                        vm,
                        slot,
                        va,
                        got
                    ),
                }
            }
        }
    }
    // The work completes before the teardown, which leaves a VM with work to the firmware.
    for vm in 0..VMS {
        for _ in 0..users[vm] {
            prop_assert_eq!(uat.release(ids[vm]), Ok(()));
        }
    }
    drop(uat);
    drop(data);
    drop(soc);
    prop_assert_eq!(leak.live_since(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(config_scaled(2, 16))]

    #[test]
    fn contexts_are_isolated(ops in proptest::collection::vec(op(), 1..40)) {
        isolation(&ops)?;
    }
}

/// Kernel tables freed by an unmap are not walked through another context's walk cache: a
/// kernel-visible user context caches walks of the kernel's half under its own ASID.
#[test]
fn freed_kernel_tables_are_not_walked_from_user_contexts() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(1, 600);
    let kva = kernel_va(soc.geometry).start + (3 << 25);
    uat.kernel_map(kva, data.phys(0), PG, Prot::GPU_RO_FW_PRIV_RW)
        .unwrap();
    let vm = uat.create_vm(true).unwrap();
    let slot = uat.bind(vm).unwrap();
    assert_eq!(warm(&soc.gpu, slot, kva), 600);
    assert_eq!(uat.kernel_unmap(kva, PG), Ok(1));
    // Both the page and the tables above it are gone, from every context.
    for s in [0, slot] {
        assert!(
            matches!(
                soc.gpu.translate(s, kva + PG, false),
                Err(Fault::Unmapped { level: 1, .. })
            ),
            "slot {s}: {:?}",
            soc.gpu.translate(s, kva + PG, false)
        );
        assert!(matches!(
            soc.gpu.translate(s, kva, false),
            Err(Fault::Unmapped { level: 1, .. })
        ));
    }
    uat.release(vm).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// A user VM's page tables are charged to the client that grows them (`GFP_KERNEL_ACCOUNT`),
/// the kernel VM's are not; a client at its memory cgroup's limit gets `ENOMEM` from a map that
/// needs a new table, with its tables unchanged, while the kernel VM still grows.
#[test]
fn a_client_pays_for_its_page_tables_and_stops_at_its_limit() {
    const LEAF_SPAN: u64 = 1 << 25;
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(1, 400);
    let charged = || sim::page_stats().charged;
    let start = charged();
    let kva = kernel_va(soc.geometry).start;
    uat.kernel_map(kva, data.phys(0), PG, Prot::FW_SHARED_RW)
        .unwrap();
    assert_eq!(charged(), start, "the kernel VM's tables are nobody's");
    let vm = uat.create_vm(false).unwrap();
    assert_eq!(charged(), start + 1, "the root table");
    // One page in each of four leaf tables: a second-level table and four leaves.
    for i in 0..4 {
        uat.vm_map(vm, i * LEAF_SPAN, data.phys(0), PG, Prot::GPU_SHARED_RW)
            .unwrap();
    }
    let tables = uat.vm_table(vm).unwrap().table_pages() as i64;
    assert_eq!(tables, 5);
    assert_eq!(charged(), start + 1 + tables);
    // The limit leaves room for one more table.
    sim::set_charge_limit(Some(charged() + 1));
    uat.vm_map(vm, 4 * LEAF_SPAN, data.phys(0), PG, Prot::GPU_SHARED_RW)
        .unwrap();
    let range = uat.vm_table(vm).unwrap().config().range;
    let before = uat
        .vm_table(vm)
        .unwrap()
        .collect_mappings(range.start, range.size(), |_| true)
        .unwrap();
    let at_limit = charged();
    // A page inside an existing leaf table needs nothing more; one 32 MiB further needs a table.
    uat.vm_map(
        vm,
        4 * LEAF_SPAN + PG,
        data.phys(0),
        PG,
        Prot::GPU_SHARED_RW,
    )
    .unwrap();
    assert_eq!(
        uat.vm_map(vm, 5 * LEAF_SPAN, data.phys(0), PG, Prot::GPU_SHARED_RW),
        Err(ENOMEM)
    );
    assert_eq!(charged(), at_limit);
    assert_eq!(uat.vm_table(vm).unwrap().table_pages() as i64, tables + 1);
    let after = uat
        .vm_table(vm)
        .unwrap()
        .collect_mappings(range.start, range.size(), |_| true)
        .unwrap();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "only the in-table page was added"
    );
    // The kernel VM does not count against the client.
    uat.kernel_map(kva + 2 * LEAF_SPAN, data.phys(0), PG, Prot::FW_SHARED_RW)
        .unwrap();
    sim::set_charge_limit(None);
    uat.destroy_vm(vm).unwrap();
    assert_eq!(charged(), start, "destroying the VM uncharges all of it");
    uat.kernel_unmap(kva, PG).unwrap();
    uat.kernel_unmap(kva + 2 * LEAF_SPAN, PG).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// A guard of the UAT's lock that records whether anything was allocated while it was held.
struct Watched<'a, U> {
    guard: std::sync::MutexGuard<'a, U>,
    attempts_at_lock: u64,
    allocated_under_lock: &'a std::cell::Cell<bool>,
}

impl<'a, U> Watched<'a, U> {
    fn lock(
        m: &'a std::sync::Mutex<U>,
        flag: &'a std::cell::Cell<bool>,
        locks: &'a std::cell::Cell<u32>,
    ) -> Self {
        locks.set(locks.get() + 1);
        Watched {
            guard: m.lock().unwrap(),
            attempts_at_lock: sim::alloc_attempts(),
            allocated_under_lock: flag,
        }
    }
}

impl<U> Drop for Watched<'_, U> {
    fn drop(&mut self) {
        if sim::alloc_attempts() != self.attempts_at_lock {
            self.allocated_under_lock.set(true);
        }
    }
}

impl<U> std::ops::Deref for Watched<'_, U> {
    type Target = U;
    fn deref(&self) -> &U {
        &self.guard
    }
}

impl<U> std::ops::DerefMut for Watched<'_, U> {
    fn deref_mut(&mut self) -> &mut U {
        &mut self.guard
    }
}

/// A bind's tables are allocated with the device's UAT lock released (`vm_prealloc_unlocked`):
/// no allocation happens while it is held, the tables are linked once it is taken again, the map
/// then allocates nothing, and an allocation failure links nothing and leaks nothing.
#[test]
fn a_bind_allocates_its_tables_without_the_uat_lock() {
    const LEAF_SPAN: u64 = 1 << 25;
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let data = TaggedPages::new(1, 500);
    let m = std::sync::Mutex::new(soc.boot().unwrap());
    let vm = m.lock().unwrap().create_vm(false).unwrap();
    let under = std::cell::Cell::new(false);
    let locks = std::cell::Cell::new(0);
    let lock = || Watched::lock(&m, &under, &locks);
    let tables = |u: &asahi::uat::Uat<_, _>| u.vm_table(vm).unwrap().table_pages();
    // A range over three leaf tables, none of which exists: a second-level table and three leaves.
    let (va, size) = (LEAF_SPAN - PG, 2 * LEAF_SPAN + 2 * PG);
    let before = sim::page_stats().live;
    let mut uat = asahi::uat::Uat::vm_prealloc_unlocked(lock(), lock, vm, va, size).unwrap();
    assert_eq!(
        locks.get(),
        2,
        "taken, released for the allocation, taken again"
    );
    assert_eq!(tables(&uat), 5);
    assert_eq!(sim::page_stats().live, before + 5, "nothing left over");
    let attempts = sim::alloc_attempts();
    for i in 0..4 {
        uat.vm_map(vm, va + i * PG, data.phys(0), PG, Prot::GPU_SHARED_RW)
            .unwrap();
    }
    assert_eq!(sim::alloc_attempts(), attempts, "the map allocates nothing");
    drop(uat);
    assert!(!under.get(), "allocated with the UAT lock held");
    // Everything there already: one lock hold, nothing allocated.
    let uat = asahi::uat::Uat::vm_prealloc_unlocked(lock(), lock, vm, va, size).unwrap();
    assert_eq!(locks.get(), 3);
    drop(uat);
    // Each allocation (the pages and counts of a second-level table and two leaves under another
    // top-level entry) failing in turn: ENOMEM, nothing linked, no page kept, the lock free.
    let far = 1 << 36;
    let mut nth = 0;
    loop {
        let live = sim::page_stats().live;
        let attempts = sim::alloc_attempts();
        sim::fail_nth_alloc(nth);
        let r = asahi::uat::Uat::vm_prealloc_unlocked(lock(), lock, vm, far, 2 * LEAF_SPAN);
        sim::clear_faults();
        let Err(e) = r else {
            // No attempt failed: every one was tried.
            assert!(sim::alloc_attempts() - attempts <= nth);
            break;
        };
        assert_eq!(e, ENOMEM, "allocation {nth}");
        assert_eq!(sim::page_stats().live, live, "allocation {nth} leaked");
        let uat = m.try_lock().expect("the lock is free again");
        assert_eq!(tables(&uat), 5);
        nth += 1;
    }
    assert!(nth >= 4, "three pages and the counts: {nth} allocations");
    let uat = m.lock().unwrap();
    assert_eq!(tables(&uat), 8);
    drop(uat);
    assert!(!under.get(), "allocated with the UAT lock held");
    let mut uat = m.into_inner().unwrap();
    uat.destroy_vm(vm).unwrap();
    drop(uat);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// Should a VM's tables change while a bind allocates them unlocked (the caller's GPUVM lock is
/// there to prevent it), the bind finds its reserve short, tops it up again and links exactly
/// what is missing then, keeping nothing extra.
#[test]
fn a_bind_whose_tables_change_while_unlocked_tops_up_again() {
    const LEAF_SPAN: u64 = 1 << 25;
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let data = TaggedPages::new(1, 600);
    let m = std::sync::Mutex::new(soc.boot().unwrap());
    let vm = m.lock().unwrap().create_vm(false).unwrap();
    let tables = |u: &asahi::uat::Uat<_, _>| u.vm_table(vm).unwrap().table_pages();
    // One page each side of a leaf-table boundary: a second-level table and two leaves.
    let mut u = m.lock().unwrap();
    for va in [LEAF_SPAN - PG, LEAF_SPAN] {
        u.vm_map(vm, va, data.phys(0), PG, Prot::GPU_SHARED_RW)
            .unwrap();
    }
    assert_eq!(tables(&u), 3);
    drop(u);
    let relocks = std::cell::Cell::new(0);
    // At the first relock, another party unmaps both pages, which frees all three tables.
    let lock = || {
        let mut g = m.lock().unwrap();
        relocks.set(relocks.get() + 1);
        if relocks.get() == 1 {
            assert_eq!(g.vm_unmap(vm, LEAF_SPAN - PG, 2 * PG), Ok(2));
            assert_eq!(tables(&g), 0);
        }
        g
    };
    // The range also covers a third leaf, missing: the first pass reserves that one only.
    let (va, size) = (LEAF_SPAN - PG, LEAF_SPAN + 2 * PG);
    let before = sim::page_stats().live;
    let mut uat =
        asahi::uat::Uat::vm_prealloc_unlocked(m.lock().unwrap(), lock, vm, va, size).unwrap();
    assert_eq!(
        relocks.get(),
        2,
        "short once, topped up, linked at the next hold"
    );
    assert_eq!(tables(&uat), 4, "the second-level table and three leaves");
    assert_eq!(
        sim::page_stats().live,
        before + 1,
        "three freed, four linked, none spare"
    );
    let attempts = sim::alloc_attempts();
    uat.vm_map(vm, va, data.phys(0), PG, Prot::GPU_SHARED_RW)
        .unwrap();
    uat.vm_map(vm, va + size - PG, data.phys(0), PG, Prot::GPU_SHARED_RW)
        .unwrap();
    assert_eq!(sim::alloc_attempts(), attempts, "the map allocates nothing");
    uat.destroy_vm(vm).unwrap();
    drop(uat);
    drop(m);
    drop(data);
    drop(soc);
    leak.assert_clean();
}

/// A VM whose owner goes while the firmware still runs it is retired, not destroyed: its tables,
/// its slot and the page it owns stay (the GPU still reads the page through it), it takes no
/// new work, and the next `create_vm` once the firmware moved on destroys it and frees them.
#[test]
fn a_vm_the_firmware_still_runs_is_retired_then_destroyed() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let before = sim::page_stats().live;
    let vm = uat.create_vm(false).unwrap();
    let page = kernel::page::Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
    let pa = page.phys();
    sim::write_phys(pa, &0x5eed_u64.to_le_bytes()).unwrap();
    let va = 0x10_0000;
    uat.vm_map_owned(vm, va, page, Prot::GPU_SHARED_RO).unwrap();
    assert_eq!(
        uat.vm_map_owned(
            vm,
            va + PG,
            kernel::page::Page::alloc_page(GFP_KERNEL).unwrap(),
            Prot::GPU_SHARED_RO
        ),
        Err(EEXIST)
    );
    let slot = uat.bind(vm).unwrap();
    uat.release(vm).unwrap();
    soc.fw.run_context(slot as u32);
    assert_eq!(gpu_tag(&soc.gpu, slot, va), Ok(0x5eed));
    let live = sim::page_stats().live;
    assert_eq!(uat.retire_vm(vm), Ok(()));
    assert_eq!(uat.retired_vms(), 1);
    // Nothing went: the firmware's context still reaches the page through the tables.
    assert_eq!(sim::page_stats().live, live);
    assert!(sim::is_allocated(pa));
    assert_eq!(uat.slot_of(vm), Some(slot));
    assert_eq!(gpu_tag(&soc.gpu, slot, va), Ok(0x5eed));
    assert_eq!(uat.bind(vm), Err(ENOENT), "a retired VM takes no work");
    // Still running: another VM's creation leaves it.
    let other = uat.create_vm(false).unwrap();
    assert!(uat.vm_table(vm).is_ok());
    // The firmware moves on: the next creation destroys it, slot, tables and page.
    soc.fw.run_context(0xffff_ffff);
    let third = uat.create_vm(false).unwrap();
    assert_eq!(uat.vm_table(vm).err(), Some(ENOENT));
    assert_eq!(uat.slot_of(vm), None);
    // Its root, two tables and the page went; the two new VMs have a root each. (The page may
    // be the new root: the allocator hands out the last page freed first.)
    assert_eq!(sim::page_stats().live, live - 4 + 2);
    assert!(!sim::is_allocated(pa) || uat.vm_table(third).unwrap().ttb() == pa);
    assert_eq!(read_u64(soc.ttbs.phys + 16 * slot as u64), 0);
    assert_eq!(uat.retired_vms(), 0);
    // Retired with work still bound: the release of that work destroys it.
    let busy = uat.create_vm(false).unwrap();
    uat.bind(busy).unwrap();
    assert_eq!(uat.retire_vm(busy), Ok(()));
    assert!(uat.vm_table(busy).is_ok());
    uat.release(busy).unwrap();
    assert_eq!(uat.vm_table(busy).err(), Some(ENOENT));
    assert_eq!(uat.retired_vms(), 0);
    // Destroyed directly once the firmware lets it go: no longer counted as retired.
    let cur = uat.create_vm(false).unwrap();
    let slot = uat.bind(cur).unwrap();
    uat.release(cur).unwrap();
    soc.fw.run_context(slot as u32);
    assert_eq!(uat.retire_vm(cur), Ok(()));
    assert_eq!(uat.retired_vms(), 1);
    soc.fw.run_context(0xffff_ffff);
    uat.destroy_vm(cur).unwrap();
    assert_eq!(uat.retired_vms(), 0);
    // A table made for another configuration is refused.
    let mut cfg = uat.user_config();
    cfg.user = false;
    let pt = asahi::pgtable::PageTable::new(cfg).unwrap();
    assert_eq!(uat.create_vm_with(pt, false), Err(EINVAL));
    // So is one that maps anything (its mappings would bypass the UAT's bookkeeping); an empty
    // one with preallocated tables is taken.
    let mut pt = asahi::pgtable::PageTable::new(uat.user_config()).unwrap();
    let page = kernel::page::Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
    pt.map(va, page.phys(), PG, Prot::GPU_SHARED_RO).unwrap();
    assert_eq!(uat.create_vm_with(pt, false), Err(EINVAL));
    let mut pt = asahi::pgtable::PageTable::new(uat.user_config()).unwrap();
    pt.prealloc(va, PG).unwrap();
    let vm = uat.create_vm_with(pt, false).unwrap();
    uat.destroy_vm(vm).unwrap();
    drop(page);
    uat.destroy_vm(other).unwrap();
    uat.destroy_vm(third).unwrap();
    assert_eq!(sim::page_stats().live, before);
    // Without the firmware in the way, retiring is destroying.
    let vm = uat.create_vm(false).unwrap();
    let page = kernel::page::Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
    let pa = page.phys();
    uat.vm_map_owned(vm, va, page, Prot::GPU_SHARED_RO).unwrap();
    assert_eq!(uat.retire_vm(vm), Ok(()));
    assert_eq!(uat.vm_table(vm).err(), Some(ENOENT));
    assert!(!sim::is_allocated(pa));
    assert_eq!(sim::page_stats().live, before);
    drop(uat);
    drop(soc);
    leak.assert_clean();
}

/// The UAT's teardown while the firmware still runs a user context, or has work in one: those
/// VMs' tables stay allocated and named by their slots (clearing a TTBAT entry does not unload a
/// context), and so do the kernel VM's upper-half tables that a kernel-visible one of them
/// reaches; the idle VM's tables go, and nothing else leaks.
#[test]
fn a_uat_dropped_while_the_firmware_runs_a_vm_leaves_that_vm_to_it() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(4, 610);
    let kva = kernel_va(soc.geometry).start + (3 << 25);
    uat.kernel_map(kva, data.phys(3), PG, Prot::GPU_RO_FW_PRIV_RW)
        .unwrap();
    let upper = uat.kernel_tables().1.table_pages();
    let mut vms = Vec::new();
    for i in 0..3 {
        // The running one sees the kernel's upper half.
        let vm = uat.create_vm(i == 1).unwrap();
        map_pages(&mut uat, vm, 0x4000, &[data.phys(i)], Prot::GPU_SHARED_RW).unwrap();
        let slot = uat.bind(vm).unwrap();
        let ttb = uat.vm_table(vm).unwrap().ttb();
        vms.push((vm, slot, ttb));
    }
    // The first keeps work in flight (not released); the second is the running context; the
    // third is idle.
    let (_, working, working_ttb) = vms[0];
    let (running_vm, running, running_ttb) = vms[1];
    let (idle_vm, idle, idle_ttb) = vms[2];
    uat.release(running_vm).unwrap();
    uat.release(idle_vm).unwrap();
    soc.fw.run_context(running as u32);
    let tables = |vm| uat.vm_table(vm).unwrap().table_pages() + 1;
    let kept = tables(vms[0].0) + tables(running_vm) + upper;
    drop(uat);
    let log = kernel::print::take_log();
    for (slot, ttb, tag) in [(working, working_ttb, 610), (running, running_ttb, 611)] {
        assert_eq!(
            read_u64(soc.ttbs.phys + 16 * slot as u64) & ((1 << 48) - 2),
            ttb
        );
        assert!(sim::is_allocated(ttb));
        assert_eq!(gpu_tag(&soc.gpu, slot, 0x4000), Ok(tag));
    }
    // The running context still reaches the kernel's upper half through its `ttb1`.
    assert_eq!(gpu_tag(&soc.gpu, running, kva), Ok(613));
    assert_eq!(read_u64(soc.ttbs.phys + 16 * idle as u64), 0);
    assert!(!sim::is_allocated(idle_ttb));
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("still running on the GPU"))
            .count(),
        2,
        "{log:?}"
    );
    drop(data);
    // Exactly the two VMs' tables and the kernel's upper-half tables are left.
    assert_eq!(leak.live_since(), kept as i64);
    soc.fw.run_context(0xffff_ffff);
    drop(soc);
}

/// A firmware that dies holding the handoff lock after the boot: every operation that needs the
/// lock answers `EIO` (the first after the lock's timeout, the others at once) instead of
/// spinning for ever, and tearing the UAT down does not hang either: it leaks the tables the
/// TTBAT still names rather than free them.
#[test]
fn a_firmware_dead_with_the_lock_fails_operations_instead_of_hanging() {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(1, 600);
    let vm = uat.create_vm(false).unwrap();
    map_pages(&mut uat, vm, 0x4000, &[data.phys(0)], Prot::GPU_SHARED_RW).unwrap();
    let slot = uat.bind(vm).unwrap();
    uat.release(vm).unwrap();
    // lock_fw (0x011) raised, for good.
    sim::write_phys(soc.handoff.phys + 0x11, &[1]).unwrap();
    let t = std::time::Instant::now();
    let other = uat.create_vm(false).unwrap();
    assert_eq!(uat.bind(other), Err(EIO));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let t = std::time::Instant::now();
    assert_eq!(uat.bind(other), Err(EIO));
    assert_eq!(uat.destroy_vm(vm), Err(EIO), "its slot needs the lock");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(900),
        "no second wait"
    );
    // The VM is untouched by the failed destroy.
    assert_eq!(uat.slot_of(vm), Some(slot));
    assert_eq!(gpu_tag(&soc.gpu, slot, 0x4000), Ok(600));
    // A VM without a slot still goes.
    uat.destroy_vm(other).unwrap();
    let ttb = uat.vm_table(vm).unwrap().ttb();
    let t = std::time::Instant::now();
    drop(uat);
    assert!(t.elapsed() < std::time::Duration::from_millis(900));
    // The slot still names the VM's table, which is still allocated and still translates.
    assert_eq!(
        read_u64(soc.ttbs.phys + 16 * slot as u64) & ((1 << 48) - 2),
        ttb
    );
    assert!(sim::is_allocated(ttb));
    assert_eq!(gpu_tag(&soc.gpu, slot, 0x4000), Ok(600));
    assert!(leak.live_since() > 0, "the tables are leaked");
    drop(data);
    drop(soc);
}
