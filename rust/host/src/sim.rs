// SPDX-License-Identifier: GPL-2.0

//! Simulated physical memory: the host's stand-in for DRAM, `struct page` and the page allocator.
//!
//! Layout (physical addresses):
//!
//! | range                              | what                                   |
//! |------------------------------------|----------------------------------------|
//! | `0x8_0000_0000 .. 0x8_4000_0000`   | RAM bank 0 (1 GiB), page allocator     |
//! | `0x8_4000_0000 .. 0x8_5000_0000`   | hole: not RAM, `borrow_phys` fails     |
//! | `0x8_5000_0000 .. 0x8_7c00_0000`   | RAM bank 1 (704 MiB), page allocator   |
//! | `0x8_7c00_0000 .. 0x8_8000_0000`   | RAM bank 1, reserved-memory pool       |
//!
//! Anything else (MMIO at `0x2_0000_0000`, the QEMU UART at `0x900_0000`) is not RAM either.
//! The backing store is one lazily committed host allocation, so untouched pages cost nothing.
//!
//! The allocator hands pages out in a fixed pseudo-random order, so consecutive allocations are
//! not physically contiguous (as on a long-running machine), and the order is the same on every
//! run. Freed pages are poisoned, so a use after free reads garbage instead of stale data.
//!
//! Accounting and fault injection are per thread: tests run in parallel threads of one process,
//! and each test sees only its own allocations and its own injected failures.

use crate::alloc::AllocError;
use crate::io::PhysAddr;
use crate::page::{PAGE_SHIFT, PAGE_SIZE};
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// Physical base of simulated DRAM (Apple SoCs start DRAM here).
pub const RAM_BASE: PhysAddr = 0x8_0000_0000;
/// Size of the span covered by the simulated memory map (banks and the hole between them).
pub const RAM_SPAN: u64 = 2 << 30;
/// RAM bank 0.
pub const BANK0: (PhysAddr, u64) = (RAM_BASE, 1 << 30);
/// The hole between the banks: physical addresses that are not RAM.
pub const HOLE: (PhysAddr, u64) = (RAM_BASE + (1 << 30), 256 << 20);
/// RAM bank 1 (its top [`RESERVED_POOL`] is not given to the page allocator).
pub const BANK1: (PhysAddr, u64) = (RAM_BASE + (1280 << 20), 768 << 20);
/// Reserved-memory pool at the top of bank 1, carved by [`reserve_region`].
pub const RESERVED_POOL: (PhysAddr, u64) = (RAM_BASE + (1984 << 20), 64 << 20);
/// A physical address that is MMIO, not RAM (an AGX register block).
pub const MMIO_ADDR: PhysAddr = 0x2_0000_0000;

const NPAGES: usize = (RAM_SPAN >> PAGE_SHIFT) as usize;
const POISON: u8 = 0x6b;

#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PageState {
    Hole = 0,
    Free = 1,
    Allocated = 2,
    Reserved = 3,
}

pub(crate) struct Ram {
    /// The simulated `struct page` array (one entry per page of the span).
    pub(crate) memmap: Box<[StructPage]>,
    /// Backing store of the span, `RAM_SPAN` bytes, page aligned.
    pub(crate) base: *mut u8,
    free: Mutex<Vec<u32>>,
    reserved: Mutex<Vec<(u64, u64)>>,
}

// SAFETY: `base` points to memory that lives for the whole process; all access to it goes through
// raw pointers whose users follow the page ownership rules.
unsafe impl Send for Ram {}
// SAFETY: See above; the mutable allocator state is behind mutexes.
unsafe impl Sync for Ram {}

static RAM: OnceLock<Ram> = OnceLock::new();

fn in_range(pa: u64, (base, size): (u64, u64)) -> bool {
    pa >= base && pa - base < size
}

