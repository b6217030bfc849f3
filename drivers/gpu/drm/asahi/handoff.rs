// SPDX-License-Identifier: GPL-2.0

//! The handoff region: the memory the CPU and the GPU firmware share to agree on the TTBAT.
//!
//! The firmware runs concurrently on its own processor and reads the TTBAT while it switches
//! contexts, so TTBAT updates and the firmware's idea of the current context (`cur_slot`) are
//! only touched under a two-party lock (Dekker/Peterson style, [`lock_acquire`]) that lives in the
//! region. The region also holds one cache-flush request per context slot, which the CPU and the
//! firmware step through a small state machine (0 idle -> 1 requested by the CPU -> 2 done by the
//! firmware -> 0 acknowledged by the CPU).

use crate::region::Region;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::io::{poll::read_poll_timeout, PhysAddr};
use kernel::prelude::*;
use kernel::sync::barrier::{mb, Full};
use kernel::time::Delta;

/// What the CPU writes to `magic_ap`, and the firmware echoes in `magic_fw` once it is up.
pub const MAGIC: u64 = 0x4b1d_0000_0000_0002;
/// Number of flush request slots: one per context slot, plus the kernel VM's.
pub const FLUSH_SLOTS: usize = 65;
/// The flush request slot used for the kernel VM.
pub const KERNEL_FLUSH_SLOT: usize = 64;
/// `cur_slot` value meaning "no context" (0 means the same).
pub const NO_SLOT: u32 = 0xffff_ffff;
/// How long [`Handoff::init`] waits for the firmware.
pub const INIT_TIMEOUT: Delta = Delta::from_secs(1);
/// How long [`Handoff::init`] sleeps between two looks for the firmware.
pub const INIT_POLL_SLEEP: Delta = Delta::from_millis(10);
/// How long one poll of the handshake tries the lock, in waiting iterations (each reads the
/// uncached shared memory: milliseconds at most), between two sleeps of [`INIT_POLL_SLEEP`].
const INIT_LOCK_SPINS: u32 = 100_000;
/// How long [`Handoff::lock`] waits for the firmware's side of the lock before taking the
/// firmware for dead: it holds the lock only for a few accesses to shared memory.
pub const LOCK_TIMEOUT: Delta = Delta::from_secs(1);
/// How long one try of [`Handoff::lock`] spins, in waiting iterations (about 100 us on the
/// uncached mapping): enough for the firmware's usual hold, short next to the sleeps.
const LOCK_SPINS: u32 = 1_000;
/// How long [`Handoff::lock`] sleeps between two tries.
const LOCK_POLL_SLEEP: Delta = Delta::from_micros(100);

/// The value of `lock_acquire`'s `me` for the CPU; the firmware is `1`.
pub const ME_AP: u32 = 0;

/// One cache-flush request.
#[repr(C)]
pub struct FlushRegs {
    /// 0 idle, 1 requested, 2 done.
    pub state: AtomicU64,
    /// First GPU VA to flush.
    pub addr: AtomicU64,
    /// Bytes to flush.
    pub size: AtomicU64,
}

/// Flush request states.
pub mod flush_state {
    /// No request.
    pub const IDLE: u64 = 0;
    /// The CPU posted a request.
    pub const REQUESTED: u64 = 1;
    /// The firmware flushed its caches for the request.
    pub const DONE: u64 = 2;
}

/// The layout of the handoff region (little endian; the driver runs on little-endian arm64).
#[repr(C)]
pub struct HandoffRegs {
    /// Written by the CPU at init.
    pub magic_ap: AtomicU64,
    /// Written by the firmware when it is up.
    pub magic_fw: AtomicU64,
    /// The CPU's "I want the lock" flag.
    pub lock_ap: AtomicU8,
    /// The firmware's "I want the lock" flag.
    pub lock_fw: AtomicU8,
    _pad0: [AtomicU8; 2],
    /// Whose turn it is to back off: the CPU yields while it is not 0, the firmware while it is
    /// not 1.
    pub turn: AtomicU32,
    /// The context the firmware is running (0 or [`NO_SLOT`]: none).
    pub cur_slot: AtomicU32,
    _pad1: AtomicU32,
    /// Cache-flush requests, indexed by context slot, [`KERNEL_FLUSH_SLOT`] for the kernel VM.
    pub flush: [FlushRegs; FLUSH_SLOTS],
    /// Unknown, left alone.
    pub unk2: AtomicU8,
    _pad2: [AtomicU8; 7],
    /// Unknown, zeroed at init.
    pub unk3: AtomicU64,
}

