// SPDX-License-Identifier: GPL-2.0

//! The simulated GPU firmware: a thread on the other side of the handoff region.
//!
//! It follows the protocol of `shared/docs/uat-hardware.md` with its own code (raw offsets, its
//! own copy of the lock with `turn = 0`): it answers the handshake once the CPU's magic is
//! there, sets `cur_slot` under the lock while it "runs" a context, and answers cache-flush
//! messages by checking the request in its flush slot and setting the state to 2. Knobs make it
//! slow, absent, greedy with the lock, or wrong in its answers, for the driver's error paths.

use crate::gpu::Gpu;
use asahi::handoff::{FlushMsg, FwChannel, KERNEL_FLUSH_SLOT, MAGIC};
use kernel::error::{code::*, Result};
use kernel::io::mem::{MemRemap, MemRemapType};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const OFF_MAGIC_AP: usize = 0x00;
const OFF_MAGIC_FW: usize = 0x08;
const OFF_LOCK_AP: usize = 0x10;
const OFF_LOCK_FW: usize = 0x11;
const OFF_TURN: usize = 0x14;
const OFF_CUR_SLOT: usize = 0x18;
const OFF_FLUSH: usize = 0x20;
const FLUSH_STRIDE: usize = 0x18;
const FLUSH_SLOTS: u32 = 65;

/// How the firmware answers a flush request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushAnswer {
    /// As it should: state 2.
    Done,
    /// Leaves the state alone (the driver finds 1).
    Ignore,
    /// Writes this value as the state.
    Garbage(u64),
}

/// The firmware's behaviour.
#[derive(Clone, Copy, Debug)]
pub struct FwKnobs {
    /// Whether it ever comes up.
    pub boots: bool,
    /// Delay before it answers the handshake.
    pub boot_delay: Duration,
    /// Delay before it answers each flush message.
    pub answer_delay: Duration,
    /// How long it keeps the lock when it switches contexts.
    pub lock_hold: Duration,
    /// How it answers flush requests.
    pub answer: FlushAnswer,
}

impl Default for FwKnobs {
    fn default() -> Self {
        FwKnobs {
            boots: true,
            boot_delay: Duration::ZERO,
            answer_delay: Duration::ZERO,
            lock_hold: Duration::ZERO,
            answer: FlushAnswer::Done,
        }
    }
}

/// A flush the firmware performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRecord {
    /// The flush slot.
    pub slot: u32,
    /// The request's address.
    pub addr: u64,
    /// The request's size in bytes.
    pub size: u64,
}

/// What the firmware saw.
#[derive(Clone, Debug, Default)]
pub struct FwLog {
    /// Flushes performed.
    pub flushes: Vec<FlushRecord>,
    /// Requests that did not follow the protocol.
    pub protocol_errors: Vec<String>,
    /// Times it took the lock.
    pub lock_rounds: u64,
}

/// Checks mutual exclusion: both parties enter their critical sections through it.
#[derive(Default)]
pub struct CsChecker {
    inside: AtomicU32,
    /// Incremented with a separate load and store: lost updates reveal overlapping sections.
    pub total: AtomicU64,
    /// Times a party found the other inside.
    pub violations: AtomicU64,
}

