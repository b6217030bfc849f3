// SPDX-License-Identifier: GPL-2.0

//! The UAT: the GPU MMU as a whole.
//!
//! It owns the TTBAT and the handoff region, the kernel/firmware VM (slot 0, ASID 0) and any
//! number of user VMs, and it is the only code that writes the TTBAT or asks for TLB
//! invalidation, so that the rules tying them together hold in one place:
//!
//! - a user VM is bound to a slot (ASID = slot number) while it has work submitted, and binding
//!   writes the TTBAT under the handoff lock, then invalidates the ASID, so nothing a previous
//!   owner of the slot left in the TLB survives;
//! - unmapping in a VM that holds a slot invalidates the unmapped range for that ASID before
//!   freed tables are released; a VM that holds no slot has nothing cached (see above);
//! - a slot the firmware reports as current is never rebound, and a VM's TTBAT entry is cleared
//!   on destroy only if it still holds it;
//! - a cached mapping the firmware can see is flushed from the firmware's caches (through the
//!   handoff flush protocol) before it is unmapped.
//!
//! The object is not internally locked: the DRM driver serialises calls (one lock around it),
//! the only concurrency inside is the firmware's, handled by the handoff lock.

use crate::geometry::{Geometry, VaRange, UAT_PGBIT, UAT_PGSZ};
use crate::handoff::{FlushMsg, FwChannel, Handoff, KERNEL_FLUSH_SLOT};
use crate::pgtable::{Mapping, PageTable, PhysRange, PtConfig, TableReserve, Translation};
use crate::pte::{Oas, Prot};
use crate::region::Region;
use crate::slots::{Choice, SlotTable, VmId};
use crate::tlb::{Gather, TlbInvalidate};
use crate::ttbat::{ttb_word, Ttbat, KERNEL_SLOT, SLOTS};
use core::ops::DerefMut;
use kernel::io::PhysAddr;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::barrier::{mb, Full};

/// A reserved-memory region as the device tree gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionDesc {
    /// Physical address.
    pub phys: PhysAddr,
    /// Size in bytes.
    pub size: u64,
}

/// What the UAT is built from.
#[derive(Clone, Copy, Debug)]
pub struct UatConfig {
    /// The GPU generation's table geometry.
    pub geometry: Geometry,
    /// The SoC's output address size.
    pub oas: Oas,
    /// The `ttbs` region (the TTBAT).
    pub ttbs: RegionDesc,
    /// The `pagetables` region (the firmware's upper-half top-level table).
    pub pagetables: RegionDesc,
    /// The `handoff` region.
    pub handoff: RegionDesc,
}

/// The part of the upper half the driver manages in the kernel VM: top-level entry 2 of TTB1
/// (`0xffff_ffa0_0000_0000 ..= 0xffff_ffaf_ffff_ffff` on G13/G14). The firmware owns the rest.
pub fn kernel_va(g: Geometry) -> VaRange {
    let span = 1u64 << g.shift(crate::geometry::TOP_LEVEL);
    let start = g.upper_half().start + 2 * span;
    VaRange {
        start,
        last: start + (span - 1),
    }
}

/// The user VA window (GET_PARAMS' `vm_start .. vm_end`): the lower half from its second page.
/// Each VM reserves a part of it for the kernel (its kernel range, see [`crate::gpuvm`]).
pub fn user_va(g: Geometry) -> VaRange {
    VaRange {
        start: UAT_PGSZ,
        last: g.lower_half().last,
    }
}

/// The kernel/firmware VM.
struct KernelVm {
    /// The lower half, owned.
    lower: PageTable,
    /// The driver's part of the upper half, in the bootloader's table.
    upper: PageTable,
}

/// A user VM.
struct UserVm {
    id: VmId,
    pt: PageTable,
    /// The slot it held last (it may have been taken since).
    hint: Option<usize>,
    /// Whether its context also sees the kernel VM's upper half.
    kernel_visible: bool,
    /// Whether it ever had a mapping the firmware caches (then unmaps look for them).
    fw_cached: bool,
    /// A page it maps and owns ([`Uat::vm_map_owned`]): freed with its tables, after the
    /// invalidation, never while the GPU may still reach it.
    owned: Option<Page>,
    /// Whether its owner is gone and it only waits to be destroyed ([`Uat::retire_vm`]).
    retired: bool,
}