/// Size of the handoff layout.
pub const HANDOFF_SIZE: usize = 0x648;

const _: () = {
    assert!(offset_of!(HandoffRegs, magic_ap) == 0x000);
    assert!(offset_of!(HandoffRegs, magic_fw) == 0x008);
    assert!(offset_of!(HandoffRegs, lock_ap) == 0x010);
    assert!(offset_of!(HandoffRegs, lock_fw) == 0x011);
    assert!(offset_of!(HandoffRegs, turn) == 0x014);
    assert!(offset_of!(HandoffRegs, cur_slot) == 0x018);
    assert!(offset_of!(HandoffRegs, flush) == 0x020);
    assert!(size_of::<FlushRegs>() == 0x18);
    assert!(offset_of!(HandoffRegs, unk2) == 0x638);
    assert!(offset_of!(HandoffRegs, unk3) == 0x640);
    assert!(size_of::<HandoffRegs>() == HANDOFF_SIZE);
};

/// The cells of the two-party lock, as seen by one party.
///
/// The algorithm ([`lock_acquire`], [`lock_release`]) is written against this trait so that the
/// very code the driver runs is also model-checked (with `loom`) against a model of the firmware.
pub trait LockCells {
    /// Stores this party's flag.
    fn set_mine(&self, v: u8, order: Ordering);
    /// Loads the other party's flag.
    fn theirs(&self) -> u8;
    /// Loads `turn`.
    fn turn(&self) -> u32;
    /// Stores `turn`.
    fn set_turn(&self, v: u32);
    /// A full barrier, ordering this party's flag store before its load of the other's flag, as
    /// seen by the other processor.
    fn full_fence(&self);
    /// Called in every spin iteration.
    fn relax(&self);
}

/// Takes the lock for party `me` (0 = CPU, 1 = firmware): raise our flag; while the other's is
/// raised, back off (lower ours, wait for our turn, raise it again) if it is their turn.
pub fn lock_acquire(c: &impl LockCells, me: u32) {
    let taken = lock_try_acquire(c, me, None);
    debug_assert!(taken);
}

/// [`lock_acquire`], giving up after `spins` waiting iterations if given: our flag is then
/// lowered, as if we had never asked, and the result is `false`. For a caller that must not wait
/// forever on a firmware that may have died with its flag raised.
pub fn lock_try_acquire(c: &impl LockCells, me: u32, mut spins: Option<u32>) -> bool {
    // One waiting iteration; `false` once the budget is spent.
    let mut wait = || match spins.as_mut() {
        None => true,
        Some(0) => false,
        Some(n) => {
            *n -= 1;
            true
        }
    };
    c.set_mine(1, Ordering::Relaxed);
    c.full_fence();
    while c.theirs() != 0 {
        if c.turn() != me {
            c.set_mine(0, Ordering::Relaxed);
            while c.turn() != me {
                if !wait() {
                    return false;
                }
                c.relax();
            }
            c.set_mine(1, Ordering::Relaxed);
            c.full_fence();
        } else {
            if !wait() {
                // Our turn: hand it over as a release does. Otherwise a firmware that saw our
                // flag and backed off would wait for a turn no one gives it any more.
                c.set_turn(1 - me);
                c.set_mine(0, Ordering::Release);
                return false;
            }
            c.relax();
        }
    }
    c.full_fence();
    true
}

/// Releases the lock held by party `me`: hand the turn to the other party, then lower our flag
/// (with release ordering: everything done under the lock is visible before it).
pub fn lock_release(c: &impl LockCells, me: u32) {
    c.set_turn(1 - me);
    c.set_mine(0, Ordering::Release);
}

/// The CPU's side of the lock cells in the real region.
struct ApSide<'a>(&'a HandoffRegs);

impl LockCells for ApSide<'_> {
    fn set_mine(&self, v: u8, order: Ordering) {
        self.0.lock_ap.store(v, order)
    }
    fn theirs(&self) -> u8 {
        self.0.lock_fw.load(Ordering::Relaxed)
    }
    fn turn(&self) -> u32 {
        self.0.turn.load(Ordering::Relaxed)
    }
    fn set_turn(&self, v: u32) {
        self.0.turn.store(v, Ordering::Relaxed)
    }
    fn full_fence(&self) {
        mb(Full)
    }
    fn relax(&self) {
        core::hint::spin_loop()
    }
}

