// SPDX-License-Identifier: GPL-2.0

//! `uat-dump`: decodes the UAT tables of a RAM image, per TTBAT slot, into runs of mappings.
//!
//! Written from the hardware facts, independently of the driver: descriptors, permissions and
//! attributes are decoded here again, so that a dump can be trusted to show what the GPU would
//! see, and corrupt descriptors (block-type or reserved encodings, tables outside the image)
//! are reported where they are, never followed.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

const PG: u64 = 1 << 14;

/// Output address sizes accepted: the UAT's descriptors hold at most 48 address bits.
pub const OAS_BITS: std::ops::RangeInclusive<u32> = 32..=48;

/// A RAM image: `base` is the physical address of its first byte.
pub struct Image {
    backing: Backing,
    base: u64,
    size: u64,
}

/// Where an image's bytes are.
enum Backing {
    /// A snapshot's file.
    File(File),
    /// The simulated RAM of the running machine (`kernel::sim`).
    Sim,
}

impl Image {
    /// Opens an image file: a regular, non-empty file whose end fits in 64-bit addresses.
    pub fn open(path: &std::path::Path, base: u64) -> Result<Image, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let size = meta.len();
        if size == 0 {
            return Err(format!("{}: empty image", path.display()));
        }
        if base.checked_add(size - 1).is_none() {
            return Err(format!(
                "{}: {size:#x} bytes at base {base:#x} run past 2^64",
                path.display()
            ));
        }
        Ok(Image {
            backing: Backing::File(file),
            base,
            size,
        })
    }

    /// The simulated RAM of this process's machine, read in place (no snapshot needed).
    pub fn sim() -> Image {
        Image {
            backing: Backing::Sim,
            base: kernel::sim::RAM_BASE,
            size: kernel::sim::RAM_SPAN,
        }
    }

    /// Reads `buf.len()` bytes at `pa`, which the caller checked are inside the image.
    fn read_at(&self, buf: &mut [u8], pa: u64) -> Option<()> {
        match &self.backing {
            Backing::File(f) => f.read_exact_at(buf, pa - self.base).ok(),
            Backing::Sim => kernel::sim::read_phys(pa, buf),
        }
    }

    /// Whether `[pa, pa + len)` is inside the image.
    pub fn contains(&self, pa: u64, len: u64) -> bool {
        pa >= self.base && pa - self.base <= self.size && self.size - (pa - self.base) >= len
    }

    /// Reads the table page at `pa` as descriptors, `None` outside the image.
    fn table(&self, pa: u64) -> Option<Vec<u64>> {
        if !self.contains(pa, PG) || !pa.is_multiple_of(PG) {
            return None;
        }
        let mut b = vec![0u8; PG as usize];
        self.read_at(&mut b, pa)?;
        Some(
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        )
    }

    /// Reads a 64-bit word.
    pub fn word(&self, pa: u64) -> Option<u64> {
        if !self.contains(pa, 8) {
            return None;
        }
        let mut b = [0u8; 8];
        self.read_at(&mut b, pa)?;
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
    /// Why.
    pub why: &'static str,
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
    /// The same top-level table as this earlier (slot, half): not walked again.
    pub same_as: Option<(usize, usize)>,
    /// The table pages below the top-level table that the walk reached (each once), counted as
    /// they are reached, before knowing whether they lie in the image (a walk that reports
    /// something corrupt has no meaningful count); 0 when `same_as`.
    pub tables: usize,
}

/// Why a descriptor is not followed.
pub mod why {
    /// Block (`0b01`) or reserved (`0b10`) encoding.
    pub const ENCODING: &str = "block or reserved encoding";
    /// A table outside the image or unaligned.
    pub const TABLE_OUTSIDE: &str = "table outside the image";
    /// A table already reached from another descriptor: shared, or a loop.
    pub const TABLE_REUSED: &str = "table already reached (shared or a loop)";
    /// A (non-device) page outside the image.
    pub const PAGE_OUTSIDE: &str = "page outside the image";
}

/// Where the walk has been: each table page is walked at most once per dump, so the work is
/// bounded by the image (at most one walk of 2048 descriptors per table page it holds).
#[derive(Default)]
struct Seen {
    /// Table page -> (slot, half) of the top-level table that reached it first, and whether
    /// it was a top-level table.
    tables: HashMap<u64, ((usize, usize), bool)>,
}

