// SPDX-License-Identifier: GPL-2.0

//! Kernel page allocation and management.
//!
//! [`Page`] is the opaque `struct page`. It is only ever handled through a reference: an
//! [`Owned<Page>`] for a page the caller allocated and frees on drop, or a `&Page` for a page
//! someone else owns, borrowed for a bounded lifetime (for example a page found by physical
//! address in a device's page table). Pages returned by the page allocator are not reference
//! counted from Rust's point of view: they have one owner.

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    error::code::*,
    error::Result,
    owned::{Ownable, Owned},
    types::Opaque,
    uaccess::UserSliceReader,
};
use core::ptr::{self, NonNull};

/// A bitwise shift for the page size.
pub const PAGE_SHIFT: usize = bindings::PAGE_SHIFT as usize;

/// The number of bytes in a page.
pub const PAGE_SIZE: usize = bindings::PAGE_SIZE;

/// A bitmask that gives the page containing a given address.
pub const PAGE_MASK: usize = !(PAGE_SIZE - 1);

/// A physical memory address.
pub type PhysAddr = bindings::phys_addr_t;

/// A `struct page`.
///
/// # Invariants
///
/// A `&Page` points to a valid `struct page` of the memory map for the lifetime of the
/// reference.
#[repr(transparent)]
pub struct Page {
    page: Opaque<bindings::page>,
}

// SAFETY: Pages have no logic that relies on them staying on a given thread, so moving them across
// threads is safe.
unsafe impl Send for Page {}

// SAFETY: Pages have no logic that relies on them not being accessed concurrently, so accessing
// them concurrently is safe.
unsafe impl Sync for Page {}

// SAFETY: An `Owned<Page>` comes from `alloc_pages` (order 0) or from `from_phys` of such a page;
// `release` frees it exactly once, when the single owner drops it.
unsafe impl Ownable for Page {
    unsafe fn release(this: NonNull<Self>) {
        // SAFETY: By the `Ownable` contract the caller owns this page and nobody uses it any more.
        unsafe { bindings::__free_pages(this.cast().as_ptr(), 0) };
    }
}

impl Page {
    /// Allocates a new page.
    ///
    /// # Examples
    ///
    /// Allocate memory for a page and zero its contents.
    ///
    /// ```
    /// use kernel::page::Page;
    ///
    /// # fn dox() -> Result<(), kernel::alloc::AllocError> {
    /// let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
    /// # Ok(()) }
    /// ```
    pub fn alloc_page(flags: Flags) -> Result<Owned<Self>, AllocError> {
        // SAFETY: Depending on the value of `gfp_flags`, this call may sleep. Other than that, it
        // is always safe to call this method.
        let page = unsafe { bindings::alloc_pages(flags.as_raw(), 0) };
        let page = NonNull::new(page).ok_or(AllocError)?;
        // SAFETY: We just successfully allocated a page, so we now have ownership of the newly
        // allocated page. We transfer that ownership to the new `Owned<Page>` object.
        Ok(unsafe { Owned::from_raw(page.cast()) })
    }

    /// Returns a raw pointer to the page.
    #[inline]
    pub fn as_ptr(&self) -> *mut bindings::page {
        self.page.get()
    }

