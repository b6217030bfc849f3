// SPDX-License-Identifier: GPL-2.0

//! Which user VM holds which context slot.
//!
//! There are more VMs than slots (63 for users), so a VM holds a slot only while it has work
//! queued, counted by `users`. An idle VM keeps its slot (and its TTBAT entry) until another VM
//! needs one, so a VM submitting again usually finds its slot still bound and its TLB entries
//! still warm. When a slot must be taken, free slots go first, then the least recently used
//! idle one; slots with users are never taken.
//!
//! This module is the bookkeeping only; the TTBAT writes and invalidations that go with each
//! decision are the UAT's (see `uat.rs`).

use crate::ttbat::{KERNEL_SLOT, SLOTS};
use kernel::prelude::*;

/// A user VM's identity (unique for the UAT's lifetime, never reused).
pub type VmId = u64;

#[derive(Clone, Copy, Default)]
struct Slot {
    owner: Option<VmId>,
    users: u32,
    last_used: u64,
}

/// What [`SlotTable::choose`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The VM still holds this slot: nothing to write.
    Held(usize),
    /// The VM must be bound to this slot, taking it from `evicted` if any.
    Take {
        /// The slot.
        slot: usize,
        /// The idle VM that held it.
        evicted: Option<VmId>,
    },
}

/// The slot bookkeeping.
pub struct SlotTable {
    slots: [Slot; SLOTS],
    clock: u64,
}

impl Default for SlotTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotTable {
    /// All user slots free.
    pub fn new() -> SlotTable {
        SlotTable {
            slots: [Slot::default(); SLOTS],
            clock: 0,
        }
    }

    /// The slot `vm` holds, looked up from its last slot `hint`.
    pub fn held_by(&self, vm: VmId, hint: Option<usize>) -> Option<usize> {
        hint.filter(|&s| s < SLOTS && self.slots[s].owner == Some(vm))
    }

    /// Picks the slot for `vm` (which last held `hint`): its own if it still holds it, else a
    /// free one (`hint` first, then the least recently used), else the least recently used idle
    /// one. `unusable(slot)` excludes slots that must not be rebound now (the firmware's current
    /// context). `EBUSY` when every candidate has users or is excluded.
    pub fn choose(
        &self,
        vm: VmId,
        hint: Option<usize>,
        unusable: impl Fn(usize) -> bool,
    ) -> Result<Choice> {
        if let Some(slot) = self.held_by(vm, hint) {
            return Ok(Choice::Held(slot));
        }
        let user_slots = (KERNEL_SLOT + 1..SLOTS).filter(|&s| !unusable(s));
        let lru = |free: bool| {
            user_slots
                .clone()
                .filter(|&s| {
                    let slot = &self.slots[s];
                    slot.users == 0 && slot.owner.is_none() == free
                })
                .min_by_key(|&s| self.slots[s].last_used)
        };
        let hinted_free = hint.filter(|&s| {
            s != KERNEL_SLOT && s < SLOTS && self.slots[s].owner.is_none() && !unusable(s)
        });
        let slot = hinted_free
            .or_else(|| lru(true))
            .or_else(|| lru(false))
            .ok_or(EBUSY)?;
        Ok(Choice::Take {
            slot,
            evicted: self.slots[slot].owner,
        })
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records that `vm` now holds `slot` (after a [`Choice::Take`]) or uses it again (after a
    /// [`Choice::Held`]), with one more user.
    pub fn get(&mut self, slot: usize, vm: VmId) {
        let now = self.tick();
        let s = &mut self.slots[slot];
        if s.owner != Some(vm) {
            *s = Slot {
                owner: Some(vm),
                users: 0,
                last_used: now,
            };
        }
        s.users += 1;
        s.last_used = now;
    }

    /// Drops one user of `slot` held by `vm`. `EINVAL` if `vm` does not hold it or has no user.
    pub fn put(&mut self, slot: usize, vm: VmId) -> Result {
        let now = self.tick();
        let s = self.slots.get_mut(slot).ok_or(EINVAL)?;
        if s.owner != Some(vm) || s.users == 0 {
            return Err(EINVAL);
        }
        s.users -= 1;
        s.last_used = now;
        Ok(())
    }

    /// Frees `slot` held by `vm` (the VM goes away). `EBUSY` if it still has users.
    pub fn free(&mut self, slot: usize, vm: VmId) -> Result {
        let now = self.tick();
        let s = &mut self.slots[slot];
        if s.owner != Some(vm) {
            return Err(EINVAL);
        }
        if s.users != 0 {
            return Err(EBUSY);
        }
        *s = Slot {
            owner: None,
            users: 0,
            last_used: now,
        };
        Ok(())
    }

    /// The VM holding `slot`, if any.
    pub fn owner(&self, slot: usize) -> Option<VmId> {
        self.slots.get(slot).and_then(|s| s.owner)
    }

    /// Users of `slot`.
    pub fn users(&self, slot: usize) -> u32 {
        self.slots.get(slot).map_or(0, |s| s.users)
    }
}