#[inline]
pub(crate) fn ram() -> &'static Ram {
    RAM.get_or_init(|| {
        // A small alignment makes `alloc_zeroed` a `calloc`, which maps fresh zero pages lazily;
        // with the page alignment it would be `aligned_alloc` plus a 2 GiB `memset`. The base is
        // aligned by hand inside the one extra page. Never freed: the RAM lives as long as the
        // process.
        let layout = Layout::from_size_align(RAM_SPAN as usize + PAGE_SIZE, 16).unwrap();
        // SAFETY: The layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!raw.is_null(), "cannot reserve the simulated RAM");
        // SAFETY: Less than one page past `raw`, inside the allocation.
        let base = unsafe { raw.add(raw.align_offset(PAGE_SIZE)) };
        let memmap: Box<[StructPage]> = (0..NPAGES)
            .map(|i| {
                let pa = RAM_BASE + ((i as u64) << PAGE_SHIFT);
                let state = if in_range(pa, RESERVED_POOL) {
                    PageState::Reserved
                } else if in_range(pa, BANK0) || in_range(pa, BANK1) {
                    PageState::Free
                } else {
                    PageState::Hole
                };
                StructPage::new(state)
            })
            .collect();
        let mut free: Vec<u32> = (0..NPAGES as u32)
            .filter(|&i| memmap[i as usize].state() == PageState::Free)
            .collect();
        // A fixed permutation: pages come out scattered, identically on every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..free.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            free.swap(i, (x % (i as u64 + 1)) as usize);
        }
        Ram {
            memmap,
            base,
            free: Mutex::new(free),
            reserved: Mutex::new(vec![RESERVED_POOL]),
        }
    })
}

impl Ram {
    #[inline]
    pub(crate) fn index_of(&self, pa: PhysAddr) -> Option<usize> {
        if pa < RAM_BASE || pa - RAM_BASE >= RAM_SPAN {
            return None;
        }
        Some(((pa - RAM_BASE) >> PAGE_SHIFT) as usize)
    }

    #[inline]
    pub(crate) fn page_ptr(&self, index: usize) -> *mut u8 {
        // SAFETY: Callers pass indices below `NPAGES`, so the offset stays inside the span.
        unsafe { self.base.add(index * PAGE_SIZE) }
    }

    /// Takes a page off the free list; `account` charges it to this thread's memory cgroup (see
    /// [`set_charge_limit`]) until it is freed.
    pub(crate) fn alloc(&self, zero: bool, account: bool) -> Result<usize, AllocError> {
        fault_hook()?;
        if account
            && CHARGE_LIMIT
                .with(|l| l.get())
                .is_some_and(|max| charged() >= max)
        {
            return Err(AllocError);
        }
        let index = self.free.lock().unwrap().pop().ok_or(AllocError)? as usize;
        self.memmap[index].set_state(PageState::Allocated);
        self.memmap[index].charged.store(account, Ordering::Relaxed);
        let fill = if zero { 0 } else { POISON };
        // SAFETY: The page was just taken off the free list, nobody else references it.
        unsafe { core::ptr::write_bytes(self.page_ptr(index), fill, PAGE_SIZE) };
        STATS.with(|s| {
            let mut st = s.get();
            st.live += 1;
            st.charged += i64::from(account);
            st.allocs += 1;
            st.peak = st.peak.max(st.live);
            s.set(st);
        });
        Ok(index)
    }

    pub(crate) fn free(&self, index: usize) {
        let page = &self.memmap[index];
        let state = page.state();
        assert_eq!(
            state,
            PageState::Allocated,
            "freeing page {:#x} that is not allocated",
            RAM_BASE + ((index as u64) << PAGE_SHIFT)
        );
        if POISON_ON_FREE.with(|p| p.get()) {
            // SAFETY: The caller owned the page and gives it up now.
            unsafe { core::ptr::write_bytes(self.page_ptr(index), POISON, PAGE_SIZE) };
        }
        page.set_state(PageState::Free);
        let charged = page.charged.swap(false, Ordering::Relaxed);
        self.free.lock().unwrap().push(index as u32);
        STATS.with(|s| {
            let mut st = s.get();
            st.live -= 1;
            st.charged -= i64::from(charged);
            st.frees += 1;
            s.set(st);
        });
    }
}

/// Allocation counters of the calling thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Pages allocated and not yet freed by this thread.
    pub live: i64,
    /// Highest `live` seen since the last [`reset_peak`].
    pub peak: i64,
    /// Pages allocated with `GFP_KERNEL_ACCOUNT` (charged to the memory cgroup of the task that
    /// allocated them, in the kernel) and not yet freed, by this thread.
    pub charged: i64,
    /// Page allocations that succeeded.
    pub allocs: u64,
    /// Pages freed.
    pub frees: u64,
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    /// Fail the allocation when the countdown reaches zero (then stop failing).
    Nth(u64),
    /// Fail each allocation with probability `threshold / 2^32`, from a seeded generator.
    Random {
        threshold: u32,
        state: u64,
    },
}

thread_local! {
    static STATS: Cell<PageStats> = const {
        Cell::new(PageStats { live: 0, peak: 0, charged: 0, allocs: 0, frees: 0 })
    };
    static CHARGE_LIMIT: Cell<Option<i64>> = const { Cell::new(None) };
    static FAULT: Cell<Fault> = const { Cell::new(Fault::None) };
    static ATTEMPTS: Cell<u64> = const { Cell::new(0) };
    static POISON_ON_FREE: Cell<bool> = const { Cell::new(true) };
    static BORROW_FAULT: RefCell<Option<BorrowFault>> = const { RefCell::new(None) };
}

