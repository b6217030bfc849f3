// SPDX-License-Identifier: GPL-2.0

//! `uat-sim`: the UAT component at work on a simulated SoC.
//!
//! ```text
//! uat-sim [TRACE.jsonl] [--out DIR] [--snapshot DIR] [--dtb FILE] [--seed N] [--random OPS]
//!         [--maps-every N] [--emit-trace FILE]
//! ```
//!
//! With no trace it runs the built-in workload (or with `--random`, a random trace of about
//! `OPS` operations, [`workload::random`]) and checks every result against its model.
//! `--out DIR` writes `results.jsonl` (one result per operation) and `maps.txt`: each VM's
//! mappings by buffer and offset ([`uat_sim::maps`]) after every `N` operations
//! (`--maps-every`) and at the end, each dump under `after K ops:`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use uat_sim::machine::{Machine, DEFAULT_DTB};
use uat_sim::{maps, replay, snapshot, trace, workload};

struct Args {
    trace: Option<PathBuf>,
    out: Option<PathBuf>,
    snapshot: Option<PathBuf>,
    dtb: Option<PathBuf>,
    seed: u64,
    random: Option<usize>,
    maps_every: usize,
    emit: Option<PathBuf>,
}

fn usage() -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "usage: uat-sim [TRACE.jsonl] [--out DIR] [--snapshot DIR] [--dtb FILE] [--seed N] [--random OPS] [--maps-every N] [--emit-trace FILE]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        trace: None,
        out: None,
        snapshot: None,
        dtb: None,
        seed: 0x5eed,
        random: None,
        maps_every: 0,
        emit: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match s.as_str() {
            "--out" => a.out = Some(val().into()),
            "--snapshot" => a.snapshot = Some(val().into()),
            "--dtb" => a.dtb = Some(val().into()),
            "--emit-trace" => a.emit = Some(val().into()),
            "--seed" => a.seed = val().parse().unwrap_or_else(|_| usage()),
            "--random" => a.random = Some(val().parse().unwrap_or_else(|_| usage())),
            "--maps-every" => a.maps_every = val().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => usage(),
            s if s.starts_with('-') => usage(),
            s => a.trace = Some(s.into()),
        }
    }
    a
}

fn fail(msg: impl std::fmt::Display) -> ! {
    // Not `eprintln!`: it panics when stderr is closed.
    let _ = writeln!(std::io::stderr(), "uat-sim: {msg}");
    std::process::exit(1)
}

/// Standard output that may be closed early (`uat-sim | head -c 1`): once a write fails the
/// rest of the report is dropped, and the run goes on (its `--out`, `--snapshot` and exit
/// status do not depend on who reads the report).
struct Console {
    open: bool,
}

impl Console {
    fn say(&mut self, args: std::fmt::Arguments<'_>) {
        if self.open {
            let mut o = std::io::stdout().lock();
            if o.write_fmt(args).and_then(|()| o.write_all(b"\n")).is_err() {
                self.open = false;
            }
        }
    }
}

macro_rules! say {
    ($con:expr, $($arg:tt)*) => { $con.say(format_args!($($arg)*)) };
}

