// SPDX-License-Identifier: GPL-2.0

//! Snapshots of the simulated machine: the raw RAM image (a sparse file: pages that are all
//! zero are holes) and a JSON description of where things are, for `uat-dump` and for
//! developers comparing with a real machine's memory.

use crate::machine::Machine;
use kernel::sim;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// File names inside a snapshot directory.
pub const RAM_IMAGE: &str = "ram.img";
/// The description.
pub const DESCRIPTION: &str = "machine.json";

fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

/// The JSON description of the machine.
pub fn describe(m: &Machine) -> Value {
    let uat = m.gpuvm.uat();
    let objects: Vec<Value> = m
        .gpuvm
        .objects()
        .map(|(handle, obj, open)| {
            let pages: Vec<Value> = (0..obj.size() >> 14)
                .map(|p| hex(obj.phys_at(p << 14).unwrap_or(0)))
                .collect();
            json!({"bo": m.names.get(&handle), "handle": handle, "open": open,
                   "size": hex(obj.size()), "pages": pages})
        })
        .collect();
    let vms: Vec<Value> = m
        .vms
        .iter()
        .map(|(name, &id)| {
            let ttb = uat.vm_table(id).map(|pt| pt.ttb()).unwrap_or(0);
            json!({"vm": name, "id": id, "slot": uat.slot_of(id), "ttb": hex(ttb)})
        })
        .collect();
    json!({
        "ram_base": hex(sim::RAM_BASE),
        "ram_size": hex(sim::RAM_SPAN),
        "ram_image": RAM_IMAGE,
        "ttbat": hex(m.dt.ttbs.phys),
        "pagetables": hex(m.dt.pagetables.phys),
        "handoff": hex(m.dt.handoff.phys),
        "oas": m.dt.oas,
        "gpu": m.dt.generation,
        "compatible": m.dt.compatible,
        "objects": objects,
        "vms": vms,
    })
}

/// Writes the snapshot into `dir` (created if needed).
pub fn save(m: &Machine, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut img = File::create(dir.join(RAM_IMAGE))?;
    let mut page = vec![0u8; 1 << 14];
    let mut pa = sim::RAM_BASE;
    while pa < sim::RAM_BASE + sim::RAM_SPAN {
        if sim::is_ram(pa)
            && sim::read_phys(pa, &mut page).is_some()
            && page.iter().any(|&b| b != 0)
        {
            img.seek(SeekFrom::Start(pa - sim::RAM_BASE))?;
            img.write_all(&page)?;
        }
        pa += 1 << 14;
    }
    img.set_len(sim::RAM_SPAN)?;
    let desc = serde_json::to_string_pretty(&describe(m)).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(DESCRIPTION), desc + "\n")
}
