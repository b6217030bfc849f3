// SPDX-License-Identifier: GPL-2.0

//! The host `kernel` crate itself: page ownership, borrowing by physical address, accounting and
//! fault injection behave as the tests rely on.

use kernel::alloc::{flags::*, KVec};
use kernel::error::code::*;
use kernel::page::{Page, PAGE_SIZE};
use kernel::sim;
use std::sync::{Mutex, MutexGuard};
use uat_tests::leak::LeakCheck;

/// Taken by every test of this file that allocates: one looks at the state of a page it freed,
/// which another test's thread allocating meanwhile could take (the page allocator hands out
/// the last freed page first).
static ALLOCATOR: Mutex<()> = Mutex::new(());

/// Takes [`ALLOCATOR`] (a test that failed while holding it does not poison the others).
fn allocator() -> MutexGuard<'static, ()> {
    ALLOCATOR.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn alloc_free_accounting() {
    let _alone = allocator();
    let leak = LeakCheck::start();
    let before = sim::page_stats();
    let a = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
    let b = Page::alloc_page(GFP_KERNEL).unwrap();
    assert_eq!(leak.live_since(), 2);
    assert!(sim::is_allocated(a.phys()));
    assert_ne!(
        a.phys() + PAGE_SIZE as u64,
        b.phys(),
        "consecutive allocations are scattered"
    );
    let mut buf = [1u8; 64];
    // SAFETY: `buf` is 64 writable bytes.
    unsafe { a.read_raw(buf.as_mut_ptr(), PAGE_SIZE - 64, 64) }.unwrap();
    assert_eq!(buf, [0u8; 64], "__GFP_ZERO zeroes");
    // SAFETY: `buf` is 64 writable bytes.
    assert_eq!(
        unsafe { a.read_raw(buf.as_mut_ptr(), PAGE_SIZE - 63, 64) },
        Err(EINVAL)
    );
    let pa = b.phys();
    drop(b);
    assert!(!sim::is_allocated(pa));
    let mut poison = [0u8; 8];
    sim::read_phys(pa, &mut poison).unwrap();
    assert_eq!(poison, [0x6b; 8], "freed pages are poisoned");
    drop(a);
    leak.assert_clean();
    assert_eq!(sim::page_stats().allocs, before.allocs + 2);
}

#[test]
fn phys_round_trip_and_borrow() {
    let _alone = allocator();
    let leak = LeakCheck::start();
    let page = Page::alloc_page(GFP_KERNEL).unwrap();
    let phys = page.phys();
    let pa = Page::into_phys(page);
    assert_eq!(pa, phys);
    assert_eq!(pa % PAGE_SIZE as u64, 0);
    assert!(pa >= sim::RAM_BASE);
    assert!(sim::is_allocated(pa), "into_phys keeps the page allocated");
    {
        // SAFETY: The page is alive (leaked into `pa`) for the borrow.
        let borrowed = unsafe { Page::borrow_phys(pa) }.unwrap();
        assert_eq!(borrowed.phys(), pa);
        assert_eq!(borrowed.ref_count(), 1);
    }
    assert!(sim::is_allocated(pa), "a borrow does not free");
    // SAFETY: Not page aligned: refused before anything is read.
    assert!(unsafe { Page::borrow_phys(pa + 0x1234) }.is_none());
    // SAFETY: `pa` came from `into_phys` and is claimed once.
    let page = unsafe { Page::from_phys(pa) };
    assert_eq!(page.phys(), pa);
    assert_eq!(Page::ref_count_at(pa), Some(1));
    drop(page);
    leak.assert_clean();
    // A free page's count, read without borrowing it (the borrow needs it allocated).
    assert_eq!(Page::ref_count_at(pa), Some(0));
    assert_eq!(Page::ref_count_at(pa + 0x1234), None, "not page aligned");
    assert_eq!(
        Page::ref_count_at(sim::RAM_BASE - PAGE_SIZE as u64),
        None,
        "not RAM"
    );
}

#[test]
fn borrow_refuses_reserved_memory_holes_and_mmio() {
    let _alone = allocator();
    let reserved = sim::reserve_region(3 * PAGE_SIZE as u64).unwrap();
    for pa in [reserved, reserved + 2 * PAGE_SIZE as u64] {
        // SAFETY: Reserved memory, which cannot be hot-removed: refused (PageReserved, as in
        // the kernel).
        assert!(unsafe { Page::borrow_phys(pa) }.is_none(), "{pa:#x}");
    }
    assert!(
        sim::is_ram(reserved),
        "reserved memory is still RAM for devices"
    );
    // SAFETY: Nothing uses the region.
    unsafe { sim::unreserve_region(reserved, 3 * PAGE_SIZE as u64) };
    for pa in [sim::HOLE.0, sim::MMIO_ADDR, 0, !(PAGE_SIZE as u64 - 1)] {
        // SAFETY: No memory there (a hole, MMIO): refused.
        assert!(unsafe { Page::borrow_phys(pa) }.is_none(), "{pa:#x}");
    }
}