/// A refusal of `Page::borrow_phys` to come ([`fail_nth_borrow`]): how many borrows to let
/// through first, and what to run just before refusing.
struct BorrowFault {
    skip: u64,
    before: Box<dyn FnOnce()>,
}

/// This thread's page counters.
pub fn page_stats() -> PageStats {
    ram();
    STATS.with(|s| s.get())
}

fn charged() -> i64 {
    STATS.with(|s| s.get().charged)
}

/// Models the `memory.max` of this thread's memory cgroup, in pages: once `limit` pages are
/// charged ([`PageStats::charged`]), an allocation with `GFP_KERNEL_ACCOUNT` fails, as the
/// kernel's charge fails once reclaim cannot make room. `None` (the default) sets no limit.
///
/// Two simplifications: only pages are charged (not `kmalloc` memory such as `KVec`s), and a
/// page is uncharged from the counters of the thread that frees it, which the tests keep the
/// one that allocated it.
pub fn set_charge_limit(limit: Option<i64>) {
    CHARGE_LIMIT.with(|l| l.set(limit));
}

/// Restarts the peak counter from the current number of live pages.
pub fn reset_peak() {
    STATS.with(|s| {
        let mut st = s.get();
        st.peak = st.live;
        s.set(st);
    });
}

/// Allocation attempts (pages and kmalloc) this thread made, failed ones included.
pub fn alloc_attempts() -> u64 {
    ATTEMPTS.with(|a| a.get())
}

/// Makes the `n`-th allocation attempt from now (0 = the next one) fail, once.
pub fn fail_nth_alloc(n: u64) {
    FAULT.with(|f| f.set(Fault::Nth(n)));
}

/// Makes every allocation attempt fail with probability `p`, drawn from a generator seeded with
/// `seed` (the same seed gives the same failures).
pub fn fail_with_probability(p: f64, seed: u64) {
    let threshold = (p.clamp(0.0, 1.0) * u32::MAX as f64) as u32;
    FAULT.with(|f| {
        f.set(Fault::Random {
            threshold,
            state: seed | 1,
        })
    });
}

/// Makes the `n`-th `Page::borrow_phys` from now on this thread (0 = the next one) refuse its
/// page, once, after running `before`: a table page vanishing under an operation that walks
/// its tables, which only a driver bug can cause. `before` runs inside the operation at that
/// point, for a test to look at what it has written so far (for instance, to let the simulated
/// GPU walk it).
pub fn fail_nth_borrow(n: u64, before: impl FnOnce() + 'static) {
    BORROW_FAULTS_ARMED.store(true, Ordering::Relaxed);
    BORROW_FAULT.with(|f| {
        *f.borrow_mut() = Some(BorrowFault {
            skip: n,
            before: Box::new(before),
        })
    });
}

/// Stops injecting allocation and borrow failures on this thread.
pub fn clear_faults() {
    FAULT.with(|f| f.set(Fault::None));
    BORROW_FAULT.with(|f| f.borrow_mut().take());
}

/// Whether any thread ever armed [`fail_nth_borrow`]: until then `Page::borrow_phys` (on every
/// table walk, and timed by `make bench`) does not look at the thread-local state.
static BORROW_FAULTS_ARMED: AtomicBool = AtomicBool::new(false);

/// Called by `Page::borrow_phys`: whether to refuse this borrow ([`fail_nth_borrow`]).
#[inline]
pub(crate) fn borrow_hook() -> bool {
    BORROW_FAULTS_ARMED.load(Ordering::Relaxed) && borrow_fault_due()
}

#[cold]
fn borrow_fault_due() -> bool {
    let due = BORROW_FAULT.with(|f| {
        let mut f = f.borrow_mut();
        match f.as_mut() {
            Some(fault) if fault.skip > 0 => {
                fault.skip -= 1;
                None
            }
            _ => f.take(),
        }
    });
    // Run outside the borrow of the cell: `before` may borrow pages itself.
    if let Some(fault) = due {
        (fault.before)();
        return true;
    }
    false
}

/// Whether freed pages are filled with poison on this thread (on by default; benchmarks turn it
/// off because the real allocator does not do it).
pub fn set_poison_on_free(on: bool) {
    POISON_ON_FREE.with(|p| p.set(on));
}