impl CsChecker {
    /// The critical section's body.
    pub fn enter(&self, party: u32) {
        if self.inside.swap(party + 1, Ordering::Relaxed) != 0 {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        let v = self.total.load(Ordering::Relaxed);
        for _ in 0..20 {
            std::hint::spin_loop();
        }
        self.total.store(v + 1, Ordering::Relaxed);
        if self.inside.swap(0, Ordering::Relaxed) != party + 1 {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Cmd {
    Flush(FlushMsg, Sender<Result>),
    Run(u32, Sender<()>),
    Contend(u64, Arc<CsChecker>, Sender<()>),
    Stop,
}

struct Regs {
    map: MemRemap,
}

impl Regs {
    fn at<T>(&self, off: usize) -> &T {
        // SAFETY: Offsets are within the 0x648-byte layout the mapping covers, aligned for `T`
        // (an atomic); the memory is shared with the driver, hence atomics only.
        unsafe { &*(self.map.as_ptr().add(off) as *const T) }
    }
    fn u64(&self, off: usize) -> &AtomicU64 {
        self.at(off)
    }
    fn lock(&self) {
        let mine: &AtomicU8 = self.at(OFF_LOCK_FW);
        let theirs: &AtomicU8 = self.at(OFF_LOCK_AP);
        let turn: &AtomicU32 = self.at(OFF_TURN);
        mine.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        while theirs.load(Ordering::Relaxed) != 0 {
            if turn.load(Ordering::Relaxed) != 1 {
                mine.store(0, Ordering::Relaxed);
                while turn.load(Ordering::Relaxed) != 1 {
                    std::hint::spin_loop();
                }
                mine.store(1, Ordering::Relaxed);
                fence(Ordering::SeqCst);
            }
            std::hint::spin_loop();
        }
        fence(Ordering::SeqCst);
    }
    fn unlock(&self) {
        self.at::<AtomicU32>(OFF_TURN).store(0, Ordering::Relaxed);
        self.at::<AtomicU8>(OFF_LOCK_FW).store(0, Ordering::Release);
    }
}

/// The running firmware; stops on drop.
pub struct Firmware {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<FwLog>>,
}

impl Firmware {
    /// Starts the firmware on the handoff region at `handoff`; with `gpu`, it also checks the
    /// page tables of each range it is asked to flush (see [`flush`]).
    pub fn start(handoff: u64, knobs: FwKnobs, gpu: Option<Arc<Gpu>>) -> Firmware {
        // SAFETY: The SoC's `handoff` region is reserved memory, for the firmware and the driver.
        let map = unsafe { MemRemap::new(handoff, 0x648, MemRemapType::WriteCombine) }
            .expect("the handoff region maps");
        let regs = Regs { map };
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(FwLog::default()));
        let thread_log = log.clone();
        let thread = std::thread::Builder::new()
            .name("agx-firmware".into())
            .spawn(move || run(regs, knobs, rx, thread_log, gpu))
            .expect("spawn the firmware thread");
        Firmware {
            tx,
            thread: Some(thread),
            log,
        }
    }

    /// The driver's channel to this firmware.
    pub fn port(&self) -> FwPort {
        FwPort {
            tx: self.tx.clone(),
        }
    }

    /// Makes the firmware switch to context `slot` (0 or `0xffff_ffff`: none) under the lock.
    pub fn run_context(&self, slot: u32) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Cmd::Run(slot, tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Makes the firmware enter `checker`'s critical section `rounds` times under the lock;
    /// returns a receiver that fires when it is done.
    pub fn contend(&self, rounds: u64, checker: Arc<CsChecker>) -> Receiver<()> {
        let (tx, rx) = mpsc::channel();
        let _ = self.tx.send(Cmd::Contend(rounds, checker, tx));
        rx
    }

    /// What the firmware saw so far.
    pub fn log(&self) -> FwLog {
        self.log.lock().unwrap().clone()
    }

    /// The protocol errors logged so far, drained.
    pub fn take_protocol_errors(&self) -> Vec<String> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut log.protocol_errors)
    }
}

impl Firmware {
    /// Stops the firmware thread (idempotent).
    pub fn stop(&mut self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Firmware {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    regs: Regs,
    knobs: FwKnobs,
    rx: Receiver<Cmd>,
    log: Arc<Mutex<FwLog>>,
    gpu: Option<Arc<Gpu>>,
) {
    let started = std::time::Instant::now();
    let mut up = false;
    loop {
        if !up && knobs.boots && started.elapsed() >= knobs.boot_delay {
            // Comes up once the CPU has announced itself.
            if regs.u64(OFF_MAGIC_AP).load(Ordering::Acquire) == MAGIC {
                regs.lock();
                regs.u64(OFF_MAGIC_FW).store(MAGIC, Ordering::Relaxed);
                regs.unlock();
                up = true;
            }
        }
        let cmd = match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(cmd) => cmd,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match cmd {
            Cmd::Stop => return,
            Cmd::Run(slot, done) => {
                regs.lock();
                regs.at::<AtomicU32>(OFF_CUR_SLOT)
                    .store(slot, Ordering::Relaxed);
                std::thread::sleep(knobs.lock_hold);
                regs.unlock();
                log.lock().unwrap().lock_rounds += 1;
                let _ = done.send(());
            }
            Cmd::Contend(rounds, checker, done) => {
                for _ in 0..rounds {
                    regs.lock();
                    checker.enter(1);
                    if !knobs.lock_hold.is_zero() {
                        std::thread::sleep(knobs.lock_hold);
                    }
                    regs.unlock();
                }
                log.lock().unwrap().lock_rounds += rounds;
                let _ = done.send(());
            }
            Cmd::Flush(msg, reply) => {
                if !up {
                    // A firmware that is not running answers nothing.
                    drop(reply);
                    continue;
                }
                std::thread::sleep(knobs.answer_delay);
                let _ = reply.send(flush(&regs, knobs, &msg, &log, gpu.as_deref()));
            }
        }
    }
}

/// Answers a cache-flush message. Besides the handoff's flush entry, it checks (given the GPU
/// to walk the tables with) the facts doc's sequence, remap uncached, flush, then unmap, in the
/// stricter form this driver keeps: it asks for a flush of each mapped run alone, so every page
/// of the range must be mapped, and not cached, in the context the slot names (context 0 for
/// the kernel VM's slot). A page unmapped before its flush, or still cached, is a protocol
/// error (as is a range past the top of the address space).
fn flush(
    regs: &Regs,
    knobs: FwKnobs,
    msg: &FlushMsg,
    log: &Mutex<FwLog>,
    gpu: Option<&Gpu>,
) -> Result {
    let mut log = log.lock().unwrap();
    if msg.slot >= FLUSH_SLOTS || msg.page_count == 0 {
        log.protocol_errors
            .push(format!("bad flush message {msg:?}"));
        return Err(EINVAL);
    }
    let base = OFF_FLUSH + FLUSH_STRIDE * msg.slot as usize;
    fence(Ordering::SeqCst);
    let state = regs.u64(base).load(Ordering::Acquire);
    let addr = regs.u64(base + 8).load(Ordering::Relaxed);
    let size = regs.u64(base + 16).load(Ordering::Relaxed);
    let want = (msg.page_count as u64) << 14;
    if state != 1 || addr != msg.addr || size != want {
        log.protocol_errors.push(format!(
            "flush slot {}: state {state} addr {addr:#x} size {size:#x} for message {msg:?}",
            msg.slot
        ));
        return Err(EINVAL);
    }
    if let Some(gpu) = gpu {
        let ctx = if msg.slot as usize == KERNEL_FLUSH_SLOT {
            0
        } else {
            msg.slot as usize
        };
        for i in 0..msg.page_count as u64 {
            let Some(va) = addr.checked_add(i << 14) else {
                log.protocol_errors
                    .push(format!("flush slot {}: range past the top", msg.slot));
                break;
            };
            match gpu.peek(ctx, va) {
                Ok(desc) if !cached(desc) => {}
                found => {
                    log.protocol_errors.push(format!(
                        "flush slot {}: page {va:#x} is not mapped uncached ({found:x?})",
                        msg.slot
                    ));
                    break;
                }
            }
        }
    }
    log.flushes.push(FlushRecord {
        slot: msg.slot,
        addr,
        size,
    });
    match knobs.answer {
        FlushAnswer::Done => regs.u64(base).store(2, Ordering::Release),
        FlushAnswer::Ignore => {}
        FlushAnswer::Garbage(v) => regs.u64(base).store(v, Ordering::Release),
    }
    Ok(())
}

/// The driver's end of the firmware's control channel.
pub struct FwPort {
    tx: Sender<Cmd>,
}

impl FwChannel for FwPort {
    fn flush_cache(&self, msg: &FlushMsg) -> Result {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::Flush(*msg, tx)).map_err(|_| EIO)?;
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => r.map_err(|_| EIO),
            Err(RecvTimeoutError::Timeout) => Err(ETIMEDOUT),
            Err(RecvTimeoutError::Disconnected) => Err(EIO),
        }
    }
}

/// Whether a leaf descriptor maps cached, non-coherent memory for the firmware (the facts doc:
/// AP other than GPU-only, AttrIndex 0): what needs a flush before it goes.
fn cached(desc: u64) -> bool {
    (desc >> 6) & 3 != 2 && (desc >> 2) & 7 == 0
}
