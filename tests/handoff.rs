// SPDX-License-Identifier: GPL-2.0

//! The handoff region: the two-party lock (model-checked with loom, then stressed against the
//! simulated firmware's own lock code), the init handshake and its timeout, and the flush
//! request state machine's error reporting.

use agx_soc::firmware::{CsChecker, Firmware, FwKnobs};
use asahi::handoff::{
    lock_acquire, lock_release, lock_try_acquire, Handoff, LockCells, HANDOFF_SIZE,
    KERNEL_FLUSH_SLOT,
};
use kernel::error::code::*;
use kernel::sim;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod model {
    //! Loom: the driver's `lock_acquire` / `lock_release` (the CPU side) against a firmware model
    //! written from the facts doc. Every interleaving with at most three preemptions (loom's
    //! `preemption_bound`, which keeps the runs to seconds; the bugs loom finds in practice need
    //! fewer) and every weak-memory outcome loom allows is explored: the critical sections never
    //! overlap (loom's `UnsafeCell` panics on a concurrent access) and both parties always finish
    //! (loom reports a deadlock otherwise).
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};
    use loom::sync::Arc;

    #[derive(Default)]
    struct Cells {
        lock_ap: AtomicU8,
        lock_fw: AtomicU8,
        turn: AtomicU32,
        data: UnsafeCell<u32>,
    }

    /// The CPU's view of the cells (what the driver's `LockCells` implementation maps).
    struct Ap<'a>(&'a Cells);

    impl LockCells for Ap<'_> {
        fn set_mine(&self, v: u8, order: std::sync::atomic::Ordering) {
            let order = match order {
                std::sync::atomic::Ordering::Release => Ordering::Release,
                _ => Ordering::Relaxed,
            };
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
            fence(Ordering::SeqCst)
        }
        fn relax(&self) {
            loom::thread::yield_now()
        }
    }

    /// The firmware's side, from the facts doc: the mirror image with `turn = 0`.
    fn fw_lock(c: &Cells) {
        c.lock_fw.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        while c.lock_ap.load(Ordering::Relaxed) != 0 {
            if c.turn.load(Ordering::Relaxed) != 1 {
                c.lock_fw.store(0, Ordering::Relaxed);
                while c.turn.load(Ordering::Relaxed) != 1 {
                    loom::thread::yield_now();
                }
                c.lock_fw.store(1, Ordering::Relaxed);
                fence(Ordering::SeqCst);
            }
            loom::thread::yield_now();
        }
        fence(Ordering::SeqCst);
    }

    fn fw_unlock(c: &Cells) {
        c.turn.store(0, Ordering::Relaxed);
        c.lock_fw.store(0, Ordering::Release);
    }

    fn critical(c: &Cells) {
        // SAFETY: Only inside the lock; loom reports any access that is not ordered after the
        // other party's, which is the property under test.
        c.data.with_mut(|d| unsafe { *d += 1 });
    }

    /// Runs, under loom, `rounds_fw` lock rounds of the firmware against the CPU side `ap`,
    /// which returns how many times it entered the critical section; checks the total.
    fn run(rounds_fw: u32, ap: impl Fn(&Cells) -> u32 + Send + Sync + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            let cells = Arc::new(Cells::default());
            let fw = {
                let cells = cells.clone();
                loom::thread::spawn(move || {
                    for _ in 0..rounds_fw {
                        fw_lock(&cells);
                        critical(&cells);
                        fw_unlock(&cells);
                    }
                })
            };
            let entered = ap(&cells);
            fw.join().unwrap();
            // SAFETY: Both parties are done (joined above).
            let total = cells.data.with(|d| unsafe { *d });
            assert_eq!(total, entered + rounds_fw);
        });
    }

    fn model(rounds_ap: u32, rounds_fw: u32) {
        run(rounds_fw, move |cells| {
            for _ in 0..rounds_ap {
                lock_acquire(&Ap(cells), 0);
                critical(cells);
                lock_release(&Ap(cells), 0);
            }
            rounds_ap
        });
    }

    #[test]
    fn loom_one_round_each() {
        model(1, 1);
    }

    /// The CPU side gives up (`lock_try_acquire` with a budget of `spins` waiting iterations)
    /// while the firmware takes the lock once: when it gives up it must leave the firmware able
    /// to finish (loom reports a firmware spinning for ever, e.g. waiting for a turn the CPU
    /// kept), and when it does take the lock the sections never overlap.
    fn model_giving_up(spins: u32) {
        run(1, move |cells| {
            let taken = lock_try_acquire(&Ap(cells), 0, Some(spins));
            if taken {
                critical(cells);
                lock_release(&Ap(cells), 0);
            }
            u32::from(taken)
        });
    }

    #[test]
    fn loom_giving_up_at_once() {
        model_giving_up(0);
    }

    #[test]
    fn loom_giving_up_after_a_wait() {
        model_giving_up(1);
    }

    #[test]
    fn loom_two_rounds_each() {
        model(2, 2);
    }

    /// The model can fail: without the full fence after raising the flag, both parties can read
    /// the other's flag as 0 (store buffering) and enter together, and loom must find it.
    #[test]
    fn loom_finds_a_missing_fence() {
        struct NoFence<'a>(Ap<'a>);
        impl LockCells for NoFence<'_> {
            fn set_mine(&self, v: u8, o: std::sync::atomic::Ordering) {
                self.0.set_mine(v, o)
            }
            fn theirs(&self) -> u8 {
                self.0.theirs()
            }
            fn turn(&self) -> u32 {
                self.0.turn()
            }
            fn set_turn(&self, v: u32) {
                self.0.set_turn(v)
            }
            fn full_fence(&self) {}
            fn relax(&self) {
                self.0.relax()
            }
        }
        let found = std::panic::catch_unwind(|| {
            let mut builder = loom::model::Builder::new();
            builder.preemption_bound = Some(3);
            builder.check(|| {
                let cells = Arc::new(Cells::default());
                let fw = {
                    let cells = cells.clone();
                    loom::thread::spawn(move || {
                        fw_lock(&cells);
                        critical(&cells);
                        fw_unlock(&cells);
                    })
                };
                lock_acquire(&NoFence(Ap(&cells)), 0);
                critical(&cells);
                lock_release(&NoFence(Ap(&cells)), 0);
                fw.join().unwrap();
            });
        });
        let payload = found.expect_err("loom did not catch the missing fence");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("Concurrent write accesses"), "{msg}");
    }
}