fn fault_hook() -> Result<(), AllocError> {
    ATTEMPTS.with(|a| a.set(a.get() + 1));
    FAULT.with(|f| match f.get() {
        Fault::None => Ok(()),
        Fault::Nth(0) => {
            f.set(Fault::None);
            Err(AllocError)
        }
        Fault::Nth(n) => {
            f.set(Fault::Nth(n - 1));
            Ok(())
        }
        Fault::Random {
            threshold,
            mut state,
        } => {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f.set(Fault::Random { threshold, state });
            if (state >> 32) as u32 <= threshold && threshold != 0 {
                Err(AllocError)
            } else {
                Ok(())
            }
        }
    })
}

/// Called by `KVec` / `KBox` before each real allocation (the kmalloc failure point).
pub(crate) fn kmalloc_hook() -> Result<(), AllocError> {
    fault_hook()
}

/// Carves a physically contiguous, page-aligned region out of the reserved-memory pool, as the
/// bootloader does for `reserved-memory` nodes. It is RAM (pages can be borrowed by physical
/// address) but never belongs to the page allocator. Returns `None` when the pool is exhausted.
pub fn reserve_region(size: u64) -> Option<PhysAddr> {
    let size = size
        .checked_next_multiple_of(PAGE_SIZE as u64)?
        .max(PAGE_SIZE as u64);
    let ram = ram();
    let mut pool = ram.reserved.lock().unwrap();
    let slot = pool.iter().position(|&(_, len)| len >= size)?;
    let (base, len) = pool[slot];
    if len == size {
        pool.remove(slot);
    } else {
        pool[slot] = (base + size, len - size);
    }
    // SAFETY: The region was in the pool, so nothing else uses it; it lies inside the span.
    unsafe { core::ptr::write_bytes(ram.page_ptr(ram.index_of(base).unwrap()), 0, size as usize) };
    Some(base)
}

/// Carves the region `base .. base + size` (page aligned) out of the reserved-memory pool, as
/// the bootloader does for a `reserved-memory` node with a fixed `reg`. Returns `None` if any of
/// it is not free in the pool.
pub fn reserve_at(base: PhysAddr, size: u64) -> Option<()> {
    let page = PAGE_SIZE as u64;
    if !base.is_multiple_of(page) || size == 0 || !size.is_multiple_of(page) {
        return None;
    }
    let end = base.checked_add(size)?;
    let ram = ram();
    let mut pool = ram.reserved.lock().unwrap();
    let slot = pool.iter().position(|&(b, l)| b <= base && end <= b + l)?;
    let (b, l) = pool.remove(slot);
    if b < base {
        pool.push((b, base - b));
    }
    if end < b + l {
        pool.push((end, b + l - end));
    }
    pool.sort_unstable();
    // SAFETY: The region was in the pool, so nothing else uses it; it lies inside the span.
    unsafe { core::ptr::write_bytes(ram.page_ptr(ram.index_of(base).unwrap()), 0, size as usize) };
    Some(())
}

/// Gives a region from [`reserve_region`] back to the pool.
///
/// # Safety
///
/// Nothing may use the region any more (no borrowed page, no table pointing into it).
pub unsafe fn unreserve_region(base: PhysAddr, size: u64) {
    let size = size
        .next_multiple_of(PAGE_SIZE as u64)
        .max(PAGE_SIZE as u64);
    let mut pool = ram().reserved.lock().unwrap();
    pool.push((base, size));
    pool.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(pool.len());
    for &(b, l) in pool.iter() {
        match merged.last_mut() {
            Some((mb, ml)) if *mb + *ml == b => *ml += l,
            _ => merged.push((b, l)),
        }
    }
    *pool = merged;
}

/// Whether `pa` is in simulated RAM, reserved regions included (what a device can reach).
pub fn is_ram(pa: PhysAddr) -> bool {
    let ram = ram();
    match ram.index_of(pa) {
        Some(i) => ram.memmap[i].state() != PageState::Hole,
        None => false,
    }
}

/// Whether `[first, last]` is all System RAM (`Some(true)`: pages the page allocator manages,
/// free or not), none of it (`Some(false)`: reserved carve-outs and holes), or partly
/// (`None`): `region_intersects()`'s answer for System RAM.
pub(crate) fn system_ram(first: PhysAddr, last: PhysAddr) -> Option<bool> {
    let ram = ram();
    let (mut yes, mut no) = (false, false);
    let mut pa = first & !(PAGE_SIZE as PhysAddr - 1);
    while pa <= last {
        let sys = ram.index_of(pa).is_some_and(|i| {
            matches!(
                ram.memmap[i].state(),
                PageState::Free | PageState::Allocated
            )
        });
        yes |= sys;
        no |= !sys;
        if yes && no {
            return None;
        }
        match pa.checked_add(PAGE_SIZE as PhysAddr) {
            Some(next) => pa = next,
            None => break,
        }
    }
    Some(yes)
}

