// SPDX-License-Identifier: GPL-2.0

//! Pages: the host twin of `rust/kernel/page.rs`.
//!
//! [`Page`] stands for a `struct page` of the simulated memory map. It is only ever seen behind a
//! reference: `Owned<Page>` when the caller owns the allocation, `&Page` when it borrows a page
//! somebody else owns (a page-table page found by physical address, a pinned GEM page).

use crate::alloc::{flags, AllocError, Flags};
use crate::error::{code::*, Result};
use crate::owned::{Ownable, Owned};
use crate::sim::{self, PageState};
use core::ptr::{self, NonNull};
use std::sync::atomic::AtomicU8;

/// A physical memory address (`phys_addr_t`).
pub type PhysAddr = u64;

/// A bitwise shift for the page size.
pub const PAGE_SHIFT: usize = 14;

/// The number of bytes in a page (16 KiB: the configuration the AGX driver requires).
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// A bitmask that gives the page containing a given address.
pub const PAGE_MASK: usize = !(PAGE_SIZE - 1);

/// A `struct page` of the simulated memory map.
///
/// # Invariants
///
/// A `&Page` always points into the simulated memory map, at a page that is RAM.
#[repr(transparent)]
pub struct Page {
    state: AtomicU8,
}

// SAFETY: Pages have no logic that relies on them staying on a given thread.
unsafe impl Send for Page {}
// SAFETY: Pages have no logic that relies on them not being accessed concurrently.
unsafe impl Sync for Page {}

// SAFETY: `release` gives the page back to the simulated allocator, which is what `alloc_page`
// took it from; an `Owned<Page>` keeps the page allocated until then.
unsafe impl Ownable for Page {
    unsafe fn release(this: NonNull<Self>) {
        // SAFETY: By the `Ownable` contract, the caller owned this page of the memory map.
        let index = unsafe { this.as_ref() }.index();
        sim::ram().free(index);
    }
}

impl Page {
    #[inline]
    pub(crate) fn raw_state(&self) -> &AtomicU8 {
        &self.state
    }

    pub(crate) fn from_state(state: AtomicU8) -> Self {
        Self { state }
    }

    #[inline]
    fn index(&self) -> usize {
        let ram = sim::ram();
        // SAFETY: By the type invariant, `self` lies in the memory map.
        (unsafe { (self as *const Page).offset_from(ram.memmap.as_ptr()) }) as usize
    }

    /// Allocates a new page; its contents are zero if `flags` has `__GFP_ZERO`, garbage
    /// otherwise.
    pub fn alloc_page(flags: Flags) -> Result<Owned<Self>, AllocError> {
        let ram = sim::ram();
        let index = ram.alloc(flags.contains(flags::__GFP_ZERO))?;
        // SAFETY: The allocator just gave us this page: we are its only owner.
        Ok(unsafe { Owned::from_raw(NonNull::from(&ram.memmap[index])) })
    }