/// Counters for the summary of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UatStats {
    /// Binds that found the VM still in its slot.
    pub binds_held: u64,
    /// Binds that wrote the TTBAT.
    pub binds_written: u64,
    /// Binds that took a slot from an idle VM.
    pub evictions: u64,
    /// Firmware cache flushes requested.
    pub fw_flushes: u64,
}

/// The GPU MMU.
pub struct Uat<T: TlbInvalidate, F: FwChannel> {
    cfg: UatConfig,
    handoff: Handoff,
    ttbat: Ttbat,
    kernel: KernelVm,
    /// The user VMs, sorted by ID: IDs only grow, so a new VM goes at the end. Found by binary
    /// search: an operation on one VM costs no time per VM of the device's other clients.
    /// kvmalloc'd: it grows with every client's VMs.
    vms: KVVec<UserVm>,
    slots: SlotTable,
    next_id: VmId,
    /// The retired VMs among `vms`.
    retired: usize,
    stats: UatStats,
    tlb: T,
    fw: F,
}

impl<T: TlbInvalidate, F: FwChannel> Uat<T, F> {
    /// Brings the UAT up: maps and checks the regions, creates the kernel VM, performs the
    /// firmware handshake (`EIO` when the firmware does not answer), binds slot 0, clears
    /// every user slot, then invalidates the whole TLB.
    ///
    /// # Safety
    ///
    /// The three regions must be the reserved-memory regions the device tree names `ttbs`,
    /// `pagetables` and `handoff`, shared with the GPU firmware and used by nothing else in the
    /// kernel, and `pagetables` must hold the firmware's upper-half top-level table, which must
    /// outlive the returned object. Once the object is dropped, the GPU must not walk the kernel
    /// context's (slot 0) tables any more: the firmware is stopped first, or walks none (a
    /// stand-in). The drop frees them, unless a user VM the firmware still runs or has work in
    /// can reach them (see `Drop`).
    pub unsafe fn new(cfg: UatConfig, tlb: T, fw: F) -> Result<Self> {
        // SAFETY: The caller gives the `ttbs` region, which nothing but the firmware and this
        // object uses.
        let ttbat = unsafe { Ttbat::new(cfg.ttbs.phys, cfg.ttbs.size) }?;
        // SAFETY: The same, for the `handoff` region.
        let handoff = unsafe { Handoff::new(cfg.handoff.phys, cfg.handoff.size) }?;
        // SAFETY: By this function's contract, the `pagetables` region is the firmware's table,
        // memory for us to map.
        let pagetables = unsafe {
            Region::new(
                "pagetables",
                cfg.pagetables.phys,
                cfg.pagetables.size,
                PAGE_SIZE,
                false,
            )
        }?;
        let g = cfg.geometry;
        let lower = PageTable::new(PtConfig {
            geometry: g,
            range: g.lower_half(),
            oas: cfg.oas,
            user: false,
            global: false,
        })?;
        let upper_cfg = PtConfig {
            geometry: g,
            range: kernel_va(g),
            oas: cfg.oas,
            user: false,
            global: true,
        };
        // SAFETY: By this function's contract the region holds the firmware's top-level table and
        // outlives us; the firmware leaves entry 2 (`kernel_va`) to the driver.
        let upper = unsafe { PageTable::new_borrowed(pagetables, upper_cfg) }
            .inspect_err(|_| pr_err!("the pagetables region is not a usable table\n"))?;
        handoff.init()?;
        // The kernel's context in its slot, every other slot clear, before anything can walk.
        // Should the firmware not let go of the lock, nothing was published: the tables go.
        {
            let guard = handoff.lock()?;
            ttbat.set(
                &guard,
                KERNEL_SLOT,
                ttb_word(lower.ttb(), 0),
                ttb_word(cfg.pagetables.phys, 0),
            );
            for slot in KERNEL_SLOT + 1..SLOTS {
                ttbat.set(&guard, slot, 0, 0);
            }
        }
        let uat = Uat {
            cfg,
            handoff,
            ttbat,
            kernel: KernelVm { lower, upper },
            vms: KVVec::new(),
            slots: SlotTable::new(),
            next_id: 1,
            retired: 0,
            stats: UatStats::default(),
            tlb,
            fw,
        };
        uat.tlb.invalidate_all();
        Ok(uat)
    }

    /// The configuration.
    pub fn config(&self) -> &UatConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> UatStats {
        self.stats
    }

    // ---- The kernel VM ----