/// Whether the page at `pa` is back in the page allocator (freed, not handed out again): what a
/// device that still reaches it through a stale pointer would read is no one's.
pub fn is_free(pa: PhysAddr) -> bool {
    let ram = ram();
    match ram.index_of(pa) {
        Some(i) => ram.memmap[i].state() == PageState::Free,
        None => false,
    }
}

/// Whether the page at `pa` is currently owned by somebody through the page allocator.
pub fn is_allocated(pa: PhysAddr) -> bool {
    let ram = ram();
    match ram.index_of(pa) {
        Some(i) => ram.memmap[i].state() == PageState::Allocated,
        None => false,
    }
}

/// Reads physical memory (the device's view: no ownership needed). Returns `None` if any byte is
/// outside RAM.
pub fn read_phys(pa: PhysAddr, buf: &mut [u8]) -> Option<()> {
    let last = pa.checked_add(buf.len().max(1) as u64 - 1)?;
    if !is_ram(pa) || !is_ram(last) || ram_crosses_hole(pa, last) {
        return None;
    }
    let ram = ram();
    // SAFETY: Both ends are in RAM and no hole lies between them, so the whole range is inside the
    // backing store. Devices race with the CPU by nature; bytes are copied with no assumption.
    unsafe {
        core::ptr::copy_nonoverlapping(
            ram.base.add((pa - RAM_BASE) as usize),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    Some(())
}

/// Writes physical memory (the device's view). Returns `None` if any byte is outside RAM.
pub fn write_phys(pa: PhysAddr, buf: &[u8]) -> Option<()> {
    let last = pa.checked_add(buf.len().max(1) as u64 - 1)?;
    if !is_ram(pa) || !is_ram(last) || ram_crosses_hole(pa, last) {
        return None;
    }
    let ram = ram();
    // SAFETY: As in `read_phys`.
    unsafe {
        core::ptr::copy_nonoverlapping(
            buf.as_ptr(),
            ram.base.add((pa - RAM_BASE) as usize),
            buf.len(),
        )
    };
    Some(())
}

/// Reads a little-endian 64-bit word of physical memory atomically, as a device walking page
/// tables does.
pub fn read_phys_u64(pa: PhysAddr) -> Option<u64> {
    if !pa.is_multiple_of(8) || !is_ram(pa) {
        return None;
    }
    let ram = ram();
    // SAFETY: `pa` is 8-byte aligned RAM inside the backing store, which is aligned to a page.
    let word = unsafe { &*(ram.base.add((pa - RAM_BASE) as usize) as *const AtomicU64) };
    Some(u64::from_le(word.load(Ordering::Acquire)))
}

/// The host address of the simulated RAM at `first ..= last`, if all of it is RAM.
pub(crate) fn phys_to_host(first: PhysAddr, last: PhysAddr) -> Option<core::ptr::NonNull<u8>> {
    if last < first || !is_ram(first) || !is_ram(last) || ram_crosses_hole(first, last) {
        return None;
    }
    let ram = ram();
    // SAFETY: Both ends are in RAM with no hole between them: the offset is inside the span.
    core::ptr::NonNull::new(unsafe { ram.base.add((first - RAM_BASE) as usize) })
}

fn ram_crosses_hole(first: u64, last: u64) -> bool {
    first < HOLE.0 && last >= HOLE.0
}

use std::sync::atomic::AtomicU64;

/// An entry of the simulated memory map: what the host has of a `struct page`.
pub(crate) struct StructPage {
    state: AtomicU8,
    /// Whether the page is charged to a memory cgroup (the kernel's `page->memcg_data`): freeing
    /// it uncharges it (from the counters of the freeing thread, which in tests is the one that
    /// allocated it).
    charged: AtomicBool,
}

impl StructPage {
    fn new(state: PageState) -> Self {
        Self {
            state: AtomicU8::new(state as u8),
            charged: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(crate) fn state(&self) -> PageState {
        match self.state.load(Ordering::Acquire) {
            1 => PageState::Free,
            2 => PageState::Allocated,
            3 => PageState::Reserved,
            _ => PageState::Hole,
        }
    }

    #[inline]
    pub(crate) fn set_state(&self, state: PageState) {
        self.state.store(state as u8, Ordering::Release);
    }
}