/// The GPU's and the firmware's access to a page mapped with descriptor `desc`, as `RW`, `RO`,
/// `WO` or `--`.
pub fn access(desc: u64) -> (&'static str, &'static str) {
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

fn oa_mask(oas: u32) -> u64 {
    ((1u64 << oas) - 1) & !(PG - 1)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    img: &Image,
    oas: u32,
    ias: u32,
    table: u64,
    level: u32,
    va_base: u64,
    out: &mut HalfDump,
    seen: &mut Seen,
) {
    let corrupt = |out: &mut HalfDump, why, va, desc, table| {
        out.corrupt.push(Corrupt {
            why,
            level,
            va,
            desc,
            table,
        })
    };
    let Some(t) = img.table(table) else {
        corrupt(out, why::TABLE_OUTSIDE, va_base, table, table);
        return;
    };
    let shift = 14 + 11 * (3 - level);
    let entries = if level == 1 {
        1usize << (ias - 36)
    } else {
        2048
    };
    let oa_mask = oa_mask(oas);
    for (i, &d) in t.iter().enumerate().take(entries) {
        let va = va_base + ((i as u64) << shift);
        match d & 3 {
            0 => continue,
            3 => {}
            _ => {
                corrupt(out, why::ENCODING, va, d, table);
                continue;
            }
        }
        if level < 3 {
            let next = d & oa_mask;
            if seen
                .tables
                .insert(next, ((out.slot, out.half), false))
                .is_some()
            {
                // Reached before, from this table or another: a loop or a shared table.
                // (Not walked again: its mappings were reported where it was first reached.)
                corrupt(out, why::TABLE_REUSED, va, d, table);
                continue;
            }
            out.tables += 1;
            walk(img, oas, ias, next, level + 1, va, out, seen);
            continue;
        }
        let pa = d & oa_mask;
        let attrs = d & !oa_mask;
        // Device memory (MMIO) is outside RAM by nature; anything else must be in the image.
        if (attrs >> 2) & 7 != 1 && !img.contains(pa, PG) {
            corrupt(out, why::PAGE_OUTSIDE, va, d, table);
            continue;
        }
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

fn check_oas(oas: u32) -> Result<(), String> {
    if OAS_BITS.contains(&oas) {
        Ok(())
    } else {
        Err(format!(
            "OAS {oas} bits not supported ({}..={})",
            OAS_BITS.start(),
            OAS_BITS.end()
        ))
    }
}

fn walk_root(img: &Image, oas: u32, ias: u32, mut h: HalfDump, seen: &mut Seen) -> HalfDump {
    let table = h.ttb & ((1 << 48) - 1) & !1;
    let base = if h.half == 0 { 0 } else { !((1u64 << ias) - 1) };
    match seen.tables.get(&table) {
        // The same top-level table again (a user slot's ttb1 is the kernel's upper table).
        Some(&(first, true)) => h.same_as = Some(first),
        Some(_) => h.corrupt.push(Corrupt {
            why: why::TABLE_REUSED,
            level: 1,
            va: base,
            desc: h.ttb,
            table,
        }),
        None => {
            seen.tables.insert(table, ((h.slot, h.half), true));
            walk(img, oas, ias, table, 1, base, &mut h, seen);
        }
    }
    h
}

/// Decodes one table: `table` is a top-level table's physical address, walked as the lower
/// half, or the upper half if `upper` (reported as slot 0).
pub fn dump_table(
    img: &Image,
    table: u64,
    upper: bool,
    oas: u32,
    ias: u32,
) -> Result<HalfDump, String> {
    check_oas(oas)?;
    let h = HalfDump {
        slot: 0,
        half: upper as usize,
        ttb: (table & ((1 << 48) - 1) & !1) | 1,
        runs: Vec::new(),
        corrupt: Vec::new(),
        same_as: None,
        tables: 0,
    };
    Ok(walk_root(img, oas, ias, h, &mut Seen::default()))
}

/// Decodes every valid half of every TTBAT slot. The TTBAT must be inside the image.
pub fn dump(img: &Image, ttbat: u64, oas: u32, ias: u32) -> Result<Vec<HalfDump>, String> {
    check_oas(oas)?;
    if !img.contains(ttbat, 64 * 16) {
        return Err(format!(
            "the TTBAT at {ttbat:#x} is not inside the image ({:#x}..{:#x})",
            img.base,
            img.base as u128 + img.size as u128
        ));
    }
    let mut seen = Seen::default();
    let mut out = Vec::new();
    for slot in 0..64 {
        for half in 0..2 {
            let ttb = img
                .word(ttbat + 16 * slot as u64 + 8 * half as u64)
                .ok_or_else(|| format!("TTBAT slot {slot}: unreadable"))?;
            if ttb & 1 == 0 {
                continue;
            }
            let h = HalfDump {
                slot,
                half,
                ttb,
                runs: Vec::new(),
                corrupt: Vec::new(),
                same_as: None,
                tables: 0,
            };
            out.push(walk_root(img, oas, ias, h, &mut seen));
        }
    }
    Ok(out)
}

fn half_name(half: usize) -> &'static str {
    if half == 0 {
        "ttb0"
    } else {
        "ttb1"
    }
}

/// Writes the text form.
pub fn write_text(d: &[HalfDump], w: &mut impl Write) -> std::io::Result<()> {
    for h in d {
        let pages: u64 = h.runs.iter().map(|r| r.size / PG).sum();
        write!(
            w,
            "slot {} {} (ASID {}) table {:#x}: ",
            h.slot,
            half_name(h.half),
            h.ttb >> 48,
            h.ttb & ((1 << 48) - 1) & !1,
        )?;
        match h.same_as {
            Some((slot, half)) => {
                writeln!(w, "the same tables as slot {slot} {}", half_name(half))?
            }
            None => writeln!(w, "{} runs, {} pages", h.runs.len(), pages)?,
        }
        for r in &h.runs {
            writeln!(
                w,
                "  {:#018x}-{:#018x} -> {:#012x} {:>10} KiB  {}{}",
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
            )?;
        }
        for c in &h.corrupt {
            writeln!(
                w,
                "  CORRUPT L{} descriptor {:#018x} at VA {:#018x} (table {:#x}), not followed: {}",
                c.level, c.desc, c.va, c.table, c.why
            )?;
        }
    }
    Ok(())
}

/// The text form.
pub fn to_text(d: &[HalfDump]) -> String {
    let mut v = Vec::new();
    write_text(d, &mut v).expect("writing to memory");
    String::from_utf8(v).expect("the text form is ASCII")
}

/// What `uat-dump` reads from a snapshot's `machine.json`: (RAM base, TTBAT, OAS if given).
/// The other fields are for people; these must be numbers (or `"0x..."` strings), given once.
pub fn parse_description(text: &[u8]) -> Result<(u64, u64, Option<u64>), String> {
    use crate::trace::Num;
    #[derive(serde::Deserialize)]
    struct Description {
        ram_base: Num,
        ttbat: Num,
        oas: Option<Num>,
    }
    let d: Description = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    Ok((d.ram_base.0, d.ttbat.0, d.oas.map(|o| o.0)))
}

fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

/// Writes the JSON form (an array of halves), one run at a time: memory does not grow with
/// the number of runs beyond the dump itself.
pub fn write_json(d: &[HalfDump], w: &mut impl Write) -> std::io::Result<()> {
    writeln!(w, "[")?;
    for (i, h) in d.iter().enumerate() {
        let head = json!({
            "slot": h.slot,
            "half": half_name(h.half),
            "asid": h.ttb >> 48,
            "table": hex(h.ttb & ((1 << 48) - 1) & !1),
            "same_as": h.same_as.map(|(s, hh)| json!({"slot": s, "half": half_name(hh)})),
        })
        .to_string();
        // The head object, reopened to append the two lists.
        write!(w, "  {},\n    \"runs\": [", &head[..head.len() - 1])?;
        for (j, r) in h.runs.iter().enumerate() {
            let run = json!({
                "va": hex(r.va), "pa": hex(r.pa), "size": hex(r.size),
                "attrs": hex(r.attrs), "perm": describe_attrs(r.attrs), "repeat": r.repeat,
            });
            write!(w, "{}\n      {run}", if j == 0 { "" } else { "," })?;
        }
        write!(w, "],\n    \"corrupt\": [")?;
        for (j, c) in h.corrupt.iter().enumerate() {
            let c = json!({
                "level": c.level, "va": hex(c.va), "desc": hex(c.desc), "table": hex(c.table),
                "why": c.why,
            });
            write!(w, "{}\n      {c}", if j == 0 { "" } else { "," })?;
        }
        writeln!(w, "]}}{}", if i + 1 == d.len() { "" } else { "," })?;
    }
    writeln!(w, "]")
}
