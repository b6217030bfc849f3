// SPDX-License-Identifier: GPL-2.0

//! Slot pressure: more live VMs than the 63 user slots, submissions (bind) and completions
//! (release) interleaved at random, VMs destroyed and created. Checked after every step against
//! a model of the slot policy and through the simulated GPU: every VM maps its own tagged page at
//! the same VA, so a context that reached a previous owner's stale TLB entry, or a TTBAT entry
//! pointing at the wrong table, reads the wrong tag. VMs also move their page to another one,
//! bound or evicted: the unmap empties and frees its tables (after the flush, or without one when
//! no slot holds the VM), and a context must then reach the new page, never the old one.
//!
//! The firmware also switches to the context of a VM (or to none) at random, as it runs work:
//! its current context is never evicted nor destroyed (`EBUSY`), and every third VM maps its
//! page firmware-cached, so that moving it asks the firmware to flush its cache through the
//! VM's slot exactly when the firmware runs that slot (the simulated firmware checks each
//! request: the range mapped in that context, already uncached), and never otherwise.

use agx_soc::firmware::FwKnobs;
use agx_soc::Soc;
use asahi::pte::Prot;
use asahi::tlbi::Tlbi;
use kernel::error::code::*;
use kernel::sim;
use proptest::prelude::*;
use uat_tests::config::config_scaled;
use uat_tests::leak::LeakCheck;
use uat_tests::pages::{gpu_tag, TaggedPages};

const VMS: usize = 80;
const SLOTS: usize = 64;
const VA: u64 = 0x4000;

#[derive(Clone, Debug)]
enum Op {
    Bind(usize),
    Release(usize),
    /// Destroy the VM (if it has no work) and create a fresh one in its place.
    Recreate(usize),
    /// Unmap the VM's page (which frees its tables) and map its other page in its place.
    Remap(usize),
    /// The firmware switches to the VM's context if it holds a slot, otherwise to none.
    Run(usize),
}

/// The protection VM `v` maps its page with: firmware-cached for every third VM.
fn prot(v: usize) -> Prot {
    if v.is_multiple_of(3) {
        Prot::GPUFW_PRIV_RW
    } else {
        Prot::GPU_SHARED_RW
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..VMS).prop_map(Op::Bind),
        5 => (0..VMS).prop_map(Op::Release),
        1 => (0..VMS).prop_map(Op::Recreate),
        2 => (0..VMS).prop_map(Op::Remap),
        1 => (0..VMS).prop_map(Op::Run),
    ]
}

