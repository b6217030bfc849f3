// SPDX-License-Identifier: GPL-2.0

//! Built-in self-tests of the UAT's contexts: TTBAT slots, the handoff region and TLB
//! invalidation, on the real memory mappings (`memremap`) and, on arm64, the real TLB
//! maintenance instructions.
//!
//! There is no GPU firmware under the self-tests: [`StandInFw`] plays its part synchronously (its
//! magic is written before the handshake, flush requests are answered when the message is sent).
//! The host suite runs these cases too, and runs the same driver code against a simulated
//! firmware thread and GPU.

use crate::fw_standin::StandInFw;
use crate::geometry::{VaRange, UAT_PGSZ};
use crate::handoff::{flush_state, FlushMsg, HANDOFF_SIZE, KERNEL_FLUSH_SLOT, MAGIC};
use crate::pte::{Oas, Prot};
use crate::selftest::{check, ok, Case, CaseResult, Env, CARVEOUT_SIZE};
use crate::slots::{Choice, SlotTable};
use crate::tlbi::{range_ops, Broadcast, Tlbi, TlbiIssue};
use crate::uat::{kernel_va, RegionDesc, Uat, UatConfig};
use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::io::mem::{MemRemap, MemRemapType};
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;

const PG: u64 = UAT_PGSZ;

/// Counts the TLB maintenance the UAT asks for; on arm64 it also executes it.
#[derive(Default)]
pub struct CountingTlbi {
    /// Instructions issued, by kind: page, range, ASID, all.
    pub ops: [Cell<usize>; 4],
    /// The last instruction.
    pub last: Cell<Option<Tlbi>>,
}

impl TlbiIssue for &CountingTlbi {
    fn prepare(&self) {
        #[cfg(CONFIG_ARM64)]
        if let Some(cpu) = crate::tlbi::Arm64::new() {
            cpu.prepare();
        }
    }

    fn issue(&self, op: Tlbi) {
        let kind = match op {
            Tlbi::Va(_) => 0,
            Tlbi::Range(_) => 1,
            Tlbi::Asid(_) => 2,
            Tlbi::All => 3,
        };
        self.ops[kind].set(self.ops[kind].get() + 1);
        self.last.set(Some(op));
        #[cfg(CONFIG_ARM64)]
        if let Some(cpu) = crate::tlbi::Arm64::new() {
            cpu.issue(op);
        }
    }

    fn sync(&self) {
        #[cfg(CONFIG_ARM64)]
        if let Some(cpu) = crate::tlbi::Arm64::new() {
            cpu.sync();
        }
    }
}

/// A stand-in SoC for one case: `ttbs` and `handoff` in the carve-out, `pagetables` a page of
/// RAM (it must be RAM: the driver borrows it by physical address), the stand-in firmware and a
/// counting TLB.
pub(crate) struct StandIn {
    pub(crate) pagetables: Page,
    pub(crate) cfg: UatConfig,
    pub(crate) fw: StandInFw,
    pub(crate) tlbi: CountingTlbi,
}

/// The UAT as the self-tests run it.
pub(crate) type TestUat<'a> = Uat<Broadcast<&'a CountingTlbi>, &'a StandInFw>;

impl StandIn {
    /// A stand-in SoC whose firmware is up if `fw_up`.
    pub(crate) fn new(env: &Env, fw_up: bool) -> Result<StandIn> {
        let pagetables = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let cfg = UatConfig {
            geometry: crate::geometry::Geometry::G13,
            oas: Oas::BITS_40,
            ttbs: RegionDesc {
                phys: env.carveout,
                size: PG,
            },
            pagetables: RegionDesc {
                phys: pagetables.phys(),
                size: PG,
            },
            handoff: RegionDesc {
                phys: env.carveout + PG,
                size: PG,
            },
        };
        // SAFETY: The handoff region is a page of the KUnit carve-out, which only this stand-in
        // and the UAT under test use.
        let fw = unsafe { StandInFw::new(cfg.handoff.phys, fw_up) }?;
        Ok(StandIn {
            pagetables,
            cfg,
            fw,
            tlbi: CountingTlbi::default(),
        })
    }