    /// Returns the physical address of this page.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        // SAFETY: `page` is valid due to the type invariants on `Page`.
        unsafe { bindings::page_to_phys(self.as_ptr()) }
    }

    /// Returns the page's reference count (`page_ref_count`): 0 once the page is back in the page
    /// allocator, at least 1 while anybody owns it. A racy snapshot, meant for leak checks.
    #[inline]
    pub fn ref_count(&self) -> i32 {
        // SAFETY: `page` is valid due to the type invariants on `Page`.
        unsafe { bindings::page_ref_count(self.as_ptr()) }
    }

    /// Converts an owned page into its physical address, without freeing it.
    ///
    /// The page stays allocated: it is leaked until [`Page::from_phys`] claims it back. This is
    /// how a page-table page is handed to a descriptor that only holds its physical address.
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
    /// `phys` must have come from [`Page::into_phys`] (or otherwise be the address of an order-0
    /// page allocated from the page allocator that the caller owns), and ownership of it must not
    /// be claimed more than once.
    #[inline]
    pub unsafe fn from_phys(phys: PhysAddr) -> Owned<Self> {
        // SAFETY: The caller guarantees that `phys` is the address of a page it owns, so its
        // `struct page` is valid and the conversion cannot produce a dangling pointer.
        let page = unsafe { bindings::phys_to_page(phys) };
        // SAFETY: `phys_to_page` of a valid page address is never null, and the caller passes the
        // ownership of the page to us.
        unsafe { Owned::from_raw(NonNull::new_unchecked(page).cast()) }
    }

    /// Borrows the page containing the physical address `phys`, if that address is RAM.
    ///
    /// Returns `None` unless the page frame is valid, its memory section is online
    /// (`pfn_to_online_page`) and it is System RAM (`page_is_ram`). That rules out MMIO, holes in
    /// the physical map and offline or ZONE_DEVICE memory.
    ///
    /// # Safety
    ///
    /// What these checks cannot tell is who owns the page: the caller must guarantee that the
    /// page stays allocated (or reserved) for the lifetime of the borrow, for example because it
    /// is a pinned buffer page or a page-table page the caller owns, and that its accesses to the
    /// page contents do not race with the owner's.
    #[inline]
    pub unsafe fn borrow_phys(phys: &PhysAddr) -> Option<&Self> {
        // `unsigned long` is `usize` on every architecture the kernel supports.
        let pfn = (*phys >> PAGE_SHIFT) as usize;
        // SAFETY: Any pfn may be passed; the result is null unless it has an online memory map.
        let page = unsafe { bindings::pfn_to_online_page(pfn) };
        // SAFETY: Any pfn may be passed; it only consults the resource tree.
        if page.is_null() || unsafe { bindings::page_is_ram(pfn) } == 0 {
            return None;
        }
        // SAFETY: `page` is a valid `struct page` of online RAM; the caller guarantees that it
        // stays alive for the lifetime of the borrow.
        Some(unsafe { &*page.cast::<Self>() })
    }

    /// Borrows the page containing the physical address `phys`, without checking it.
    ///
    /// # Safety
    ///
    /// As for [`Page::borrow_phys`], and `phys` must be known to be RAM with a memory map.
    #[inline]
    pub unsafe fn borrow_phys_unchecked(phys: &PhysAddr) -> &Self {
        // SAFETY: The caller guarantees that `phys` is RAM, so its `struct page` exists.
        unsafe { &*bindings::phys_to_page(*phys).cast::<Self>() }
    }

    /// Runs a piece of code with this page mapped to an address.
    ///
    /// The page is unmapped when this call returns.
    ///
    /// # Using the raw pointer
    ///
    /// It is up to the caller to use the provided raw pointer correctly. The pointer is valid for
    /// `PAGE_SIZE` bytes and for the duration in which the closure is called. The pointer might
    /// only be mapped on the current thread, and when that is the case, dereferencing it on other
    /// threads is UB. Other than that, the usual rules for dereferencing a raw pointer apply: don't
    /// cause data races, the memory may be uninitialized, and so on.
    #[inline]
    pub fn with_page_mapped<T>(&self, f: impl FnOnce(*mut u8) -> T) -> T {
        // SAFETY: `page` is valid due to the type invariants on `Page`.
        let mapped_addr = unsafe { bindings::kmap_local_page(self.as_ptr()) };

        let res = f(mapped_addr.cast());

        // This unmaps the page mapped above.
        //
        // SAFETY: Since this API takes the user code as a closure, it can only be used in a manner
        // where the pages are unmapped in reverse order. This is as required by `kunmap_local`.
        unsafe { bindings::kunmap_local(mapped_addr) };

        res
    }

    /// Runs a piece of code with a raw pointer to a slice of this page, with bounds checking.
    ///
    /// If `f` is called, then it will be called with a pointer that points at `off` bytes into the
    /// page, and the pointer will be valid for at least `len` bytes. The pointer is only valid on
    /// this task, as this method uses a local mapping. If `off` and `len` refers to a region
    /// outside of this page, then this method returns [`EINVAL`] and does not call `f`.
    #[inline]
    pub fn with_pointer_into_page<T>(
        &self,
        off: usize,
        len: usize,
        f: impl FnOnce(*mut u8) -> Result<T>,
    ) -> Result<T> {
        let bounds_ok = off <= PAGE_SIZE && len <= PAGE_SIZE && (off + len) <= PAGE_SIZE;

        if bounds_ok {
            self.with_page_mapped(move |page_addr| {
                // SAFETY: The `off` integer is at most `PAGE_SIZE`, so this pointer offset will
                // result in a pointer that is in bounds or one off the end of the page.
                f(unsafe { page_addr.add(off) })
            })
        } else {
            Err(EINVAL)
        }
    }

    /// Maps the page and reads from it into the given buffer.
    ///
    /// This method will perform bounds checks on the page offset. If `offset .. offset+len` goes
    /// outside of the page, then this call returns [`EINVAL`].
    ///
    /// # Safety
    ///
    /// * Callers must ensure that `dst` is valid for writing `len` bytes.
    /// * Callers must ensure that this call does not race with a write to the same page that
    ///   overlaps with this read.
    pub unsafe fn read_raw(&self, dst: *mut u8, offset: usize, len: usize) -> Result {
        self.with_pointer_into_page(offset, len, move |src| {
            // SAFETY: If `with_pointer_into_page` calls into this closure, then
            // it has performed a bounds check and guarantees that `src` is
            // valid for `len` bytes.
            //
            // There caller guarantees that there is no data race.
            unsafe { ptr::copy_nonoverlapping(src, dst, len) };
            Ok(())
        })
    }

    /// Maps the page and writes into it from the given buffer.
    ///
    /// This method will perform bounds checks on the page offset. If `offset .. offset+len` goes
    /// outside of the page, then this call returns [`EINVAL`].
    ///
    /// # Safety
    ///
    /// * Callers must ensure that `src` is valid for reading `len` bytes.
    /// * Callers must ensure that this call does not race with a read or write to the same page
    ///   that overlaps with this write.
    pub unsafe fn write_raw(&self, src: *const u8, offset: usize, len: usize) -> Result {
        self.with_pointer_into_page(offset, len, move |dst| {
            // SAFETY: If `with_pointer_into_page` calls into this closure, then it has performed a
            // bounds check and guarantees that `dst` is valid for `len` bytes.
            //
            // There caller guarantees that there is no data race.
            unsafe { ptr::copy_nonoverlapping(src, dst, len) };
            Ok(())
        })
    }

    /// Maps the page and zeroes the given slice.
    ///
    /// This method will perform bounds checks on the page offset. If `offset .. offset+len` goes
    /// outside of the page, then this call returns [`EINVAL`].
    ///
    /// # Safety
    ///
    /// Callers must ensure that this call does not race with a read or write to the same page that
    /// overlaps with this write.
    pub unsafe fn fill_zero_raw(&self, offset: usize, len: usize) -> Result {
        self.with_pointer_into_page(offset, len, move |dst| {
            // SAFETY: If `with_pointer_into_page` calls into this closure, then it has performed a
            // bounds check and guarantees that `dst` is valid for `len` bytes.
            //
            // There caller guarantees that there is no data race.
            unsafe { ptr::write_bytes(dst, 0u8, len) };
            Ok(())
        })
    }

    /// Copies data from userspace into this page.
    ///
    /// This method will perform bounds checks on the page offset. If `offset .. offset+len` goes
    /// outside of the page, then this call returns [`EINVAL`].
    ///
    /// Like the other `UserSliceReader` methods, data races are allowed on the userspace address.
    /// However, they are not allowed on the page you are copying into.
    ///
    /// # Safety
    ///
    /// Callers must ensure that this call does not race with a read or write to the same page that
    /// overlaps with this write.
    pub unsafe fn copy_from_user_slice_raw(
        &self,
        reader: &mut UserSliceReader,
        offset: usize,
        len: usize,
    ) -> Result {
        self.with_pointer_into_page(offset, len, move |dst| {
            // SAFETY: If `with_pointer_into_page` calls into this closure, then it has performed a
            // bounds check and guarantees that `dst` is valid for `len` bytes. Furthermore, we have
            // exclusive access to the slice since the caller guarantees that there are no races.
            reader.read_raw(unsafe { core::slice::from_raw_parts_mut(dst.cast(), len) })
        })
    }
}
