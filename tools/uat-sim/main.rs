// SPDX-License-Identifier: GPL-2.0

//! `make run`: the UAT page tables at work on the simulated SoC.
//!
//! Builds a user address space and a kernel one (on a bootloader-style borrowed top table),
//! maps buffers made of scattered pages from the simulated allocator, reads data back by
//! physical address through the tables, changes protections, unmaps, and prints what happened
//! and what it cost in table pages.

use asahi::geometry::Geometry;
use asahi::pgtable::{PageTable, PhysRange, PtConfig};
use asahi::pte::{Oas, Prot};
use asahi::selftest::RecordingTlb;
use asahi::tlb::Gather;
use kernel::alloc::flags::*;
use kernel::owned::Owned;
use kernel::page::{Page, PAGE_SIZE};
use kernel::sim;

const PG: u64 = PAGE_SIZE as u64;

fn buffer(pages: usize) -> (Vec<Owned<Page>>, Vec<PhysRange>) {
    let pages: Vec<_> = (0..pages)
        .map(|_| Page::alloc_page(GFP_KERNEL | __GFP_ZERO).expect("simulated RAM exhausted"))
        .collect();
    let mut sg: Vec<PhysRange> = Vec::new();
    for p in &pages {
        match sg.last_mut() {
            Some(r) if r.addr + r.len == p.phys() => r.len += PG,
            _ => sg.push(PhysRange {
                addr: p.phys(),
                len: PG,
            }),
        }
    }
    (pages, sg)
}

fn show(name: &str, pt: &PageTable) {
    let mut n = 0;
    pt.for_each_mapping_all(|m| {
        n += 1;
        if n <= 6 {
            println!(
                "    {:#018x}..{:#018x} -> {:#012x} {:>8} KiB {}",
                m.va,
                m.va + m.size,
                m.pa,
                m.size / 1024,
                m.prot.name().unwrap_or("?")
            );
        }
    })
    .expect("walk");
    if n > 6 {
        println!("    ... {} runs in all", n);
    }
    println!(
        "  {name}: {} table pages below the top level",
        pt.table_pages()
    );
}

fn main() {
    let g = Geometry::G13;
    let tlb = RecordingTlb::default();
    let start = std::time::Instant::now();
    println!(
        "simulated RAM at {:#x}, 16 KiB pages, G13 geometry, 40-bit OAS",
        sim::RAM_BASE
    );

    let mut user = PageTable::new(PtConfig {
        geometry: g,
        range: g.lower_half(),
        oas: Oas::BITS_40,
        user: true,
    })
    .expect("user VM");
    let (bo, sg) = buffer(4096);
    println!(
        "\n1. map a 64 MiB buffer of {} scattered pages ({} physical runs) at 0x1_0000_0000",
        bo.len(),
        sg.len()
    );
    user.map_sg(0x1_0000_0000, 4096 * PG, &sg, 0, Prot::GPU_SHARED_RW)
        .expect("map");
    show("user VM", &user);

    let msg = b"hello from the GPU's point of view";
    // SAFETY: We own the page; `msg` is readable.
    unsafe { bo[1234].write_raw(msg.as_ptr(), 0x40, msg.len()) }.expect("write");
    let t = user
        .translate(0x1_0000_0000 + 1234 * PG + 0x40)
        .expect("translate");
    let mut back = vec![0u8; msg.len()];
    sim::read_phys(t.pa, &mut back).expect("read");
    println!(
        "\n2. translate VA {:#x} -> PA {:#x} ({:?}): {:?}",
        0x1_0000_0000u64 + 1234 * PG + 0x40,
        t.pa,
        t.prot.name(),
        String::from_utf8_lossy(&back)
    );
    assert_eq!(&back, msg);

    println!("\n3. sparse binding: one page repeated over 1 GiB at 0x40_0000_0000");
    let (zero, _) = buffer(1);
    user.map_repeat(0x40_0000_0000, zero[0].phys(), 1 << 30, Prot::GPU_SHARED_RO)
        .expect("sparse");
    println!("  user VM: {} table pages", user.table_pages());

    println!("\n4. make 1 MiB of the buffer read-only, then unmap the middle 32 MiB");
    let mut gather = Gather::new();
    user.reprot(0x1_0000_0000, 1 << 20, Prot::GPU_SHARED_RO, &mut gather)
        .expect("reprot");
    let n = user
        .unmap(0x1_0100_0000, 32 << 20, &mut gather)
        .expect("unmap");
    println!(
        "  unmapped {n} pages, {} tables waiting for the TLB flush",
        gather.freed_tables()
    );
    gather.flush(&tlb, 1);
    show("user VM", &user);

    println!("\n5. kernel VM on a borrowed (bootloader-owned) top table, managing L1 index 2");
    let boot_ttb = sim::reserve_region(PG).expect("reserved memory");
    let kcfg = PtConfig {
        geometry: g,
        range: asahi::geometry::VaRange {
            start: 0xffff_ffa0_0000_0000,
            last: 0xffff_ffaf_ffff_ffff,
        },
        oas: Oas::BITS_40,
        user: false,
    };
    // SAFETY: The reserved region outlives the table and nothing else touches L1 index 2.
    let mut kernel_vm = unsafe { PageTable::new_borrowed(boot_ttb, kcfg) }.expect("kernel VM");
    let (fw, fw_sg) = buffer(8);
    kernel_vm
        .map_sg(0xffff_ffa0_0000_0000, 8 * PG, &fw_sg, 0, Prot::FW_PRIV_RW)
        .expect("fw map");
    show("kernel VM", &kernel_vm);

    println!("\n6. tear down");
    let mut gather = Gather::new();
    let n = user
        .unmap(0x1_0000_0000, 4096 * PG, &mut gather)
        .expect("unmap");
    let m = user
        .unmap(0x40_0000_0000, 1 << 30, &mut gather)
        .expect("unmap");
    gather.flush(&tlb, 1);
    println!(
        "  unmapped {} pages; user VM now has {} table pages",
        n + m,
        user.table_pages()
    );
    drop(user);
    drop(kernel_vm);
    drop((bo, zero, fw));
    // SAFETY: The kernel VM that used the region is gone.
    unsafe { sim::unreserve_region(boot_ttb, PG) };
    let st = sim::page_stats();
    println!(
        "\nsummary: {} page allocations, {} frees, peak {} live pages, {} TLB invalidations, {} live pages at exit, {:.1} ms",
        st.allocs,
        st.frees,
        st.peak,
        tlb.count.get(),
        st.live,
        start.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(st.live, 0, "leaked pages");
}