    /// Brings a UAT up on the stand-in with `cfg` (its own, or a variation of it).
    pub(crate) fn uat_with(&self, cfg: UatConfig) -> Result<TestUat<'_>> {
        // SAFETY: The carve-out and the pagetables page belong to this case alone, and the
        // returned UAT borrows `self`, so the page outlives it. The stand-in firmware walks no
        // page table.
        unsafe { Uat::new(cfg, Broadcast(&self.tlbi), &self.fw) }
    }

    /// Brings a UAT up on the stand-in.
    pub(crate) fn uat(&self) -> Result<TestUat<'_>> {
        self.uat_with(self.cfg)
    }
}

fn ttbat_word(ttbat: &MemRemap, slot: usize, half: usize) -> u64 {
    // SAFETY: Within the mapped TTBAT (64 entries of 16 bytes), 8-byte aligned.
    unsafe { &*(ttbat.as_ptr().add(16 * slot + 8 * half) as *const AtomicU64) }
        .load(Ordering::Relaxed)
}

fn uat_contexts(env: &Env) -> CaseResult {
    check!(CARVEOUT_SIZE >= 2 * PG);
    let s = ok!(StandIn::new(env, true));
    let (fw, tlbi) = (&s.fw, &s.tlbi);
    // SAFETY: The stand-in's `ttbs` region is a page of its carve-out, memory of ours.
    let ttbat = ok!(unsafe { MemRemap::new(s.cfg.ttbs.phys, PAGE_SIZE, MemRemapType::WriteBack) });
    let mut uat = ok!(s.uat());
    check!(fw.cpu_magic() == MAGIC);
    check!(tlbi.ops[3].get() == 1);
    // Slot 0: the kernel VM.
    let ttb0 = ttbat_word(&ttbat, 0, 0);
    check!(ttb0 & 1 == 1 && ttb0 >> 48 == 0);
    check!(ttbat_word(&ttbat, 0, 1) == s.pagetables.phys() | 1);
    // A user VM bound for work: slot 1, ASID 1, invalidated.
    let vm = ok!(uat.create_vm(false));
    ok!(uat.vm_map(vm, 0x10_0000, 0x8_0000_0000, 4 * PG, Prot::GPU_SHARED_RW));
    check!(ok!(uat.bind(vm)) == 1);
    let table = ok!(uat.vm_table(vm)).ttb();
    check!(ttbat_word(&ttbat, 1, 0) == table | 1 | (1 << 48));
    check!(ttbat_word(&ttbat, 1, 1) == 0);
    check!(tlbi.last.get() == Some(Tlbi::asid(1)));
    // Unmapping in a bound VM invalidates the range in its ASID.
    check!(ok!(uat.vm_unmap(vm, 0x10_0000, 2 * PG)) == 2);
    check!(tlbi.last.get() == Some(Tlbi::range(1, 0x10_0000, 0, 0)));
    // Rebinding keeps the slot; destroying needs the work released, then clears the entry.
    check!(ok!(uat.bind(vm)) == 1);
    check!(uat.destroy_vm(vm) == Err(EBUSY));
    ok!(uat.release(vm));
    ok!(uat.release(vm));
    check!(uat.release(vm) == Err(EINVAL));
    ok!(uat.destroy_vm(vm));
    check!(ttbat_word(&ttbat, 1, 0) == 0);
    check!(tlbi.last.get() == Some(Tlbi::asid(1)));
    check!(uat.bind(vm) == Err(ENOENT));
    // A cached firmware mapping goes through the flush protocol before it is unmapped.
    let kva = kernel_va(s.cfg.geometry).start;
    ok!(uat.kernel_map(kva, 0x8_0000_0000, 3 * PG, Prot::FW_PRIV_RW));
    check!(ok!(uat.kernel_unmap(kva, 3 * PG)) == 3);
    check!(
        fw.last.get()
            == Some(FlushMsg {
                addr: kva,
                slot: KERNEL_FLUSH_SLOT as u32,
                page_count: 3
            })
    );
    check!(fw.flush_state(KERNEL_FLUSH_SLOT) == flush_state::IDLE);
    drop(uat);
    check!(ttbat_word(&ttbat, 0, 0) == 0);
    Ok(())
}

