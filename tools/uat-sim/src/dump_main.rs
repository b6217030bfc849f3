// SPDX-License-Identifier: GPL-2.0

//! `uat-dump`: the mappings of every TTBAT slot of a snapshot (or of a raw RAM image).
//!
//! ```text
//! uat-dump SNAPSHOT_DIR [--json]
//! uat-dump --image FILE --base ADDR --ttbat ADDR [--oas BITS] [--json]
//! uat-dump --image FILE --base ADDR --ttb ADDR [--upper] [--oas BITS] [--json]
//! ```

use std::path::PathBuf;
use uat_sim::dump::{dump, to_json, to_text, Image};

fn usage() -> ! {
    eprintln!(
        "usage: uat-dump SNAPSHOT_DIR [--json]\n       uat-dump --image FILE --base ADDR (--ttbat ADDR | --ttb ADDR [--upper]) [--oas BITS] [--json]"
    );
    std::process::exit(2)
}

fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| usage())
}

fn main() {
    let mut json = false;
    let (mut ttb, mut upper) = (None, false);
    let (mut dir, mut image, mut base, mut ttbat, mut oas) = (None, None, None, None, 40u64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--json" => json = true,
            "--image" => image = Some(PathBuf::from(val())),
            "--base" => base = Some(num(&val())),
            "--ttbat" => ttbat = Some(num(&val())),
            "--oas" => oas = num(&val()),
            "--ttb" => ttb = Some(num(&val())),
            "--upper" => upper = true,
            s if s.starts_with('-') => usage(),
            s => dir = Some(PathBuf::from(s)),
        }
    }
    let (img_path, base, ttbat, oas) = match (dir, image) {
        (Some(d), None) => {
            let desc: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(d.join(uat_sim::snapshot::DESCRIPTION)).unwrap_or_else(
                    |e| {
                        eprintln!("uat-dump: {}: {e}", d.display());
                        std::process::exit(1)
                    },
                ),
            )
            .unwrap_or_else(|e| {
                eprintln!("uat-dump: bad description: {e}");
                std::process::exit(1)
            });
            let h = |k: &str| num(desc[k].as_str().unwrap_or_else(|| usage()));
            (
                d.join(uat_sim::snapshot::RAM_IMAGE),
                h("ram_base"),
                h("ttbat"),
                desc["oas"].as_u64().unwrap_or(40),
            )
        }
        (None, Some(i)) => (
            i,
            base.unwrap_or_else(|| usage()),
            ttbat.unwrap_or_else(|| usage()),
            oas,
        ),
        _ => usage(),
    };
    let img = Image::open(&img_path, base).unwrap_or_else(|e| {
        eprintln!("uat-dump: {}: {e}", img_path.display());
        std::process::exit(1)
    });
    let d = match ttb {
        Some(t) => vec![uat_sim::dump::dump_table(
            &img,
            t & ((1 << 48) - 1) & !1,
            upper,
            oas as u32,
            39,
        )],
        None => dump(&img, ttbat, oas as u32, 39),
    };
    let text = if json {
        serde_json::to_string_pretty(&to_json(&d)).unwrap_or_default() + "\n"
    } else {
        to_text(&d)
    };
    // A closed pipe (`uat-dump | head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}