    fn kernel_pt(&mut self, va: u64, size: u64) -> Result<&mut PageTable> {
        let range = VaRange::from_start_size(va, size)?;
        if kernel_va(self.cfg.geometry).contains_range(&range) {
            Ok(&mut self.kernel.upper)
        } else if self.cfg.geometry.lower_half().contains_range(&range) {
            Ok(&mut self.kernel.lower)
        } else {
            Err(ERANGE)
        }
    }

    /// Maps physically contiguous memory into the kernel VM (upper half within [`kernel_va`], or
    /// the lower half).
    pub fn kernel_map(&mut self, va: u64, pa: PhysAddr, size: u64, prot: Prot) -> Result {
        self.map_kernel(va, size, |pt| pt.map(va, pa, size, prot))
    }

    /// Maps a scatter list into the kernel VM (see [`PageTable::map_sg`]).
    pub fn kernel_map_sg(
        &mut self,
        va: u64,
        size: u64,
        sg: &[PhysRange],
        skip: u64,
        prot: Prot,
    ) -> Result {
        self.map_kernel(va, size, |pt| pt.map_sg(va, size, sg, skip, prot))
    }

    /// Runs `map` on the kernel VM's table for `size` bytes at `va`, then invalidates what a
    /// failed map briefly wrote ([`PageTable::gather_undone`]) in ASID 0, which for the upper
    /// half's global leaves is every context.
    fn map_kernel(
        &mut self,
        va: u64,
        size: u64,
        map: impl FnOnce(&mut PageTable) -> Result,
    ) -> Result {
        let pt = self.kernel_pt(va, size)?;
        let r = map(pt);
        let mut undone = Gather::new();
        pt.gather_undone(&mut undone);
        let global = pt.config().global;
        self.kernel_flush(global, &mut undone);
        r
    }

    /// Flushes `gather` of the kernel VM's upper half (`global`) or lower half.
    fn kernel_flush(&self, global: bool, gather: &mut Gather) {
        // The lower half is the kernel context's alone (its leaves are non-global, ASID 0).
        if global {
            gather.flush_shared(&self.tlb, 0);
        } else {
            gather.flush(&self.tlb, 0);
        }
    }

    /// The kernel VM's tables: the lower half's and the driver's part of the upper half's.
    pub fn kernel_tables(&self) -> (&PageTable, &PageTable) {
        (&self.kernel.lower, &self.kernel.upper)
    }

    /// Translates a kernel VM address.
    pub fn kernel_translate(&self, va: u64) -> Result<Translation> {
        if kernel_va(self.cfg.geometry).contains(va) {
            self.kernel.upper.translate(va)
        } else {
            self.kernel.lower.translate(va)
        }
    }

    /// Unmaps from the kernel VM; cached firmware-visible mappings in the range are first
    /// flushed from the firmware's caches. Returns the pages unmapped.
    pub fn kernel_unmap(&mut self, va: u64, size: u64) -> Result<usize> {
        self.fw_flush(None, va, size)?;
        let pt = self.kernel_pt(va, size)?;
        let global = pt.config().global;
        let mut gather = Gather::new();
        let r = pt.unmap(va, size, &mut gather);
        self.kernel_flush(global, &mut gather);
        r
    }

    // ---- User VMs ----

    fn vm(&self, id: VmId) -> Result<&UserVm> {
        find(&self.vms, id)
    }

    fn vm_mut(&mut self, id: VmId) -> Result<&mut UserVm> {
        find_mut(&mut self.vms, id)
    }

    /// Creates an empty user VM. With `kernel_visible`, its context also sees the kernel VM's
    /// upper half (with the kernel's permissions).
    pub fn create_vm(&mut self, kernel_visible: bool) -> Result<VmId> {
        let pt = PageTable::new(self.user_config())?;
        self.create_vm_with(pt, kernel_visible)
    }

    /// The configuration of a user VM's page table, for [`Uat::create_vm_with`].
    pub fn user_config(&self) -> PtConfig {
        let g = self.cfg.geometry;
        PtConfig {
            geometry: g,
            range: g.lower_half(),
            oas: self.cfg.oas,
            user: true,
            global: false,
        }
    }

    /// [`Uat::create_vm`] on a page table the caller made (with [`Uat::user_config`]) and maybe
    /// preallocated, without the lock that guards the UAT: this then allocates nothing but the
    /// VM's entry. `EINVAL` if `pt` has another configuration or maps anything (the VM's
    /// mappings go through the UAT, which tracks those the firmware caches).
    pub fn create_vm_with(&mut self, pt: PageTable, kernel_visible: bool) -> Result<VmId> {
        let mut mapped = false;
        pt.for_each_mapping_all(|_| mapped = true)?;
        if *pt.config() != self.user_config() || mapped {
            return Err(EINVAL);
        }
        self.reap();
        let id = self.next_id;
        let vm = UserVm {
            id,
            pt,
            hint: None,
            kernel_visible,
            fw_cached: false,
            owned: None,
            retired: false,
        };
        // Sorted still: `id` is above every ID given so far.
        self.vms.push(vm, GFP_KERNEL)?;
        self.next_id += 1;
        Ok(id)
    }