/// The cache-flush message the firmware answers (its control message
/// `{addr u64, unk 0, slot u32, page_count u16, 2}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushMsg {
    /// First GPU VA to flush.
    pub addr: u64,
    /// The flush request slot ([`KERNEL_FLUSH_SLOT`] for the kernel VM).
    pub slot: u32,
    /// Pages to flush, below 0x10000.
    pub page_count: u16,
}

/// The firmware's control channel, as far as the MMU needs it.
pub trait FwChannel {
    /// Sends a cache-flush message and waits for the firmware to process it: `ETIMEDOUT` if it
    /// did not answer in time (it may still process the request, and mark it done, later); any
    /// other error if the message did not reach it or it answered with an error (it will not
    /// touch the request any more).
    fn flush_cache(&self, msg: &FlushMsg) -> Result;
}

impl<F: FwChannel + ?Sized> FwChannel for &F {
    fn flush_cache(&self, msg: &FlushMsg) -> Result {
        (**self).flush_cache(msg)
    }
}

/// The mapped handoff region.
pub struct Handoff {
    region: Region,
    /// Set while the firmware is taken for dead (it kept its side of the lock for
    /// [`LOCK_TIMEOUT`]): [`Handoff::lock`] then tries once, without waiting.
    dead: AtomicBool,
}

/// Proof that the CPU holds the handoff lock; releases it on drop.
pub struct HandoffGuard<'a> {
    regs: &'a HandoffRegs,
}

impl Handoff {
    /// Maps the `handoff` reserved-memory region (uncached).
    ///
    /// # Safety
    ///
    /// `phys` and `size` must describe memory that only this object and the GPU firmware use
    /// while it lives (the device tree's `handoff` reserved-memory region): the object writes it.
    pub unsafe fn new(phys: PhysAddr, size: u64) -> Result<Handoff> {
        // SAFETY: The caller gives the `handoff` region, memory of ours to map.
        let region = unsafe { Region::new("handoff", phys, size, HANDOFF_SIZE, true) }?;
        Ok(Handoff {
            region,
            dead: AtomicBool::new(false),
        })
    }

    fn regs(&self) -> &HandoffRegs {
        // SAFETY: `Region::new` checked that the mapping holds at least `HANDOFF_SIZE` bytes at a
        // page-aligned address, and it lives as long as `self`; by the contract of `new`, only
        // we and the firmware use it. Every field, padding included, is an atomic, which is how
        // memory the firmware writes concurrently must be accessed.
        unsafe { &*(self.region.as_ptr() as *const HandoffRegs) }
    }

    /// The firmware handshake: announce ourselves, then wait up to one second (polling under the
    /// lock, sleeping outside it) for the firmware's magic. `EIO` if it never comes. Then clear
    /// every flush request.
    pub fn init(&self) -> Result {
        let regs = self.regs();
        regs.magic_ap.store(MAGIC, Ordering::Relaxed);
        regs.cur_slot.store(0, Ordering::Relaxed);
        regs.unk3.store(0, Ordering::Relaxed);
        mb(Full);
        // The lock is only tried: a firmware that died holding it must not hang the boot.
        let answered = read_poll_timeout(
            || {
                Ok(self
                    .try_lock(INIT_LOCK_SPINS)
                    .map_or(0, |guard| guard.regs.magic_fw.load(Ordering::Relaxed)))
            },
            |magic| *magic == MAGIC,
            INIT_POLL_SLEEP,
            INIT_TIMEOUT,
        );
        if answered.is_err() {
            pr_err!(
                "GPU firmware did not answer the handoff within {} ms\n",
                INIT_TIMEOUT.as_millis()
            );
            return Err(EIO);
        }
        for f in &regs.flush {
            f.state.store(flush_state::IDLE, Ordering::Relaxed);
            f.addr.store(0, Ordering::Relaxed);
            f.size.store(0, Ordering::Relaxed);
        }
        mb(Full);
        Ok(())
    }