#[test]
fn kvec_insert_and_remove_within_capacity() {
    let _alone = allocator();
    let mut v: KVec<u32> = KVec::new();
    assert!(
        v.insert_within_capacity(0, 1).is_err(),
        "no room: no allocation"
    );
    v.reserve(3, GFP_KERNEL).unwrap();
    v.insert_within_capacity(0, 3).unwrap();
    v.insert_within_capacity(0, 1).unwrap();
    v.insert_within_capacity(1, 2).unwrap();
    assert_eq!(&v[..], &[1, 2, 3]);
    assert!(v.insert_within_capacity(5, 9).is_err(), "out of bounds");
    while v.len() < v.capacity() {
        v.insert_within_capacity(v.len(), 4).unwrap();
    }
    let cap = v.capacity();
    assert!(v.insert_within_capacity(1, 9).is_err(), "full");
    assert_eq!(v.capacity(), cap, "and it did not allocate");
    v.truncate(3);
    assert_eq!(v.remove(1).unwrap(), 2);
    assert!(v.remove(2).is_err());
    assert_eq!(&v[..], &[1, 3]);
}

#[test]
fn fault_injection_counts_pages_and_kmalloc() {
    let _alone = allocator();
    let leak = LeakCheck::start();
    sim::fail_nth_alloc(1);
    let a = Page::alloc_page(GFP_KERNEL).unwrap();
    assert!(Page::alloc_page(GFP_KERNEL).is_err());
    let b = Page::alloc_page(GFP_KERNEL).unwrap();
    sim::fail_nth_alloc(0);
    let mut v: KVec<u32> = KVec::new();
    assert!(v.push(1, GFP_KERNEL).is_err());
    assert!(v.push(1, GFP_KERNEL).is_ok());
    sim::fail_with_probability(1.0, 9);
    assert!(Page::alloc_page(GFP_KERNEL).is_err());
    sim::clear_faults();
    drop((a, b));
    leak.assert_clean();
}

#[test]
#[should_panic(expected = "not allocated")]
fn double_free_is_caught() {
    let _alone = allocator();
    let page = Page::alloc_page(GFP_KERNEL).unwrap();
    let pa = page.phys();
    drop(page);
    // SAFETY: Deliberately wrong: the simulated allocator must catch it.
    drop(unsafe { Page::from_phys(pa) });
}

#[test]
fn uapi_twins_have_the_headers_sizes() {
    use asahi::uapi_layout::*;
    use core::mem::{offset_of, size_of};
    // Sizes and a few offsets as include/uapi/drm/asahi_drm.h lays them out (all naturally
    // aligned, no padding): the kernel build checks every field against its bindings.
    assert_eq!(
        size_of::<ParamsGlobal>(),
        8 + 8 * 4 + 64 * 8 + 3 * 8 + 2 * 4 + 8
    );
    assert_eq!(offset_of!(ParamsGlobal, vm_start), 8 + 8 * 4 + 64 * 8);
    assert_eq!(size_of::<GetParams>(), 24);
    assert_eq!(size_of::<GetTime>(), 16);
    assert_eq!(size_of::<VmCreate>(), 24);
    assert_eq!(size_of::<VmDestroy>(), 8);
    assert_eq!(size_of::<GemCreate>(), 24);
    assert_eq!(size_of::<GemMmapOffset>(), 16);
    assert_eq!(size_of::<GemBindOp>(), 32);
    assert_eq!(offset_of!(GemBindOp, addr), 24);
    assert_eq!(size_of::<VmBind>(), 24);
    assert_eq!(offset_of!(VmBind, userptr), 16);
    assert_eq!(size_of::<GemBindObject>(), 40);
    assert_eq!(size_of::<QueueCreate>(), 24);
    assert_eq!(size_of::<QueueDestroy>(), 8);
}

/// `MemRemap::new` refuses what `memremap()` would warn about, as the kernel's does: System RAM
/// asked for write-combining, and a range that is partly System RAM; the host's reserved pool
/// (it models `no-map` carve-outs, outside System RAM) maps either way. A hole does not map on
/// the host (arm64's `memremap()` would map it as normal memory).
#[test]
fn memremap_refuses_what_memremap_warns_about() {
    use kernel::io::mem::{MemRemap, MemRemapType::*};
    let _alone = allocator();
    let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO).unwrap();
    let pg = PAGE_SIZE as u64;
    // SAFETY: The ranges are memory (allocated or reserved pages), but the last two break the
    // requirements on purpose, to check that the host's refuses them as the kernel's checks
    // would (a range that is partly System RAM), or rather than map them (a hole: the host has
    // nothing to map there).
    unsafe {
        assert!(MemRemap::new(page.phys(), PAGE_SIZE, WriteBack).is_ok());
        assert_eq!(
            MemRemap::new(page.phys(), PAGE_SIZE, WriteCombine).err(),
            Some(EINVAL)
        );
        let reserved = sim::reserve_region(2 * pg).unwrap();
        for kind in [WriteBack, WriteCombine] {
            assert!(MemRemap::new(reserved, 2 * PAGE_SIZE, kind).is_ok());
        }
        // The last page of the allocator's RAM and the first of the reserved pool: mixed.
        let pool = sim::RESERVED_POOL.0;
        assert_eq!(
            MemRemap::new(pool - pg, 2 * PAGE_SIZE, WriteBack).err(),
            Some(EINVAL)
        );
        assert_eq!(
            MemRemap::new(sim::HOLE.0, PAGE_SIZE, WriteBack).err(),
            Some(ENOMEM)
        );
    }
}
