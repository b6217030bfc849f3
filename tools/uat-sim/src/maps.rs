// SPDX-License-Identifier: GPL-2.0

//! Each VM's mappings by buffer and offset, for comparing two executions of one trace.
//!
//! The simulator and the render node (debugfs `maps`, `gpu_mem.rs`) place buffers at different
//! physical addresses, so their page tables can only be compared by what each page is: which
//! buffer, at which offset, with which GPU and firmware access. Both sides walk their page
//! tables (here with `uat-dump`'s own decoder, [`crate::dump`], over the simulated RAM), name
//! each page by the buffer holding its physical address, and merge pages into runs by one rule,
//! [`Runs::push`], which the render node's dump follows too:
//!
//! ```text
//! vm 1: 2 runs, 5 pages, 4 tables
//!   0x0000000001000000-0x0000000001010000         64 KiB  gpu RW fw --  bo 7 +0x0
//!   0x0000007800000000-0x0000007800004000         16 KiB  gpu RO fw --  -
//! ```
//!
//! A run is consecutive VA pages of one buffer with one access, whose offsets advance by a page
//! each, or stay on one page (`(one page repeated)`: a `SINGLE_PAGE` binding). A page of no
//! buffer (the VM's kernel-private zero page) is `-`. The header also counts the table pages
//! below the VM's root (here those the walk reaches; in the render node the page table's own
//! count): with empty tables freed as they empty, the two executions must agree on those too.

use crate::dump::{access, dump_table, Image};
use crate::machine::Machine;
use std::io::{self, Write};

const PG: u64 = 1 << 14;

/// One run of pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// First VA.
    pub va: u64,
    /// Pages.
    pub pages: u64,
    /// The buffer (`bo NAME`), or `-` for a page of no buffer.
    pub label: String,
    /// Offset of the first page in the buffer (0 for `-`).
    pub offset: u64,
    /// GPU access (`RW`, `RO`, `WO`, `--`).
    pub gpu: &'static str,
    /// Firmware access.
    pub fw: &'static str,
    /// Every page is the one at `offset`.
    pub repeat: bool,
}

/// The runs of one VM, built page by page in VA order.
#[derive(Debug, Default)]
pub struct Runs(pub Vec<Run>);

impl Runs {
    /// Adds the page at `va`: it extends the last run if it follows it in VA, has its label and
    /// access, and its offset continues it (the next page, or for a repeated run, or a run of one
    /// page, the same page).
    pub fn push(&mut self, va: u64, label: &str, offset: u64, gpu: &'static str, fw: &'static str) {
        if let Some(r) = self.0.last_mut() {
            if r.va + r.pages * PG == va && r.label == label && r.gpu == gpu && r.fw == fw {
                let same = offset == r.offset;
                let next = offset == r.offset + r.pages * PG;
                if (r.repeat || r.pages == 1) && same {
                    r.repeat = true;
                    r.pages += 1;
                    return;
                }
                if !r.repeat && next {
                    r.pages += 1;
                    return;
                }
            }
        }
        self.0.push(Run {
            va,
            pages: 1,
            label: label.to_string(),
            offset,
            gpu,
            fw,
            repeat: false,
        });
    }

    /// Writes the runs under the header `vm NAME: ...`, which also gives the VM's `tables`.
    pub fn write(&self, name: u64, tables: usize, w: &mut impl Write) -> io::Result<()> {
        let pages: u64 = self.0.iter().map(|r| r.pages).sum();
        writeln!(
            w,
            "vm {name}: {} runs, {pages} pages, {tables} tables",
            self.0.len()
        )?;
        for r in &self.0 {
            let offset = if r.label == "-" {
                String::new()
            } else {
                format!(" +{:#x}", r.offset)
            };
            writeln!(
                w,
                "  {:#018x}-{:#018x} {:>10} KiB  gpu {} fw {}  {}{offset}{}",
                r.va,
                r.va + r.pages * PG,
                r.pages * PG / 1024,
                r.gpu,
                r.fw,
                r.label,
                if r.repeat {
                    "  (one page repeated)"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// Where each buffer's pages are: (first PA, bytes, label, offset of the first byte), sorted.
fn buffer_pages(m: &Machine) -> Vec<(u64, u64, String, u64)> {
    let mut v = Vec::new();
    for (handle, obj, _open) in m.gpuvm.objects() {
        // Buffers of the trace only: the firmware's objects live in the kernel VM.
        let Some(name) = m.names.get(&handle) else {
            continue;
        };
        let mut offset = 0;
        for r in obj.sg() {
            v.push((r.addr, r.len, format!("bo {name}"), offset));
            offset += r.len;
        }
    }
    v.sort_unstable_by_key(|e| e.0);
    v
}

/// Writes the mappings of every VM of the trace, by name.
pub fn write_maps(m: &Machine, w: &mut impl Write) -> io::Result<()> {
    let buffers = buffer_pages(m);
    let name_of = |pa: u64| -> (&str, u64) {
        let i = buffers.partition_point(|e| e.0 <= pa);
        match i.checked_sub(1).map(|i| &buffers[i]) {
            Some((start, len, label, offset)) if pa < start + len => {
                (label.as_str(), offset + (pa - start))
            }
            _ => ("-", 0),
        }
    };
    let uat = m.gpuvm.uat();
    let img = Image::sim();
    for (&name, &id) in &m.vms {
        let pt = uat
            .vm_table(id)
            .map_err(|e| io::Error::other(format!("VM {name}: {e:?}")))?;
        let half = dump_table(&img, pt.ttb(), false, m.dt.oas, 39).map_err(io::Error::other)?;
        if let Some(c) = half.corrupt.first() {
            return Err(io::Error::other(format!(
                "VM {name}: corrupt descriptor {:#x} at VA {:#x}: {}",
                c.desc, c.va, c.why
            )));
        }
        let mut runs = Runs::default();
        for r in &half.runs {
            let (gpu, fw) = access(r.attrs);
            for i in 0..r.size / PG {
                let (label, offset) = name_of(r.pa_of(i));
                runs.push(r.va + i * PG, label, offset, gpu, fw);
            }
        }
        runs.write(name, half.tables, w)?;
    }
    Ok(())
}