    /// Destroys a user VM: clears its TTBAT entry if it still holds its slot, invalidates the
    /// ASID, then frees its tables. `EBUSY` while it has work submitted or the firmware reports
    /// its slot as current; `EIO` if the firmware does not let go of the handoff lock
    /// ([`Handoff::lock`]); `ENOENT` for an unknown VM. On error the VM is as it was.
    pub fn destroy_vm(&mut self, id: VmId) -> Result {
        let vm = self.vm(id)?;
        if let Some(slot) = self.slots.held_by(id, vm.hint) {
            if self.slots.users(slot) != 0 {
                return Err(EBUSY);
            }
            {
                let guard = self.handoff.lock()?;
                if guard.cur_slot() == Some(slot as u32) {
                    return Err(EBUSY);
                }
                self.ttbat
                    .clear_if(&guard, slot, ttb_word(vm.pt.ttb(), slot as u16));
            }
            self.tlb.invalidate_asid(slot as u16);
            self.slots.free(slot, id)?;
        }
        // The tables are freed here, after the invalidation.
        let i = position(&self.vms, id)?;
        let vm = self.vms.remove(i).map_err(|_| ENOENT)?;
        if vm.retired {
            self.retired -= 1;
        }
        drop(vm);
        Ok(())
    }

    /// Destroys user VM `id`, whose owner is going, or, while the firmware still runs it or
    /// cannot be reached ([`Uat::destroy_vm`] answers `EBUSY` or `EIO`), retires it: it keeps
    /// its tables, its slot and its owned page, takes no new work (`bind` answers `ENOENT`), and
    /// a later [`Uat::create_vm`], [`Uat::bind`] or [`Uat::release`] destroys it once the
    /// firmware let it go (or a `bind` that takes its slot). `ENOENT` for an unknown VM.
    pub fn retire_vm(&mut self, id: VmId) -> Result {
        match self.destroy_vm(id) {
            Err(e) if e == EBUSY || e == EIO => {
                let vm = self.vm_mut(id)?;
                if !vm.retired {
                    vm.retired = true;
                    self.retired += 1;
                }
                // A client can cause this at will: no warning.
                pr_debug!("VM {}: still in use by the firmware, destroyed later\n", id);
                Ok(())
            }
            r => r,
        }
    }

    /// The number of retired VMs not destroyed yet.
    pub fn retired_vms(&self) -> usize {
        self.retired
    }

    /// Destroys the retired VMs the firmware no longer runs. A retired VM holds a slot:
    /// `destroy_vm` fails (`EBUSY`, `EIO`) only for a VM that holds one, and [`Uat::bind`]
    /// destroys a retired VM whose slot it takes. So the slots' holders are all there is to look
    /// at: no time per VM of the device.
    fn reap(&mut self) {
        for slot in 0..SLOTS {
            if self.retired == 0 {
                return;
            }
            let Some(id) = self.slots.owner(slot) else {
                continue;
            };
            if self.vm(id).is_ok_and(|vm| vm.retired) {
                // `EBUSY` again leaves it retired.
                let _ = self.destroy_vm(id);
            }
        }
    }

    /// Maps `page` at `iova` in user VM `id` and gives the VM the page (the render node's dummy
    /// page): it is freed with the VM's tables, after the invalidation, so never while the GPU
    /// may still reach it, even if the VM outlives its owner ([`Uat::retire_vm`]). `EEXIST` if
    /// the VM already owns a page.
    pub fn vm_map_owned(&mut self, id: VmId, iova: u64, page: Page, prot: Prot) -> Result {
        if self.vm(id)?.owned.is_some() {
            return Err(EEXIST);
        }
        self.map_user(id, prot, |pt| pt.map(iova, page.phys(), UAT_PGSZ, prot))?;
        self.vm_mut(id)?.owned = Some(page);
        Ok(())
    }