#[derive(Clone, Copy, Default)]
struct SlotModel {
    owner: Option<usize>,
    users: u32,
    last_used: u64,
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let leak = LeakCheck::start();
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    // VM v maps page v or page v + VMS (`page[v]`).
    let data = TaggedPages::new(2 * VMS, 7000);
    let mut page: Vec<usize> = (0..VMS).collect();
    let mut ids: Vec<u64> = Vec::new();
    for v in 0..VMS {
        let id = uat.create_vm(false).unwrap();
        uat.vm_map(id, VA, data.phys(v), 1 << 14, prot(v)).unwrap();
        ids.push(id);
    }
    let mut slots = [SlotModel::default(); SLOTS];
    let mut hint: Vec<Option<usize>> = vec![None; VMS];
    // The slot the firmware runs.
    let mut current: Option<usize> = None;
    let mut clock = 0u64;
    for op in ops {
        clock += 1;
        match *op {
            Op::Bind(v) => {
                let held = (1..SLOTS).find(|&s| slots[s].owner == Some(v));
                let got = uat.bind(ids[v]);
                let free: Vec<usize> = (1..SLOTS).filter(|&s| slots[s].owner.is_none()).collect();
                // The firmware's current context is never taken away.
                let idle_lru = (1..SLOTS)
                    .filter(|&s| slots[s].owner.is_some() && slots[s].users == 0)
                    .filter(|&s| Some(s) != current)
                    .min_by_key(|&s| slots[s].last_used);
                let slot = match (held, got) {
                    (Some(h), got) => {
                        prop_assert_eq!(got, Ok(h), "a VM keeps the slot it holds");
                        h
                    }
                    (None, Err(e)) => {
                        prop_assert_eq!(e, EBUSY);
                        prop_assert!(
                            free.is_empty() && idle_lru.is_none(),
                            "EBUSY with a slot available"
                        );
                        continue;
                    }
                    (None, Ok(s)) => {
                        if !free.is_empty() {
                            prop_assert!(free.contains(&s), "evicted while slots were free");
                            if let Some(h) = hint[v].filter(|h| free.contains(h)) {
                                prop_assert_eq!(s, h, "the previous slot is preferred");
                            }
                        } else {
                            prop_assert_eq!(Some(s), idle_lru, "not the least recently used");
                        }
                        if let Some(prev) = slots[s].owner {
                            prop_assert_eq!(uat.slot_of(ids[prev]), None);
                        }
                        slots[s] = SlotModel {
                            owner: Some(v),
                            users: 0,
                            last_used: clock,
                        };
                        s
                    }
                };
                slots[slot].users += 1;
                slots[slot].last_used = clock;
                hint[v] = Some(slot);
            }
            Op::Release(v) => {
                let held = (1..SLOTS).find(|&s| slots[s].owner == Some(v) && slots[s].users > 0);
                let got = uat.release(ids[v]);
                match held {
                    Some(s) => {
                        prop_assert_eq!(got, Ok(()));
                        slots[s].users -= 1;
                        slots[s].last_used = clock;
                    }
                    None => prop_assert_eq!(got, Err(EINVAL)),
                }
            }
            Op::Recreate(v) => {
                let held = (1..SLOTS).find(|&s| slots[s].owner == Some(v));
                let got = uat.destroy_vm(ids[v]);
                if held.is_some_and(|s| slots[s].users > 0 || Some(s) == current) {
                    prop_assert_eq!(got, Err(EBUSY));
                    continue;
                }
                prop_assert_eq!(got, Ok(()));
                if let Some(s) = held {
                    slots[s] = SlotModel {
                        owner: None,
                        users: 0,
                        last_used: clock,
                    };
                    prop_assert_eq!(sim::read_phys_u64(soc.ttbs.phys + 16 * s as u64), Some(0));
                }
                let id = uat.create_vm(false).unwrap();
                uat.vm_map(id, VA, data.phys(page[v]), 1 << 14, prot(v))
                    .unwrap();
                ids[v] = id;
                hint[v] = None;
            }
            Op::Remap(v) => {
                let tables = uat.vm_table(ids[v]).unwrap().table_pages();
                let flushes = uat.stats().fw_flushes;
                prop_assert_eq!(uat.vm_unmap(ids[v], VA, 1 << 14), Ok(1));
                let run = current.filter(|&s| slots[s].owner == Some(v));
                let flushed = run.is_some() && prot(v) == Prot::GPUFW_PRIV_RW;
                prop_assert_eq!(
                    uat.stats().fw_flushes - flushes,
                    u64::from(flushed),
                    "firmware flushes of VM {} (run in {:?})",
                    v,
                    run
                );
                if flushed {
                    // Through the slot the firmware runs the VM in, for the page that went.
                    let last = soc.fw.log().flushes.last().copied();
                    prop_assert_eq!(
                        last.map(|f| (f.slot as usize, f.addr, f.size)),
                        run.map(|s| (s, VA, 1 << 14))
                    );
                }
                prop_assert_eq!(uat.vm_table(ids[v]).unwrap().table_pages(), 0);
                page[v] = (page[v] + VMS) % (2 * VMS);
                uat.vm_map(ids[v], VA, data.phys(page[v]), 1 << 14, prot(v))
                    .unwrap();
                prop_assert_eq!(uat.vm_table(ids[v]).unwrap().table_pages(), tables);
            }
            Op::Run(v) => {
                current = (1..SLOTS).find(|&s| slots[s].owner == Some(v));
                soc.fw.run_context(current.map_or(0, |s| s as u32));
            }
        }
        // Every held slot: the right TTBAT entry, and the GPU reaches the owner's page only.
        for (s, model) in slots.iter().enumerate().skip(1) {
            let ttb0 = sim::read_phys_u64(soc.ttbs.phys + 16 * s as u64).unwrap();
            match model.owner {
                Some(v) => {
                    prop_assert_eq!(uat.slot_of(ids[v]), Some(s));
                    prop_assert_eq!(uat.slot_users(s), model.users);
                    let table = uat.vm_table(ids[v]).unwrap().ttb();
                    prop_assert_eq!(ttb0, table | 1 | ((s as u64) << 48));
                    prop_assert_eq!(
                        gpu_tag(&soc.gpu, s, VA),
                        Ok(data.tag(page[v])),
                        "slot {}",
                        s
                    );
                }
                None => prop_assert_eq!(ttb0, 0),
            }
        }
    }
    // The work completes and the firmware runs no context before the teardown, which leaves a
    // VM with work, or the firmware's current one, to the firmware.
    soc.fw.run_context(0);
    for model in &slots {
        if let Some(v) = model.owner {
            for _ in 0..model.users {
                prop_assert_eq!(uat.release(ids[v]), Ok(()));
            }
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
    fn slot_pressure(ops in proptest::collection::vec(op(), 50..400)) {
        run(&ops)?;
    }
}

/// The check can fail: with the GPU ignoring TLB maintenance, a slot taken from an idle VM still
/// serves the old owner's cached translation.
#[test]
fn eviction_without_invalidation_is_detected() {
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(64, 9000);
    let ids: Vec<u64> = (0..64)
        .map(|v| {
            let id = uat.create_vm(false).unwrap();
            uat.vm_map(id, VA, data.phys(v), 1 << 14, Prot::GPU_SHARED_RW)
                .unwrap();
            id
        })
        .collect();
    for &id in &ids[..63] {
        let s = uat.bind(id).unwrap();
        gpu_tag(&soc.gpu, s, VA).unwrap();
    }
    uat.release(ids[0]).unwrap();
    soc.gpu.set_ignore_tlbi(true);
    let s = uat.bind(ids[63]).unwrap();
    assert_eq!(
        gpu_tag(&soc.gpu, s, VA),
        Ok(data.tag(0)),
        "stale entry expected"
    );
    soc.gpu.set_ignore_tlbi(false);
}

/// The check can fail for a moved page too: with the GPU ignoring TLB maintenance, a context
/// still reaches the page its VM unmapped (and whose tables went).
#[test]
fn remap_without_invalidation_is_detected() {
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(2, 9500);
    let id = uat.create_vm(false).unwrap();
    uat.vm_map(id, VA, data.phys(0), 1 << 14, Prot::GPU_SHARED_RW)
        .unwrap();
    let s = uat.bind(id).unwrap();
    assert_eq!(gpu_tag(&soc.gpu, s, VA), Ok(data.tag(0)));
    soc.gpu.set_ignore_tlbi(true);
    uat.vm_unmap(id, VA, 1 << 14).unwrap();
    uat.vm_map(id, VA, data.phys(1), 1 << 14, Prot::GPU_SHARED_RW)
        .unwrap();
    assert_eq!(
        gpu_tag(&soc.gpu, s, VA),
        Ok(data.tag(0)),
        "stale entry expected"
    );
    soc.gpu.set_ignore_tlbi(false);
    uat.release(id).unwrap();
}

/// The check of break-before-make: a page invalidation that drops a cached translation whose
/// descriptor now maps another page counts a violation (the GPU could have used either); one
/// that finds the descriptor cleared, or still the same, does not.
#[test]
fn a_replaced_translation_is_a_break_before_make_violation() {
    let soc = Soc::new(FwKnobs::default());
    let mut uat = soc.boot().unwrap();
    let data = TaggedPages::new(2, 9600);
    let id = uat.create_vm(false).unwrap();
    uat.vm_map(id, VA, data.phys(0), 1 << 14, Prot::GPU_SHARED_RW)
        .unwrap();
    let s = uat.bind(id).unwrap();
    let page_op = Tlbi::Va((s as u64) << 48 | VA >> 12);
    assert_eq!(gpu_tag(&soc.gpu, s, VA), Ok(data.tag(0)));
    // Same descriptor: nothing to report.
    soc.gpu.tlbi(page_op);
    assert_eq!(soc.gpu.take_bbm_violations(), 0);
    // Replaced with no invalidation in between (the broken TLB ignores the unmap's).
    assert_eq!(gpu_tag(&soc.gpu, s, VA), Ok(data.tag(0)));
    soc.gpu.set_ignore_tlbi(true);
    uat.vm_unmap(id, VA, 1 << 14).unwrap();
    uat.vm_map(id, VA, data.phys(1), 1 << 14, Prot::GPU_SHARED_RW)
        .unwrap();
    soc.gpu.set_ignore_tlbi(false);
    soc.gpu.tlbi(page_op);
    assert_eq!(soc.gpu.take_bbm_violations(), 1);
    assert_eq!(gpu_tag(&soc.gpu, s, VA), Ok(data.tag(1)));
    // Cleared, then invalidated: break-before-make done right.
    uat.vm_unmap(id, VA, 1 << 14).unwrap();
    assert_eq!(soc.gpu.take_bbm_violations(), 0);
    uat.release(id).unwrap();
}