    /// Returns the physical address of this page.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        sim::RAM_BASE + ((self.index() as u64) << PAGE_SHIFT)
    }

    /// Returns the page's reference count: 0 once the page is back in the page allocator, 1
    /// while it is allocated or reserved (as `page_ref_count` in the kernel).
    pub fn ref_count(&self) -> i32 {
        match self.state() {
            PageState::Allocated | PageState::Reserved => 1,
            PageState::Free | PageState::Hole => 0,
        }
    }

    /// Converts an owned page into its physical address, without freeing it. The page can be
    /// recovered with [`Page::from_phys`]; until then it is leaked.
    #[inline]
    pub fn into_phys(page: Owned<Self>) -> PhysAddr {
        let phys = page.phys();
        let _ = Owned::into_raw(page);
        phys
    }

    /// Converts a physical address back into an owned page.
    ///
    /// # Safety
    ///
    /// `phys` must come from [`Page::into_phys`] (or otherwise be a page the caller owns), and
    /// ownership must not be claimed twice.
    #[inline]
    pub unsafe fn from_phys(phys: PhysAddr) -> Owned<Self> {
        let ram = sim::ram();
        let index = ram
            .index_of(phys)
            .expect("from_phys of an address outside RAM");
        debug_assert_eq!(ram.memmap[index].state(), PageState::Allocated);
        // SAFETY: The caller guarantees that this page is owned and that the ownership passes to
        // us.
        unsafe { Owned::from_raw(NonNull::from(&ram.memmap[index])) }
    }

    /// Borrows the page containing physical address `phys`, if that address is RAM.
    ///
    /// # Safety
    ///
    /// The page must stay allocated (or reserved) for the lifetime of the borrow, and accesses to
    /// its contents must not race with its owner's.
    #[inline]
    pub unsafe fn borrow_phys(phys: &PhysAddr) -> Option<&Self> {
        let ram = sim::ram();
        let page = &ram.memmap[ram.index_of(*phys)?];
        (page.state() != PageState::Hole).then_some(page)
    }

    /// Borrows the page containing physical address `phys`, without checking that it is RAM.
    ///
    /// # Safety
    ///
    /// As for [`Page::borrow_phys`], and `phys` must be RAM.
    #[inline]
    pub unsafe fn borrow_phys_unchecked(phys: &PhysAddr) -> &Self {
        let ram = sim::ram();
        let index = ((*phys - sim::RAM_BASE) >> PAGE_SHIFT) as usize;
        debug_assert!(index < ram.memmap.len());
        // SAFETY: The caller guarantees that `phys` is RAM, so the index is in the memory map.
        unsafe { ram.memmap.get_unchecked(index) }
    }

    /// Runs `f` with this page mapped (on arm64 with 16 KiB pages: its linear-map address).
    ///
    /// The pointer is valid for `PAGE_SIZE` bytes for the duration of the call, on this thread;
    /// the usual rules for raw pointers apply (no data races, contents may be uninitialized).
    #[inline]
    pub fn with_page_mapped<T>(&self, f: impl FnOnce(*mut u8) -> T) -> T {
        f(sim::ram().page_ptr(self.index()))
    }

    /// Runs `f` with a pointer `off` bytes into the page, valid for `len` bytes; `EINVAL` if
    /// `off .. off + len` is not inside the page.
    #[inline]
    pub fn with_pointer_into_page<T>(
        &self,
        off: usize,
        len: usize,
        f: impl FnOnce(*mut u8) -> Result<T>,
    ) -> Result<T> {
        let bounds_ok = off <= PAGE_SIZE && len <= PAGE_SIZE && (off + len) <= PAGE_SIZE;
        if bounds_ok {
            // SAFETY: `off` is at most `PAGE_SIZE`, so the pointer stays in or one past the page.
            self.with_page_mapped(move |page_addr| f(unsafe { page_addr.add(off) }))
        } else {
            Err(EINVAL)
        }
    }

    /// Maps the page and reads from it into the given buffer.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writing `len` bytes, and the read must not race with an
    /// overlapping write to the page.
    #[inline]
    pub unsafe fn read_raw(&self, dst: *mut u8, offset: usize, len: usize) -> Result {
        self.with_pointer_into_page(offset, len, move |src| {
            // SAFETY: Bounds checked above; the caller guarantees `dst` and the absence of races.
            unsafe { ptr::copy_nonoverlapping(src, dst, len) };
            Ok(())
        })
    }

    /// Maps the page and writes into it from the given buffer.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reading `len` bytes, and the write must not race with an
    /// overlapping access to the page.
    #[inline]
    pub unsafe fn write_raw(&self, src: *const u8, offset: usize, len: usize) -> Result {
        self.with_pointer_into_page(offset, len, move |dst| {
            // SAFETY: Bounds checked above; the caller guarantees `src` and the absence of races.
            unsafe { ptr::copy_nonoverlapping(src, dst, len) };
            Ok(())
        })
    }

    /// Maps the page and zeroes the given range.
    ///
    /// # Safety
    ///
    /// The write must not race with an overlapping access to the page.
    #[inline]
    pub unsafe fn fill_zero_raw(&self, offset: usize, len: usize) -> Result {
        self.with_pointer_into_page(offset, len, move |dst| {
            // SAFETY: Bounds checked above; the caller guarantees the absence of races.
            unsafe { ptr::write_bytes(dst, 0u8, len) };
            Ok(())
        })
    }
}