    /// Whether [`Uat::destroy_vm`] alone tears down user VM `id` with its mappings in place:
    /// true unless it ever had a mapping the firmware caches, which must be flushed from the
    /// firmware's cache mapping by mapping as it is unmapped ([`Uat::vm_unmap`]) first.
    pub fn can_destroy_mapped(&self, id: VmId) -> bool {
        self.vm(id).is_ok_and(|vm| !vm.fw_cached)
    }

    /// The IDs of the live user VMs.
    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.vms.iter().map(|vm| vm.id)
    }

    /// A user VM's page table, for lookups.
    pub fn vm_table(&self, id: VmId) -> Result<&PageTable> {
        Ok(&self.vm(id)?.pt)
    }

    /// The slot a user VM holds now, if any.
    pub fn slot_of(&self, id: VmId) -> Option<usize> {
        let vm = self.vm(id).ok()?;
        self.slots.held_by(id, vm.hint)
    }

    /// Users of a slot (work submitted and not yet completed).
    pub fn slot_users(&self, slot: usize) -> u32 {
        self.slots.users(slot)
    }

    /// Maps physically contiguous memory into a user VM.
    pub fn vm_map(&mut self, id: VmId, iova: u64, pa: PhysAddr, size: u64, prot: Prot) -> Result {
        self.map_user(id, prot, |pt| pt.map(iova, pa, size, prot))
    }

    /// Runs `map` on the table of user VM `id`, noting that the VM is about to get mappings with
    /// `prot`, then invalidates what a failed map briefly wrote ([`PageTable::gather_undone`]) if
    /// the VM holds a slot.
    fn map_user(
        &mut self,
        id: VmId,
        prot: Prot,
        map: impl FnOnce(&mut PageTable) -> Result,
    ) -> Result {
        let vm = self.vm_mut(id)?;
        vm.fw_cached |= prot.needs_fw_flush();
        let r = map(&mut vm.pt);
        let mut undone = Gather::new();
        vm.pt.gather_undone(&mut undone);
        // Nothing to invalidate (a map that failed before writing, or did not fail) needs no
        // look at the VM's slot.
        if !undone.is_empty() {
            self.vm_flush(id, &mut undone);
        }
        r
    }

    /// Maps the same page over a range of a user VM.
    pub fn vm_map_repeat(
        &mut self,
        id: VmId,
        iova: u64,
        pa: PhysAddr,
        size: u64,
        prot: Prot,
    ) -> Result {
        self.map_user(id, prot, |pt| pt.map_repeat(iova, pa, size, prot))
    }

    /// Maps a scatter list into a user VM (see [`PageTable::map_sg`]).
    pub fn vm_map_sg(
        &mut self,
        id: VmId,
        iova: u64,
        size: u64,
        sg: &[PhysRange],
        skip: u64,
        prot: Prot,
    ) -> Result {
        self.map_user(id, prot, |pt| pt.map_sg(iova, size, sg, skip, prot))
    }

    /// Preallocates the tables a later map of the range needs.
    pub fn vm_prealloc(&mut self, id: VmId, iova: u64, size: u64) -> Result {
        self.vm_mut(id)?.pt.prealloc(iova, size)
    }

    /// [`Uat::vm_prealloc`] for a caller that holds the UAT in a lock every client waits on:
    /// `guard`, taken again with `lock`. The tables are allocated with the lock released (one
    /// bind can need thousands of pages, charged to the client, with reclaim on the way) and
    /// linked once it is held again. Returns the guard, held, or the first error: `ENOMEM`
    /// (nothing linked), or those of [`PageTable::prealloc_from`] (`EINVAL`, `ERANGE`, `EIO`)
    /// and `ENOENT` for an unknown VM.
    ///
    /// The caller holds the lock of the VM's own mappings (its GPUVM), so nothing else changes
    /// the VM's tables meanwhile: the second pass finds the reserve enough. Should something
    /// change them anyway, the reserve is topped up again, with a warning.
    pub fn vm_prealloc_unlocked<G>(
        mut guard: G,
        lock: impl Fn() -> G,
        id: VmId,
        iova: u64,
        size: u64,
    ) -> Result<G>
    where
        G: DerefMut<Target = Self>,
    {
        let mut reserve = TableReserve::new();
        let mut pass = 0u32;
        loop {
            let vm = guard.vm_mut(id)?;
            let Some(needs) = vm.pt.prealloc_from(iova, size, &mut reserve)? else {
                return Ok(guard);
            };
            pass += 1;
            if pass == 2 {
                pr_warn!(
                    "VM {}: its tables changed while its bind allocated them\n",
                    id
                );
            }
            let cfg = *vm.pt.config();
            drop(guard);
            reserve.top_up(&cfg, needs)?;
            guard = lock();
        }
    }

    /// The ASID to invalidate for user VM `id`: its slot if it holds one.
    fn vm_asid(&self, id: VmId) -> Option<u16> {
        let vm = self.vm(id).ok()?;
        self.slots.held_by(id, vm.hint).map(|s| s as u16)
    }

    fn finish(&self, gather: &mut Gather, asid: Option<u16>) {
        match asid {
            Some(asid) => gather.flush(&self.tlb, asid),
            None => gather.finish_unbound(),
        }
    }

    /// Unmaps from a user VM, flushing the firmware's caches first where needed, and invalidates
    /// the range in the VM's ASID if it holds a slot. Returns the pages unmapped.
    pub fn vm_unmap(&mut self, id: VmId, iova: u64, size: u64) -> Result<usize> {
        self.vm_remove(id, iova, size, true)
    }

    /// Like [`Uat::vm_unmap`] but keeps the tables (see [`PageTable::unmap_keep_tables`]): the
    /// first half of a bind that replaces mappings.
    pub fn vm_clear(&mut self, id: VmId, iova: u64, size: u64) -> Result<usize> {
        self.vm_remove(id, iova, size, false)
    }

    fn vm_remove(&mut self, id: VmId, iova: u64, size: u64, prune: bool) -> Result<usize> {
        let mut gather = Gather::new();
        let r = self.vm_remove_gathered(id, iova, size, prune, &mut gather);
        self.vm_flush(id, &mut gather);
        r
    }

    /// [`Uat::vm_unmap`] (`prune`) or [`Uat::vm_clear`], with the TLB invalidation and the
    /// tables to free collected into `gather` rather than done: the caller flushes it with
    /// [`Uat::vm_flush`], before anything relies on the range being unmapped (a new mapping
    /// written there, the buffers released). Mappings the firmware caches are flushed from its
    /// cache now, before their descriptors go.
    pub fn vm_remove_gathered(
        &mut self,
        id: VmId,
        iova: u64,
        size: u64,
        prune: bool,
        gather: &mut Gather,
    ) -> Result<usize> {
        self.fw_flush(Some(id), iova, size)?;
        let pt = &mut self.vm_mut(id)?.pt;
        if prune {
            pt.unmap(iova, size, gather)
        } else {
            pt.unmap_keep_tables(iova, size, gather)
        }
    }

    /// Unlinks the tables of user VM `id` in `size` bytes at `iova` that hold nothing
    /// ([`PageTable::prune`]), invalidates the range in the VM's ASID (if it holds a slot) and
    /// frees them. No mapping changes, so the firmware's caches need no flush. Returns the number
    /// of tables freed.
    pub fn vm_prune(&mut self, id: VmId, iova: u64, size: u64) -> Result<usize> {
        let mut gather = Gather::new();
        let r = self.vm_mut(id)?.pt.prune(iova, size, &mut gather);
        self.vm_flush(id, &mut gather);
        r
    }

    /// Flushes what [`Uat::vm_remove_gathered`] collected for user VM `id`: invalidates the
    /// range in its ASID (if it holds a slot), then frees the unlinked tables. `gather` is empty
    /// afterwards.
    pub fn vm_flush(&self, id: VmId, gather: &mut Gather) {
        let asid = self.vm_asid(id);
        self.finish(gather, asid);
    }

    /// Binds a user VM to a context slot for one more piece of submitted work and returns the
    /// slot (= ASID). A VM that still holds its previous slot keeps it; otherwise it takes a free
    /// slot or the least recently used idle one, never the firmware's current context: the
    /// TTBAT entry is written under the handoff lock and the ASID invalidated. `EBUSY` when every
    /// slot is in use; `EIO` if the firmware does not let go of the handoff lock
    /// ([`Handoff::lock`]).
    pub fn bind(&mut self, id: VmId) -> Result<usize> {
        self.reap();
        let vm = self.vm(id)?;
        if vm.retired {
            return Err(ENOENT);
        }
        let (hint, ttb, kernel_visible) = (vm.hint, vm.pt.ttb(), vm.kernel_visible);
        let guard = self.handoff.lock()?;
        let cur = guard.cur_slot();
        let choice = self.slots.choose(id, hint, |s| Some(s as u32) == cur)?;
        let slot = match choice {
            Choice::Held(slot) => {
                drop(guard);
                self.stats.binds_held += 1;
                slot
            }
            Choice::Take { slot, evicted } => {
                let asid = slot as u16;
                let ttb1 = if kernel_visible {
                    ttb_word(self.cfg.pagetables.phys, asid)
                } else {
                    0
                };
                self.ttbat.set(&guard, slot, ttb_word(ttb, asid), ttb1);
                drop(guard);
                self.tlb.invalidate_asid(asid);
                self.stats.binds_written += 1;
                if evicted.is_some() {
                    self.stats.evictions += 1;
                }
                slot
            }
        };
        self.slots.get(slot, id);
        self.vm_mut(id)?.hint = Some(slot);
        // A retired VM whose slot was just taken (the firmware let it go after `reap` above
        // looked): slotless, its ASID invalidated, it goes now, or nothing would find it again.
        if let Choice::Take {
            evicted: Some(ev), ..
        } = choice
        {
            if self.vm(ev).is_ok_and(|vm| vm.retired) {
                let _ = self.destroy_vm(ev);
            }
        }
        Ok(slot)
    }

    /// Ends one piece of work of a user VM (the matching [`Uat::bind`]). `EINVAL` if the VM has
    /// no work bound. Then destroys the retired VMs the firmware let go of, `id` among them if
    /// this was its last work: this may take the handoff lock (and sleep, up to
    /// [`crate::handoff::LOCK_TIMEOUT`]), invalidate the TLB and free pages, so process context
    /// only, not a fence-signalling path.
    pub fn release(&mut self, id: VmId) -> Result {
        let vm = self.vm(id)?;
        let slot = self.slots.held_by(id, vm.hint).ok_or(EINVAL)?;
        self.slots.put(slot, id)?;
        // The last work of a retired VM may just have completed.
        self.reap();
        Ok(())
    }

    // ---- Firmware cache flush ----

    /// The table of the kernel VM (`vm` None) or of user VM `vm`.
    fn table_mut(&mut self, vm: Option<VmId>, va: u64, size: u64) -> Result<&mut PageTable> {
        match vm {
            None => self.kernel_pt(va, size),
            Some(id) => Ok(&mut self.vm_mut(id)?.pt),
        }
    }

    /// Before unmapping `va .. va + size` of the kernel VM (`vm` None) or user VM `vm`: every
    /// cached, firmware-visible mapping in the range is remapped uncached, then the firmware is
    /// asked to flush the range through the handoff flush protocol.
    ///
    /// Should that fail, the runs get their cached protection back: the unmap fails with nothing
    /// changed, and its retry finds them and asks for the flush again (left uncached, they would
    /// look like mappings the firmware never cached, and go without one).
    fn fw_flush(&mut self, vm: Option<VmId>, va: u64, size: u64) -> Result {
        if let Some(id) = vm {
            if !self.vm(id)?.fw_cached {
                // Nothing the firmware caches was ever mapped here: no walk needed.
                return Ok(());
            }
        }
        let runs = self
            .table_mut(vm, va, size)?
            .collect_mappings(va, size, |m| m.prot.needs_fw_flush())?;
        if runs.is_empty() {
            return Ok(());
        }
        // Remap uncached first, whatever the firmware runs now: nothing new may enter its caches
        // from here on, also if it switches to this VM's context before the unmap.
        let asid = match vm {
            None => Some(0),
            Some(id) => self.vm_asid(id),
        };
        let mut gather = Gather::new();
        let pt = self.table_mut(vm, va, size)?;
        let mut reprot = Ok(());
        for m in runs.iter() {
            reprot = reprot.and_then(|()| pt.reprot(m.va, m.size, m.prot.uncached(), &mut gather));
        }
        self.finish(&mut gather, asid);
        let flushed = reprot.and_then(|()| self.fw_flush_runs(vm, asid, &runs));
        if flushed.is_err() {
            let mut gather = Gather::new();
            if let Ok(pt) = self.table_mut(vm, va, size) {
                for m in runs.iter() {
                    // Those the first loop did not reach keep it anyway.
                    let _ = pt.reprot(m.va, m.size, m.prot, &mut gather);
                }
            }
            self.finish(&mut gather, asid);
        }
        flushed
    }

    /// The flush requests of [`Uat::fw_flush`], for `runs` just remapped uncached in the kernel
    /// VM (`vm` None) or user VM `vm`, whose slot is `asid`.
    fn fw_flush_runs(&mut self, vm: Option<VmId>, asid: Option<u16>, runs: &[Mapping]) -> Result {
        // The uncached remap before the flush request: the firmware is outside the CPUs'
        // inner-shareable domain.
        mb(Full);
        // The flush request slot: the kernel VM's, or the VM's context if the firmware is running
        // it now (otherwise the firmware holds nothing of it in its caches, and can no longer
        // cache it).
        let flush_slot = match vm {
            None => KERNEL_FLUSH_SLOT,
            Some(id) => {
                let Some(asid) = asid else {
                    return Ok(());
                };
                let slot = usize::from(asid);
                let ttb0 = ttb_word(self.vm(id)?.pt.ttb(), asid);
                let guard = self.handoff.lock()?;
                if guard.cur_slot() != Some(slot as u32) || self.ttbat.get(&guard, slot).0 != ttb0 {
                    return Ok(());
                }
                slot
            }
        };
        for m in runs.iter() {
            let mut addr = m.va;
            let end = m.va + m.size;
            while addr < end {
                let pages = ((end - addr) >> UAT_PGBIT).min(0xffff);
                let bytes = pages << UAT_PGBIT;
                self.handoff.begin_flush(flush_slot, addr, bytes)?;
                self.stats.fw_flushes += 1;
                let sent = self.fw.flush_cache(&FlushMsg {
                    addr,
                    slot: flush_slot as u32,
                    page_count: pages as u16,
                });
                // Only a firmware that did not answer in time may still mark it done.
                let ended = self.handoff.end_flush(flush_slot, sent == Err(ETIMEDOUT));
                sent?;
                ended?;
                addr += bytes;
            }
        }
        Ok(())
    }
}

