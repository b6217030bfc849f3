// SPDX-License-Identifier: GPL-2.0

//! `uat-dump`: decodes the UAT tables of a RAM image, per TTBAT slot, into runs of mappings.
//!
//! Written from the hardware facts, independently of the driver: descriptors, permissions and
//! attributes are decoded here again, so that a dump can be trusted to show what the GPU would
//! see, and corrupt descriptors (block-type or reserved encodings, tables outside the image)
//! are reported where they are, never followed.

use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::fs::FileExt;

const PG: u64 = 1 << 14;

/// A RAM image: `base` is the physical address of its first byte.
pub struct Image {
    file: File,
    base: u64,
    size: u64,
}

impl Image {
    /// Opens an image file.
    pub fn open(path: &std::path::Path, base: u64) -> std::io::Result<Image> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(Image { file, base, size })
    }

    /// Reads the table page at `pa` as descriptors, `None` outside the image.
    fn table(&self, pa: u64) -> Option<Vec<u64>> {
        if pa < self.base || pa - self.base + PG > self.size || !pa.is_multiple_of(PG) {
            return None;
        }
        let mut b = vec![0u8; PG as usize];
        self.file.read_exact_at(&mut b, pa - self.base).ok()?;
        Some(
            b.chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    /// Reads a 64-bit word.
    pub fn word(&self, pa: u64) -> Option<u64> {
        if pa < self.base || pa - self.base + 8 > self.size {
            return None;
        }
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, pa - self.base).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// A run of pages mapped contiguously (VA and PA) with the same attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// First VA.
    pub va: u64,
    /// First PA.
    pub pa: u64,
    /// Bytes.
    pub size: u64,
    /// The leaf descriptor's bits other than the output address.
    pub attrs: u64,
    /// Every page of the run maps the same physical page (a sparse / SINGLE_PAGE binding).
    pub repeat: bool,
}

impl Run {
    /// The physical address behind the `i`-th page.
    pub fn pa_of(&self, i: u64) -> u64 {
        if self.repeat {
            self.pa
        } else {
            self.pa + i * PG
        }
    }
}

/// A descriptor that cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt {
    /// Level (1..=3).
    pub level: u32,
    /// VA the descriptor covers.
    pub va: u64,
    /// The descriptor.
    pub desc: u64,
    /// The table holding it.
    pub table: u64,
}

/// One half of one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalfDump {
    /// Slot.
    pub slot: usize,
    /// 0 = lower (ttb0), 1 = upper (ttb1).
    pub half: usize,
    /// The TTB word.
    pub ttb: u64,
    /// Runs in VA order.
    pub runs: Vec<Run>,
    /// Corrupt descriptors found.
    pub corrupt: Vec<Corrupt>,
}

fn access(desc: u64) -> (&'static str, &'static str) {
    let ap = (desc >> 6) & 3;
    let pxn = (desc >> 53) & 1;
    let uxn = (desc >> 54) & 1;
    // (GPU, firmware), per the permission table.
    match (ap, uxn, pxn) {
        (0, 0, 0) => ("--", "--"),
        (0, 0, 1) => ("RO", "RO"),
        (0, 1, 0) => ("WO", "WO"),
        (0, 1, 1) => ("RW", "RW"),
        (1, 0, 0) => ("--", "RO"),
        (1, 0, 1) => ("--", "--"),
        (1, 1, 0) => ("--", "RW"),
        (1, 1, 1) => ("RO", "RW"),
        (2, 0, 0) => ("RO", "--"),
        (2, 0, 1) => ("WO", "--"),
        (2, 1, 0) => ("RW", "--"),
        _ => ("--", "--"),
    }
}

/// Human-readable attributes: GPU and firmware access, memory type, global or not.
pub fn describe_attrs(attrs: u64) -> String {
    let (gpu, fw) = access(attrs);
    let mem = match (attrs >> 2) & 7 {
        0 => "cached",
        1 => "device",
        2 => "uncached",
        _ => "attr?",
    };
    let scope = if attrs & (1 << 11) != 0 {
        "nG"
    } else {
        "global"
    };
    format!("gpu {gpu} fw {fw} {mem} AP{} {scope}", (attrs >> 6) & 3)
}

