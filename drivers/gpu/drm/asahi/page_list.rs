// SPDX-License-Identifier: GPL-2.0

//! An allocation-free list of owned, otherwise empty table pages.
//!
//! Each page keeps the physical address of the next one in its first 8 bytes. The list is how
//! tables move between states without the bookkeeping ever allocating: pages preallocated for a
//! map before it touches anything, and tables unlinked by an unmap waiting for the TLB flush.
//! Page addresses have their low bits clear, so a page on the list still reads as invalid
//! descriptors to a GPU walking it through a stale walk cache.

use kernel::io::PhysAddr;
use kernel::page::Page;

/// A stack of owned pages whose contents are zero apart from the link word.
pub struct PageList {
    head: PhysAddr,
    count: usize,
}

impl PageList {
    /// An empty list.
    pub const fn new() -> PageList {
        PageList { head: 0, count: 0 }
    }

    /// Number of pages on the list.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Pushes a page whose contents are all zero.
    pub fn push(&mut self, page: Page) {
        let link = self.head.to_le_bytes();
        // SAFETY: We own the page; `link` is 8 readable bytes and offset 0 is in bounds.
        let written = unsafe { page.write_raw(link.as_ptr(), 0, link.len()) };
        debug_assert!(written.is_ok());
        self.head = Page::into_phys(page);
        self.count += 1;
    }

    /// Pops a page, all zero again.
    pub fn pop(&mut self) -> Option<Page> {
        if self.count == 0 {
            return None;
        }
        // SAFETY: `head` came from `Page::into_phys` in `push`, and is claimed back exactly once.
        let page = unsafe { Page::from_phys(self.head) };
        let mut link = [0u8; 8];
        // SAFETY: We own the page; `link` is 8 writable bytes and offset 0 is in bounds.
        let read = unsafe { page.read_raw(link.as_mut_ptr(), 0, link.len()) };
        debug_assert!(read.is_ok());
        // SAFETY: As above; the page is ours and offset 0 is in bounds.
        let cleared = unsafe { page.fill_zero_raw(0, link.len()) };
        debug_assert!(cleared.is_ok());
        self.head = u64::from_le_bytes(link);
        self.count -= 1;
        Some(page)
    }

    /// Moves every page of `other` onto `self`.
    pub fn append(&mut self, mut other: PageList) {
        while let Some(page) = other.pop() {
            self.push(page);
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
    fn drop(&mut self) {
        while let Some(page) = self.pop() {
            drop(page);
        }
    }
}