fn main() {
    let a = args();
    let started = Instant::now();
    // The operations, all parsed before anything runs.
    let (ops, expect, phases, name) = match &a.trace {
        Some(path) => {
            let bytes =
                std::fs::read(path).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            let ops = trace::parse_bytes(&bytes)
                .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            (ops, None, Vec::new(), path.display().to_string())
        }
        None => {
            let (g, what) = match a.random {
                Some(n) => (workload::random(a.seed, n), "random trace"),
                None => (workload::builtin(a.seed), "built-in workload"),
            };
            let (ops, exp): (Vec<_>, Vec<_>) = g.ops.into_iter().unzip();
            (
                ops,
                Some(exp),
                g.phases,
                format!("{what} (seed {:#x})", a.seed),
            )
        }
    };
    if let Some(path) = &a.emit {
        let text: String = ops.iter().map(|o| trace::to_line(o) + "\n").collect();
        std::fs::write(path, text).unwrap_or_else(|e| fail(e));
    }
    let dtb = match &a.dtb {
        Some(p) => std::fs::read(p).unwrap_or_else(|e| fail(format!("{}: {e}", p.display()))),
        None => DEFAULT_DTB.to_vec(),
    };
    let mut m = Machine::boot(&dtb).unwrap_or_else(|e| fail(e));
    let mut con = Console { open: true };
    say!(
        con,
        "uat-sim: {} ({}, OAS {} bits), TTBAT {:#x}, handoff {:#x}, pagetables {:#x}",
        m.dt.compatible,
        m.dt.generation,
        m.dt.oas,
        m.dt.ttbs.phys,
        m.dt.handoff.phys,
        m.dt.pagetables.phys
    );
    say!(
        con,
        "uat-sim: replaying {} operations of the {name}",
        ops.len()
    );
    let mut out_file = a.out.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(e));
        std::io::BufWriter::new(
            std::fs::File::create(dir.join("results.jsonl")).unwrap_or_else(|e| fail(e)),
        )
    });
    let mut maps_file = a.out.as_ref().map(|dir| {
        let path = dir.join("maps.txt");
        std::io::BufWriter::new(std::fs::File::create(path).unwrap_or_else(|e| fail(e)))
    });
    let mut maps_err = None;
    let maps_every = a.maps_every;
    let total = ops.len().max(1);
    let mut next_phase = 0;
    let mut next_pct = 0;
    let progress = |i: usize, m: &Machine| {
        if let Some(w) = maps_file.as_mut().filter(|_| maps_every > 0) {
            if i > 0 && i.is_multiple_of(maps_every) {
                if let Err(e) = writeln!(w, "after {i} ops:").and_then(|()| maps::write_maps(m, w))
                {
                    maps_err.get_or_insert(e);
                }
            }
        }
        let pct = i * 100 / total;
        let phase = phases
            .iter()
            .skip(next_phase)
            .take_while(|(at, _)| *at <= i)
            .last();
        if let Some((_, name)) = phase {
            next_phase = phases
                .iter()
                .position(|(at, _)| *at > i)
                .unwrap_or(phases.len());
            say!(
                con,
                "  [{pct:>3}%] {name:<44} {:>7} pages mapped, {:>5} tables",
                m.stats.pages_mapped,
                m.stats.tables
            );
        } else if phases.is_empty() && pct >= next_pct {
            next_pct = pct + 10;
            say!(con, "  [{pct:>3}%] {i} operations");
        }
    };
    let report = replay(
        &mut m,
        &ops,
        expect.as_deref(),
        progress,
        out_file.as_mut().map(|w| w as &mut dyn std::io::Write),
        false,
    )
    .unwrap_or_else(|e| fail(e));
    if let Some(mut w) = out_file {
        w.flush().unwrap_or_else(|e| fail(format!("results: {e}")));
    }
    if let Some(mut w) = maps_file {
        let end =
            writeln!(w, "after {} ops:", ops.len()).and_then(|()| maps::write_maps(&m, &mut w));
        maps_err
            .map_or(end, Err)
            .and_then(|()| w.flush())
            .unwrap_or_else(|e| fail(format!("maps: {e}")));
    }
    if let Some(dir) = &a.snapshot {
        snapshot::save(&m, dir).unwrap_or_else(|e| fail(e));
        say!(con, "uat-sim: snapshot in {}", dir.display());
    }
    m.shutdown().unwrap_or_else(|e| fail(e));
    let gpu = m.soc.gpu.stats();
    let st = m.gpuvm.uat().stats();
    let fw = m.soc.fw.log();
    say!(con, "summary:");
    say!(
        con,
        "  operations        {} ({} refused or faulted, as expected: {})",
        m.stats.ops,
        m.stats.errors,
        if expect.is_some() {
            if report.mismatches.is_empty() {
                "all"
            } else {
                "NO"
            }
        } else {
            "not checked"
        }
    );
    say!(
        con,
        "  pages mapped      {} now, {} at peak",
        m.pages_mapped(),
        m.stats.peak_pages_mapped
    );
    say!(
        con,
        "  table pages       {} live, {} at peak",
        m.tables(),
        m.stats.peak_tables
    );
    say!(
        con,
        "  TLB invalidations {} (page {}, range {}, ASID {}, all {})",
        gpu.tlbi.iter().sum::<u64>(),
        gpu.tlbi[0],
        gpu.tlbi[1],
        gpu.tlbi[2],
        gpu.tlbi[3]
    );
    say!(
        con,
        "  GPU accesses      {} pages ({} TLB hits, {} walks), {} faults",
        gpu.accesses,
        gpu.tlb_hits,
        gpu.walks,
        gpu.faults
    );
    say!(
        con,
        "  contexts          {} binds written, {} kept, {} evictions; {} firmware flushes",
        st.binds_written,
        st.binds_held,
        st.evictions,
        fw.flushes.len()
    );
    say!(
        con,
        "  time              {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if !report.mismatches.is_empty() {
        for (i, e, got) in report.mismatches.iter().take(10) {
            let _ = writeln!(
                std::io::stderr(),
                "op {i} {}: expected {e:?}, got {got}",
                trace::to_line(&ops[*i])
            );
        }
        fail(format!(
            "{} results differ from the model",
            report.mismatches.len()
        ));
    }
    say!(con, "uat-sim: ok");
}
