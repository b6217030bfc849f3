// SPDX-License-Identifier: GPL-2.0

//! An allocation-free list of owned table pages.
//!
//! Each page keeps the physical address of the next one in its first 8 bytes. The list is how
//! tables move between states without the bookkeeping ever allocating: pages preallocated for a
//! map before it touches anything, and tables unlinked by an unmap waiting for the TLB flush.
//! Page addresses have their low bits clear, so the link word still reads as an invalid
//! descriptor to a GPU walking the page through a stale walk cache.

use kernel::io::PhysAddr;
use kernel::page::{Page, PAGE_SIZE};

/// A stack of owned pages: zero apart from the link word, unless the list holds stale pages.
///
/// # Invariants
///
/// Every page on the list is owned by it, and is zero apart from the link word unless `stale`.
pub struct PageList {
    head: PhysAddr,
    count: usize,
    /// Whether some page may hold something else than zeroes: a table unlinked whole, with its
    /// descriptors, waiting to be freed.
    stale: bool,
}

impl PageList {
    /// An empty list.
    pub const fn new() -> PageList {
        PageList {
            head: 0,
            count: 0,
            stale: false,
        }
    }

    /// Number of pages on the list.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn link(&mut self, page: Page) {
        let link = self.head.to_le_bytes();
        // SAFETY: We own the page; `link` is 8 readable bytes and offset 0 is in bounds.
        let written = unsafe { page.write_raw(link.as_ptr(), 0, link.len()) };
        debug_assert!(written.is_ok());
        self.head = Page::into_phys(page);
        self.count += 1;
    }

    /// Unlinks the top page, as it is (the link word still in it).
    fn take(&mut self) -> Option<Page> {
        if self.count == 0 {
            return None;
        }
        // SAFETY: `head` came from `Page::into_phys` in `link`, and is claimed back exactly once.
        let page = unsafe { Page::from_phys(self.head) };
        let mut link = [0u8; 8];
        // SAFETY: We own the page; `link` is 8 writable bytes and offset 0 is in bounds.
        let read = unsafe { page.read_raw(link.as_mut_ptr(), 0, link.len()) };
        debug_assert!(read.is_ok());
        self.head = u64::from_le_bytes(link);
        self.count -= 1;
        Some(page)
    }

    /// Pushes a page whose contents are all zero.
    pub fn push(&mut self, page: Page) {
        self.link(page);
    }

    /// Pushes a page with any contents (a table unlinked whole). The list's pages are then
    /// zeroed whole when popped; freeing them costs nothing more.
    pub fn push_stale(&mut self, page: Page) {
        self.stale = true;
        self.link(page);
    }

    /// Pops a page, all zero again.
    pub fn pop(&mut self) -> Option<Page> {
        let page = self.take()?;
        let len = if self.stale { PAGE_SIZE } else { 8 };
        // SAFETY: As above; the page is ours and `0 .. len` is in bounds.
        let cleared = unsafe { page.fill_zero_raw(0, len) };
        debug_assert!(cleared.is_ok());
        Some(page)
    }

    /// Moves every page of `other` onto `self`: onto an empty list, by taking `other` whole
    /// (the usual case: one operation's tables into an empty gather), otherwise page by page.
    pub fn append(&mut self, mut other: PageList) {
        let stale = self.stale | other.stale;
        if self.count == 0 {
            core::mem::swap(self, &mut other);
            self.stale = stale;
            return;
        }
        self.stale = stale;
        while let Some(page) = other.take() {
            self.link(page);
        }
    }

    /// Frees every page, as they are: the page allocator does not need them zeroed.
    #[inline(never)]
    fn free_all(&mut self) {
        while let Some(page) = self.take() {
            drop(page);
        }
    }

    /// Forgets the pages without freeing them (for pages that must never be reused).
    pub fn leak(mut self) -> usize {
        let n = self.count;
        self.count = 0;
        n
    }
}

impl Default for PageList {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PageList {
    /// Inlined for its test alone: most lists die empty (every operation's gather), and the call
    /// that frees pages is not worth making for them.
    #[inline]
    fn drop(&mut self) {
        if self.count != 0 {
            self.free_all();
        }
    }
}
