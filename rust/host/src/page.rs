// SPDX-License-Identifier: GPL-2.0

//! Pages: the host twin of Linux 7.3's `rust/kernel/page.rs` with this project's patch series
//! applied (`patches/`).
//!
//! [`Page`] owns one page of the simulated RAM, as the kernel's `Page` owns a `struct page`
//! allocation, and frees it on drop. [`BorrowedPage`] is a page somebody else owns (a page-table
//! page found by physical address, a pinned GEM page). The safety contracts are the kernel's.

use crate::alloc::{flags, AllocError, Flags};
use crate::error::{code::*, Result};
use crate::io::PhysAddr;
use crate::sim::{self, PageState, StructPage};
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use core::ptr::{self, NonNull};

/// A bitwise shift for the page size.
pub const PAGE_SHIFT: usize = 14;

/// The number of bytes in a page (16 KiB: the configuration the AGX driver requires).
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// A bitmask that gives the page containing a given address.
pub const PAGE_MASK: usize = !(PAGE_SIZE - 1);

/// A non-owning reference to a [`Page`] owned by someone else.
///
/// # Invariants
///
/// The underlying page stays allocated (or reserved) for the whole lifetime `'a`.
pub struct BorrowedPage<'a>(ManuallyDrop<Page>, PhantomData<&'a Page>);

impl<'a> BorrowedPage<'a> {
    /// Constructs a [`BorrowedPage`] from a pointer to a memory-map entry.
    ///
    /// # Safety
    ///
    /// `ptr` must point into the simulated memory map, at a page that stays allocated for `'a`.
    #[inline]
    unsafe fn from_raw(ptr: NonNull<StructPage>) -> Self {
        // INVARIANT: The caller keeps the page allocated for `'a`.
        Self(ManuallyDrop::new(Page { page: ptr }), PhantomData)
    }
}

impl Deref for BorrowedPage<'_> {
    type Target = Page;

    #[inline]
    fn deref(&self) -> &Page {
        &self.0
    }
}

/// A pointer to a page that owns the page allocation.
///
/// # Invariants
///
/// The pointer is an entry of the simulated memory map, and has ownership over the page (or,
/// inside a [`BorrowedPage`], the page is kept allocated by its owner).
pub struct Page {
    page: NonNull<StructPage>,
}

// SAFETY: Pages have no logic that relies on them staying on a given thread.
unsafe impl Send for Page {}
// SAFETY: Pages have no logic that relies on them not being accessed concurrently.
unsafe impl Sync for Page {}

impl Page {
    #[inline]
    fn index(&self) -> usize {
        let ram = sim::ram();
        // SAFETY: By the type invariant, `self.page` lies in the memory map.
        (unsafe {
            self.page
                .as_ptr()
                .cast_const()
                .offset_from(ram.memmap.as_ptr())
        }) as usize
    }

    #[inline]
    fn state(&self) -> PageState {
        // SAFETY: By the type invariant, `self.page` is a valid memory-map entry.
        unsafe { self.page.as_ref() }.state()
    }

    /// Allocates a new page; its contents are zero if `flags` has `__GFP_ZERO`, garbage
    /// otherwise. `GFP_KERNEL_ACCOUNT` charges it to the caller's memory cgroup (modelled per
    /// thread: [`sim::set_charge_limit`]).
    pub fn alloc_page(flags: Flags) -> Result<Self, AllocError> {
        let ram = sim::ram();
        let index = ram.alloc(
            flags.contains(flags::__GFP_ZERO),
            flags.contains(flags::GFP_KERNEL_ACCOUNT),
        )?;
        // INVARIANT: The allocator just gave us this page: we are its only owner.
        Ok(Self {
            page: NonNull::from(&ram.memmap[index]),
        })
    }

    /// Returns the physical address of this page.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        sim::RAM_BASE + ((self.index() as u64) << PAGE_SHIFT)
    }

    /// Gives up ownership of the page and returns its physical address; the ownership travels
    /// with the address until [`Page::from_phys`] takes it back.
    #[inline]
    pub fn into_phys(page: Self) -> PhysAddr {
        ManuallyDrop::new(page).phys()
    }

    /// Takes back the ownership of a page given up with [`Page::into_phys`].
    ///
    /// # Safety
    ///
    /// `phys` must have been returned by [`Page::into_phys`], and the ownership it carries must
    /// not have been taken back since.
    #[inline]
    pub unsafe fn from_phys(phys: PhysAddr) -> Self {
        let ram = sim::ram();
        let index = ram
            .index_of(phys)
            .expect("from_phys of an address outside RAM");
        debug_assert_eq!(
            ram.memmap[index].state(),
            PageState::Allocated,
            "from_phys of a page not allocated"
        );
        // INVARIANT: The caller hands back the ownership that `into_phys` gave up.
        Self {
            page: NonNull::from(&ram.memmap[index]),
        }
    }

    /// Borrows the page at physical address `phys`, if it is online, ordinary RAM: `None` unless
    /// `phys` is page aligned and its page is neither a hole (no `struct page`: MMIO, not RAM)
    /// nor reserved (`PageReserved`: reserved-memory regions, carve-outs).
    ///
    /// A test can make it refuse a page of RAM too ([`sim::fail_nth_borrow`]).
    ///
    /// # Safety
    ///
    /// As in the kernel, whose checks read the `struct page`: `phys` must be the address of a
    /// page that the caller keeps allocated from before this call and, if this returns a page,
    /// for the whole of `'a`; or of no memory that can be hot-removed meanwhile (MMIO, a
    /// reserved region, nothing), which is refused. Not a PFN walker.
    #[inline]
    pub unsafe fn borrow_phys<'a>(phys: PhysAddr) -> Option<BorrowedPage<'a>> {
        if !phys.is_multiple_of(PAGE_SIZE as PhysAddr) || sim::borrow_hook() {
            return None;
        }
        let ram = sim::ram();
        let entry = &ram.memmap[ram.index_of(phys)?];
        match entry.state() {
            PageState::Hole | PageState::Reserved => None,
            // SAFETY: `entry` is in the memory map; the caller keeps the page allocated for `'a`.
            PageState::Free | PageState::Allocated => {
                Some(unsafe { BorrowedPage::from_raw(NonNull::from(entry)) })
            }
        }
    }

    /// Returns the page's reference count: 0 once the page is back in the page allocator, 1
    /// while it is allocated or reserved (as `page_count()` in the kernel).
    #[inline]
    pub fn ref_count(&self) -> i32 {
        match self.state() {
            PageState::Allocated | PageState::Reserved => 1,
            PageState::Free | PageState::Hole => 0,
        }
    }

    /// Returns the reference count of the page at physical address `phys`, whether or not it is
    /// allocated (0 once free), or `None` if `phys` is not page aligned or not RAM (as
    /// `Page::ref_count_at` in the kernel, which holds memory hotplug off meanwhile).
    #[inline]
    pub fn ref_count_at(phys: PhysAddr) -> Option<i32> {
        if !phys.is_multiple_of(PAGE_SIZE as PhysAddr) {
            return None;
        }
        let ram = sim::ram();
        let entry = &ram.memmap[ram.index_of(phys)?];
        match entry.state() {
            PageState::Hole => None,
            PageState::Allocated | PageState::Reserved => Some(1),
            PageState::Free => Some(0),
        }
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

impl Drop for Page {
    #[inline]
    fn drop(&mut self) {
        // By the type invariants we own the page: give it back to the simulated allocator.
        sim::ram().free(self.index());
    }
}