fn region() -> u64 {
    sim::reserve_region(1 << 14).unwrap()
}

/// `Handoff::new` over a region of [`region`] (or inside it, or not memory at all).
fn handoff_at(phys: u64, size: u64) -> Result<Handoff, kernel::error::Error> {
    // SAFETY: The address is in a region reserved for this test alone (or in a hole, which
    // nothing uses), which only the handoff object and this test's firmware thread touch.
    unsafe { Handoff::new(phys, size) }
}

/// A handoff region with a firmware that behaves as `knobs` says, past the handshake.
fn handshaken(knobs: FwKnobs) -> (u64, Firmware, Handoff) {
    let phys = region();
    let fw = Firmware::start(phys, knobs, None);
    let handoff = handoff_at(phys, 1 << 14).unwrap();
    handoff.init().unwrap();
    (phys, fw, handoff)
}

#[test]
fn stress_against_the_firmware_thread() {
    let (_, fw, handoff) = handshaken(FwKnobs::default());
    let checker = Arc::new(CsChecker::default());
    let rounds = 20_000;
    let done = fw.contend(rounds, checker.clone());
    for _ in 0..rounds {
        let guard = handoff.lock().unwrap();
        checker.enter(0);
        drop(guard);
    }
    done.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        checker
            .violations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        checker.total.load(std::sync::atomic::Ordering::Relaxed),
        2 * rounds
    );
}

#[test]
fn init_times_out_when_the_firmware_never_comes_up() {
    let phys = region();
    let _fw = Firmware::start(
        phys,
        FwKnobs {
            boots: false,
            ..FwKnobs::default()
        },
        None,
    );
    let handoff = handoff_at(phys, 1 << 14).unwrap();
    let t = Instant::now();
    assert_eq!(handoff.init(), Err(EIO));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(990),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(kernel::print::take_log()
        .iter()
        .any(|l| l.contains("did not answer")));
}

