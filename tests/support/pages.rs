// SPDX-License-Identifier: GPL-2.0

//! Data pages for GPU access tests: each carries a tag in its first bytes, so that whatever the
//! simulated GPU reads tells which page it reached.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::io::PhysAddr;
use kernel::page::Page;
use kernel::sim;

/// Pages owned by a test, each tagged with `base + index`.
pub struct TaggedPages {
    pages: Vec<Page>,
    base: u64,
}

impl TaggedPages {
    /// Allocates `n` pages tagged `base ..`.
    pub fn new(n: usize, base: u64) -> TaggedPages {
        let pages: Vec<Page> = (0..n)
            .map(|i| {
                let p = Page::alloc_page(GFP_KERNEL).unwrap();
                sim::write_phys(p.phys(), &(base + i as u64).to_le_bytes()).unwrap();
                p
            })
            .collect();
        TaggedPages { pages, base }
    }

    /// Physical address of page `i`.
    pub fn phys(&self, i: usize) -> PhysAddr {
        self.pages[i].phys()
    }

    /// The tag of page `i`.
    pub fn tag(&self, i: usize) -> u64 {
        self.base + i as u64
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// Reads the tag at `va` through the GPU in context `slot`.
pub fn gpu_tag(gpu: &agx_soc::gpu::Gpu, slot: usize, va: u64) -> Result<u64, agx_soc::gpu::Fault> {
    let mut b = [0u8; 8];
    gpu.read(slot, va & !0x3fff, &mut b)?;
    Ok(u64::from_le_bytes(b))
}