fn uat_refuses_bad_regions(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, true));
    let try_cfg = |cfg: UatConfig| s.uat_with(cfg).err();
    let mut cfg = s.cfg;
    cfg.ttbs.phys += 0x400;
    check!(try_cfg(cfg) == Some(EINVAL));
    let mut cfg = s.cfg;
    cfg.handoff.size = HANDOFF_SIZE as u64 - 8;
    check!(try_cfg(cfg) == Some(EINVAL));
    let mut cfg = s.cfg;
    cfg.pagetables.phys += 0x400;
    check!(try_cfg(cfg) == Some(EINVAL));
    check!(s.tlbi.ops.iter().all(|c| c.get() == 0));
    Ok(())
}

fn uat_firmware_absent(env: &Env) -> CaseResult {
    let s = ok!(StandIn::new(env, false));
    check!(s.uat().err() == Some(EIO));
    Ok(())
}

fn tlbi_ranges(_: &Env) -> CaseResult {
    // 100 GiB from 1 GiB: several range instructions, each starting where the last ended.
    let start = 1u64 << 30;
    let pages = (100u64 << 30) / PG;
    let mut next = start / PG;
    let mut covered = 0;
    for op in range_ops(
        3,
        VaRange {
            start,
            last: start + pages * PG - 1,
        },
    ) {
        let (first, n) = match op {
            Tlbi::Range(x) => (x & ((1 << 37) - 1), Tlbi::range_pages(x)),
            Tlbi::Va(x) => ((x & ((1 << 44) - 1)) >> 2, 1),
            _ => return Err("unexpected instruction"),
        };
        check!(first == next);
        next += n;
        covered += n;
    }
    check!(covered == pages);
    Ok(())
}

fn slot_policy(_: &Env) -> CaseResult {
    let mut t = SlotTable::new();
    let none = |_: usize| false;
    // Free slots first, in order of least recent use.
    check!(
        ok!(t.choose(1, None, none))
            == Choice::Take {
                slot: 1,
                evicted: None
            }
    );
    t.get(1, 1);
    check!(ok!(t.choose(1, Some(1), none)) == Choice::Held(1));
    for vm in 2..=63 {
        let Choice::Take {
            slot,
            evicted: None,
        } = ok!(t.choose(vm, None, none))
        else {
            return Err("expected a free slot");
        };
        t.get(slot, vm);
    }
    // Full: EBUSY until a VM goes idle; then that one is taken, unless it is current.
    check!(t.choose(64, None, none) == Err(EBUSY));
    ok!(t.put(5, 5));
    ok!(t.put(9, 9));
    check!(
        ok!(t.choose(64, None, none))
            == Choice::Take {
                slot: 5,
                evicted: Some(5)
            }
    );
    check!(
        ok!(t.choose(64, None, |s| s == 5))
            == Choice::Take {
                slot: 9,
                evicted: Some(9)
            }
    );
    check!(t.choose(64, None, |s| s == 5 || s == 9) == Err(EBUSY));
    // Freed slots come back; a VM prefers its previous one.
    ok!(t.put(7, 7));
    ok!(t.free(7, 7));
    check!(t.free(9, 9) == Ok(()));
    check!(
        ok!(t.choose(7, Some(7), none))
            == Choice::Take {
                slot: 7,
                evicted: None
            }
    );
    check!(t.put(7, 8) == Err(EINVAL));
    check!(t.free(1, 1) == Err(EBUSY));
    Ok(())
}

/// The cases.
pub const CASES: &[Case] = &[
    Case {
        name: "uat_contexts",
        run: uat_contexts,
    },
    Case {
        name: "uat_refuses_bad_regions",
        run: uat_refuses_bad_regions,
    },
    Case {
        name: "uat_firmware_absent",
        run: uat_firmware_absent,
    },
    Case {
        name: "tlbi_ranges",
        run: tlbi_ranges,
    },
    Case {
        name: "slot_policy",
        run: slot_policy,
    },
];