#[test]
fn init_waits_for_a_slow_firmware() {
    let phys = region();
    let _fw = Firmware::start(
        phys,
        FwKnobs {
            boot_delay: Duration::from_millis(300),
            ..FwKnobs::default()
        },
        None,
    );
    let handoff = handoff_at(phys, 1 << 14).unwrap();
    let t = Instant::now();
    assert_eq!(handoff.init(), Ok(()));
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn region_checks() {
    let phys = region();
    assert_eq!(handoff_at(phys + 0x40, 1 << 14).err(), Some(EINVAL));
    assert_eq!(
        handoff_at(phys, HANDOFF_SIZE as u64 - 8).err(),
        Some(EINVAL)
    );
    assert!(handoff_at(phys, HANDOFF_SIZE as u64).is_ok());
    // Not RAM: memremap refuses.
    assert_eq!(handoff_at(sim::HOLE.0, 1 << 14).err(), Some(ENOMEM));
    let log = kernel::print::take_log();
    assert!(log
        .iter()
        .any(|l| l.contains("handoff") && l.contains("aligned")));
    assert!(log.iter().any(|l| l.contains("at least")));
}

#[test]
fn flush_state_machine_reports_unexpected_states() {
    let (phys, fw, handoff) = handshaken(FwKnobs::default());
    let state = |slot: usize| {
        let mut b = [0u8; 8];
        sim::read_phys(phys + 0x20 + 0x18 * slot as u64, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let set_state = |slot: usize, v: u64| {
        sim::write_phys(phys + 0x20 + 0x18 * slot as u64, &v.to_le_bytes()).unwrap();
    };
    // The normal path: 0 -> 1 (us) -> 2 (firmware) -> 0 (us).
    handoff.begin_flush(5, 0x10_0000, 0x8000).unwrap();
    assert_eq!(state(5), 1);
    set_state(5, 2);
    handoff.end_flush(5, false).unwrap();
    assert_eq!(state(5), 0);
    // Busy slot: refuse to post over it.
    set_state(KERNEL_FLUSH_SLOT, 1);
    assert_eq!(handoff.begin_flush(KERNEL_FLUSH_SLOT, 0, 0x4000), Err(EIO));
    // The wait timed out with the request unanswered (still 1): error, and the slot stays
    // requested, since the firmware may still process it; posting over it is refused until it
    // has.
    assert_eq!(handoff.end_flush(KERNEL_FLUSH_SLOT, true), Err(EIO));
    assert_eq!(state(KERNEL_FLUSH_SLOT), 1);
    assert_eq!(handoff.begin_flush(KERNEL_FLUSH_SLOT, 0, 0x4000), Err(EIO));
    assert_eq!(state(KERNEL_FLUSH_SLOT), 1);
    // Its late answer frees the slot for the next request.
    set_state(KERNEL_FLUSH_SLOT, 2);
    handoff.begin_flush(KERNEL_FLUSH_SLOT, 0, 0x4000).unwrap();
    assert_eq!(state(KERNEL_FLUSH_SLOT), 1);
    set_state(KERNEL_FLUSH_SLOT, 2);
    handoff.end_flush(KERNEL_FLUSH_SLOT, true).unwrap();
    assert_eq!(state(KERNEL_FLUSH_SLOT), 0);
    // The firmware answered (or never got the message) without marking it done: it will not
    // touch the request any more, so the slot is reset.
    handoff.begin_flush(KERNEL_FLUSH_SLOT, 0, 0x4000).unwrap();
    assert_eq!(handoff.end_flush(KERNEL_FLUSH_SLOT, false), Err(EIO));
    assert_eq!(state(KERNEL_FLUSH_SLOT), 0);
    // Garbage: the firmware answered, wrongly: error, slot reset, whether the wait timed out
    // or not.
    handoff.begin_flush(7, 0, 0x4000).unwrap();
    set_state(7, 9);
    assert_eq!(handoff.end_flush(7, true), Err(EIO));
    assert_eq!(state(7), 0);
    assert_eq!(handoff.begin_flush(65, 0, 0x4000), Err(EINVAL));
    let log = kernel::print::take_log();
    assert!(log.iter().any(|l| l.contains("flush slot 64 in state 1")));
    assert!(log
        .iter()
        .any(|l| l.contains("flush slot 64: the firmware has not answered")));
    assert!(log.iter().any(|l| l.contains("flush slot 7 in state 9")));
    drop(fw);
}

/// A firmware that dies holding its side of the lock: `lock` gives up with `EIO` after
/// `LOCK_TIMEOUT` instead of spinning for ever, then fails at once while the firmware holds it,
/// and takes it again once the firmware lets go.
#[test]
fn a_firmware_dead_with_the_lock_fails_lock_instead_of_hanging() {
    let (phys, _fw, handoff) = handshaken(FwKnobs::default());
    drop(handoff.lock().unwrap());
    // lock_fw (0x011) raised, for good.
    sim::write_phys(phys + 0x11, &[1]).unwrap();
    let t = Instant::now();
    assert_eq!(handoff.lock().err(), Some(EIO));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "gave up after {waited:?}");
    // Taken for dead: no second wait, and our side of the lock is down.
    let t = Instant::now();
    assert_eq!(handoff.lock().err(), Some(EIO));
    assert!(t.elapsed() < Duration::from_millis(900), "waited again");
    assert_eq!(
        sim::read_phys_u64(phys + 0x10).unwrap() & 0xff,
        0,
        "lock_ap left raised"
    );
    // The firmware lets go: the lock is taken again.
    sim::write_phys(phys + 0x11, &[0]).unwrap();
    drop(handoff.lock().unwrap());
    drop(handoff.lock().unwrap());
}

/// A slow firmware is not a dead one: a hold shorter than the timeout is waited for, and one
/// longer gives `EIO` once, after which the lock is taken again as soon as the firmware lets go.
#[test]
fn a_slow_firmware_is_waited_for() {
    let hold = |ms| {
        let (phys, fw, handoff) = handshaken(FwKnobs {
            lock_hold: Duration::from_millis(ms),
            ..FwKnobs::default()
        });
        let done = fw.contend(1, Arc::new(CsChecker::default()));
        // Until the firmware has raised its flag (0x011) for its hold.
        while sim::read_phys_u64(phys + 0x10).unwrap() >> 8 & 0xff == 0 {
            std::thread::yield_now();
        }
        let t = Instant::now();
        let r = handoff.lock().map(drop);
        let waited = t.elapsed();
        done.recv_timeout(Duration::from_secs(60)).unwrap();
        (r, waited, handoff, fw)
    };
    let (r, waited, _, _) = hold(300);
    assert_eq!(r, Ok(()), "a 300 ms hold is waited for");
    assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
    let (r, _, handoff, _fw) = hold(1500);
    assert_eq!(r, Err(EIO), "a 1.5 s hold is not");
    drop(handoff.lock().unwrap());
}