fn walk(img: &Image, oas: u32, ias: u32, table: u64, level: u32, va_base: u64, out: &mut HalfDump) {
    let Some(t) = img.table(table) else {
        out.corrupt.push(Corrupt {
            level,
            va: va_base,
            desc: table,
            table,
        });
        return;
    };
    let shift = 14 + 11 * (3 - level);
    let entries = if level == 1 {
        1usize << (ias - 36)
    } else {
        2048
    };
    let oa_mask = ((1u64 << oas) - 1) & !(PG - 1);
    for (i, &d) in t.iter().enumerate().take(entries) {
        let va = va_base + ((i as u64) << shift);
        match d & 3 {
            0 => continue,
            3 => {}
            _ => {
                out.corrupt.push(Corrupt {
                    level,
                    va,
                    desc: d,
                    table,
                });
                continue;
            }
        }
        if level < 3 {
            walk(img, oas, ias, d & oa_mask, level + 1, va, out);
            continue;
        }
        let pa = d & oa_mask;
        let attrs = d & !oa_mask;
        match out.runs.last_mut() {
            Some(r)
                if r.va + r.size == va && r.attrs == attrs && !r.repeat && r.pa + r.size == pa =>
            {
                r.size += PG
            }
            Some(r)
                if r.va + r.size == va
                    && r.attrs == attrs
                    && r.pa == pa
                    && (r.repeat || r.size == PG) =>
            {
                r.repeat = true;
                r.size += PG;
            }
            _ => out.runs.push(Run {
                va,
                pa,
                size: PG,
                attrs,
                repeat: false,
            }),
        }
    }
}

/// Decodes one table: `table` is a top-level table's physical address, walked as the lower
/// half, or the upper half if `upper` (reported as slot 0).
pub fn dump_table(img: &Image, table: u64, upper: bool, oas: u32, ias: u32) -> HalfDump {
    let half = upper as usize;
    let mut h = HalfDump {
        slot: 0,
        half,
        ttb: table | 1,
        runs: Vec::new(),
        corrupt: Vec::new(),
    };
    let base = if upper { !((1u64 << ias) - 1) } else { 0 };
    walk(img, oas, ias, table, 1, base, &mut h);
    h
}

/// Decodes every valid half of every TTBAT slot.
pub fn dump(img: &Image, ttbat: u64, oas: u32, ias: u32) -> Vec<HalfDump> {
    let mut out = Vec::new();
    for slot in 0..64 {
        for half in 0..2 {
            let Some(ttb) = img.word(ttbat + 16 * slot as u64 + 8 * half as u64) else {
                continue;
            };
            if ttb & 1 == 0 {
                continue;
            }
            let mut h = HalfDump {
                slot,
                half,
                ttb,
                runs: Vec::new(),
                corrupt: Vec::new(),
            };
            let table = ttb & ((1 << 48) - 1) & !1;
            let base = if half == 0 { 0 } else { !((1u64 << ias) - 1) };
            walk(img, oas, ias, table, 1, base, &mut h);
            out.push(h);
        }
    }
    out
}

/// The text form.
pub fn to_text(d: &[HalfDump]) -> String {
    let mut s = String::new();
    for h in d {
        let pages: u64 = h.runs.iter().map(|r| r.size / PG).sum();
        s += &format!(
            "slot {} {} (ASID {}) table {:#x}: {} runs, {} pages\n",
            h.slot,
            if h.half == 0 { "ttb0" } else { "ttb1" },
            h.ttb >> 48,
            h.ttb & ((1 << 48) - 1) & !1,
            h.runs.len(),
            pages
        );
        for r in &h.runs {
            s += &format!(
                "  {:#018x}-{:#018x} -> {:#012x} {:>10} KiB  {}{}\n",
                r.va,
                r.va + r.size,
                r.pa,
                r.size / 1024,
                describe_attrs(r.attrs),
                if r.repeat {
                    "  (one page repeated)"
                } else {
                    ""
                }
            );
        }
        for c in &h.corrupt {
            s += &format!(
                "  CORRUPT L{} descriptor {:#018x} at VA {:#018x} (table {:#x}), not followed\n",
                c.level, c.desc, c.va, c.table
            );
        }
    }
    s
}

/// The JSON form.
pub fn to_json(d: &[HalfDump]) -> Value {
    let hex = |v: u64| Value::String(format!("{v:#x}"));
    Value::Array(
        d.iter()
            .map(|h| {
                json!({
                    "slot": h.slot,
                    "half": if h.half == 0 { "ttb0" } else { "ttb1" },
                    "asid": h.ttb >> 48,
                    "table": hex(h.ttb & ((1 << 48) - 1) & !1),
                    "runs": h.runs.iter().map(|r| json!({
                        "va": hex(r.va), "pa": hex(r.pa), "size": hex(r.size),
                        "attrs": hex(r.attrs), "perm": describe_attrs(r.attrs), "repeat": r.repeat,
                    })).collect::<Vec<_>>(),
                    "corrupt": h.corrupt.iter().map(|c| json!({
                        "level": c.level, "va": hex(c.va), "desc": hex(c.desc), "table": hex(c.table),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