    /// Takes the two-party lock: tries (spinning a while) between short sleeps, up to
    /// [`LOCK_TIMEOUT`] in all. `EIO` if the firmware keeps its side raised that long: it died
    /// holding the lock, or hangs, so that no operation hangs with it. It is then taken for dead
    /// and later calls try once, without waiting (`EIO` at once), until one gets the lock
    /// again. Sleeps: process context only.
    pub fn lock(&self) -> Result<HandoffGuard<'_>> {
        if self.dead.load(Ordering::Relaxed) {
            let guard = self.try_lock(LOCK_SPINS).ok_or(EIO)?;
            self.dead.store(false, Ordering::Relaxed);
            pr_info!("GPU firmware released the handoff lock again\n");
            return Ok(guard);
        }
        let polled = read_poll_timeout(
            || Ok(self.try_lock(LOCK_SPINS)),
            Option::is_some,
            LOCK_POLL_SLEEP,
            LOCK_TIMEOUT,
        );
        if let Ok(Some(guard)) = polled {
            return Ok(guard);
        }
        // A last try: this thread may have slept through the whole timeout, not the firmware.
        if let Some(guard) = self.try_lock(LOCK_SPINS) {
            return Ok(guard);
        }
        self.dead.store(true, Ordering::Relaxed);
        pr_err!(
            "GPU firmware held the handoff lock for {} ms: taken for dead\n",
            LOCK_TIMEOUT.as_millis()
        );
        Err(EIO)
    }

    /// Takes the two-party lock unless that takes more than `spins` waiting iterations.
    fn try_lock(&self, spins: u32) -> Option<HandoffGuard<'_>> {
        let regs = self.regs();
        lock_try_acquire(&ApSide(regs), ME_AP, Some(spins)).then_some(HandoffGuard { regs })
    }

    /// Posts a cache-flush request in `slot` (state 0 -> 1). `EIO` if the slot is neither idle
    /// nor done: the firmware has not answered an earlier request yet, or left the slot in a
    /// state the protocol does not have.
    ///
    /// Done is accepted as idle: it is the firmware's late answer to an earlier request that
    /// [`Handoff::end_flush`] gave up waiting for (and left requested), and refusing it would
    /// fail every later flush of the slot. A slot still requested is refused: the firmware may
    /// still answer that request, and its late "done" would then pass for the answer to this one.
    pub fn begin_flush(&self, slot: usize, addr: u64, size: u64) -> Result {
        let f = self.regs().flush.get(slot).ok_or(EINVAL)?;
        let state = f.state.load(Ordering::Acquire);
        match state {
            flush_state::IDLE => {}
            flush_state::DONE => {
                pr_warn!("flush slot {}: a late answer to an earlier request\n", slot);
            }
            flush_state::REQUESTED => {
                pr_err!(
                    "flush slot {}: the firmware has not answered an earlier request\n",
                    slot
                );
                return Err(EIO);
            }
            _ => {
                pr_err!("flush slot {} in state {} instead of idle\n", slot, state);
                return Err(EIO);
            }
        }
        f.addr.store(addr, Ordering::Relaxed);
        f.size.store(size, Ordering::Relaxed);
        f.state.store(flush_state::REQUESTED, Ordering::Release);
        mb(Full);
        Ok(())
    }

    /// Completes a cache-flush request once the firmware answered (state 2 -> 0). `EIO` if the
    /// firmware did not mark it done. When the wait for its answer timed out (`pending`), a slot
    /// still requested stays so: the firmware may process the request yet, and
    /// [`Handoff::begin_flush`] refuses to post over it until it has. Otherwise (the firmware
    /// answered without marking it done, or never got the message) the slot is reset to idle, so
    /// that one bad answer does not wedge every later flush of the slot.
    pub fn end_flush(&self, slot: usize, pending: bool) -> Result {
        let f = self.regs().flush.get(slot).ok_or(EINVAL)?;
        let state = f.state.load(Ordering::Acquire);
        if !(pending && state == flush_state::REQUESTED) {
            f.state.store(flush_state::IDLE, Ordering::Release);
        }
        if state != flush_state::DONE {
            pr_err!(
                "flush slot {} in state {} after the firmware's answer\n",
                slot,
                state
            );
            return Err(EIO);
        }
        Ok(())
    }
}

impl HandoffGuard<'_> {
    /// The context slot the firmware is running, if any.
    pub fn cur_slot(&self) -> Option<u32> {
        match self.regs.cur_slot.load(Ordering::Relaxed) {
            0 | NO_SLOT => None,
            s => Some(s),
        }
    }
}

impl Drop for HandoffGuard<'_> {
    fn drop(&mut self) {
        lock_release(&ApSide(self.regs), ME_AP);
    }
}
