// SPDX-License-Identifier: GPL-2.0

//! `uat-dump`: the mappings of every TTBAT slot of a snapshot (or of a raw RAM image).
//!
//! ```text
//! uat-dump SNAPSHOT_DIR [--json]
//! uat-dump --image FILE --base ADDR --ttbat ADDR [--oas BITS] [--json]
//! uat-dump (SNAPSHOT_DIR | --image FILE --base ADDR) --ttb ADDR [--upper] [--oas BITS] [--json]
//! ```
//!
//! Exit status 0 with the dump (corrupt descriptors are part of it, flagged), 1 with a message
//! naming what is wrong when the image or the description cannot be used, 2 on bad usage.

use std::io::Write;
use std::path::PathBuf;
use uat_sim::dump::{dump, dump_table, parse_description, write_json, write_text, Image};

fn usage(why: &str) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "uat-dump: {why}\nusage: uat-dump SNAPSHOT_DIR [--json]\n       uat-dump --image FILE --base ADDR (--ttbat ADDR | --ttb ADDR [--upper]) [--oas BITS] [--json]\n       uat-dump SNAPSHOT_DIR --ttb ADDR [--upper] [--json]"
    );
    std::process::exit(2)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    let _ = writeln!(std::io::stderr(), "uat-dump: {msg}");
    std::process::exit(1)
}

fn num(opt: &str, s: &str) -> u64 {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| usage(&format!("{opt}: {s:?} is not a number")))
}

fn description(dir: &std::path::Path) -> Result<(u64, u64, Option<u64>), String> {
    let path = dir.join(uat_sim::snapshot::DESCRIPTION);
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_description(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() {
    let mut json = false;
    let (mut ttb, mut upper) = (None, false);
    let (mut dir, mut image, mut base, mut ttbat, mut oas) = (None, None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--json" => json = true,
            "--image" => image = Some(PathBuf::from(val())),
            "--base" => base = Some(num("--base", &val())),
            "--ttbat" => ttbat = Some(num("--ttbat", &val())),
            "--oas" => oas = Some(num("--oas", &val())),
            "--ttb" => ttb = Some(num("--ttb", &val())),
            "--upper" => upper = true,
            s if s.starts_with('-') => usage(&format!("unknown option {s}")),
            s => dir = Some(PathBuf::from(s)),
        }
    }
    let (img_path, base, ttbat, oas) = match (dir, image) {
        (Some(d), None) => {
            if base.is_some() {
                usage("--base comes from the snapshot's description");
            }
            let (b, t, o) = description(&d).unwrap_or_else(|e| fail(e));
            (
                d.join(uat_sim::snapshot::RAM_IMAGE),
                b,
                ttbat.or(Some(t)),
                oas.or(o).unwrap_or(40),
            )
        }
        (None, Some(i)) => (
            i,
            base.unwrap_or_else(|| usage("--image needs --base")),
            ttbat,
            oas.unwrap_or(40),
        ),
        (Some(_), Some(_)) => usage("a snapshot directory or --image, not both"),
        (None, None) => usage("no snapshot directory nor --image"),
    };
    let oas = u32::try_from(oas).unwrap_or(u32::MAX);
    let img = Image::open(&img_path, base).unwrap_or_else(|e| fail(e));
    let d = match (ttb, ttbat) {
        (Some(t), _) => dump_table(&img, t, upper, oas, 39).map(|h| vec![h]),
        (None, Some(t)) => dump(&img, t, oas, 39),
        (None, None) => usage("--image needs --ttbat or --ttb"),
    }
    .unwrap_or_else(|e| fail(format!("{}: {e}", img_path.display())));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let r = if json {
        write_json(&d, &mut out)
    } else {
        write_text(&d, &mut out)
    };
    // A closed pipe (`uat-dump | head`) is not an error.
    if let Err(e) = r.and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            fail(e);
        }
    }
}