/// The index of VM `id` in `vms` (sorted by ID); `ENOENT` if there is none.
fn position(vms: &[UserVm], id: VmId) -> Result<usize> {
    vms.binary_search_by_key(&id, |vm| vm.id)
        .map_err(|_| ENOENT)
}

fn find(vms: &[UserVm], id: VmId) -> Result<&UserVm> {
    vms.get(position(vms, id)?).ok_or(ENOENT)
}

fn find_mut(vms: &mut [UserVm], id: VmId) -> Result<&mut UserVm> {
    let i = position(vms, id)?;
    vms.get_mut(i).ok_or(ENOENT)
}

impl<T: TlbInvalidate, F: FwChannel> Drop for Uat<T, F> {
    fn drop(&mut self) {
        // Unbind every context before the tables go away with the fields, except those the
        // firmware still runs or has work in: clearing a TTBAT entry does not unload a context
        // the GPU has loaded, so their VMs' tables (and owned pages) leak instead, with their
        // entries, and so does the kernel VM's upper half if one of them is kernel-visible (its
        // `ttb1` leads there). Otherwise the kernel VM's tables are freed: `Uat::new`'s caller
        // stops the firmware first. Without the lock, everything leaks.
        let busy = match self.handoff.lock() {
            Ok(guard) => {
                let cur = guard.cur_slot();
                let mut busy = 0u64;
                for slot in 0..SLOTS {
                    if slot != KERNEL_SLOT
                        && (cur == Some(slot as u32) || self.slots.users(slot) != 0)
                    {
                        busy |= 1 << slot;
                    } else {
                        self.ttbat.set(&guard, slot, 0, 0);
                    }
                }
                Some(busy)
            }
            Err(_) => {
                // The TTBAT still names every table, and the GPU may walk them for as long as it
                // runs: nothing it can reach is freed, the pages the VMs own included.
                // The bootloader's table keeps its entry for our upper half: the next probe's
                // `PageTable::new_borrowed` refuses it (`EBUSY`) until a reboot.
                pr_err!("firmware dead: TTBAT left as it is, page tables leaked\n");
                self.kernel.lower.leak();
                self.kernel.upper.leak();
                None
            }
        };
        let mut upper_reachable = false;
        for vm in self.vms.iter_mut() {
            let keep = match busy {
                Some(busy) => {
                    let running = self
                        .slots
                        .held_by(vm.id, vm.hint)
                        .is_some_and(|slot| busy & (1 << slot) != 0);
                    if running {
                        pr_warn!(
                            "VM {} still running on the GPU: its page tables leak\n",
                            vm.id
                        );
                    }
                    running
                }
                None => true,
            };
            if keep {
                upper_reachable |= vm.kernel_visible;
                vm.pt.leak();
                if let Some(page) = vm.owned.take() {
                    core::mem::forget(page);
                }
            }
        }
        if upper_reachable {
            self.kernel.upper.leak();
        }
        if busy.is_some() {
            self.tlb.invalidate_all();
        }
    }
}
