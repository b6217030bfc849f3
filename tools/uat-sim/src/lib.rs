// SPDX-License-Identifier: GPL-2.0

//! The simulator behind `make run` and `uat-dump`.
//!
//! A simulated SoC booted from a device tree ([`machine`]), traces of userspace operations
//! ([`trace`]) replayed against the driver, workloads generated with their expected results
//! ([`workload`]), snapshots of the machine ([`snapshot`]) and their decoding ([`dump`]), and each VM's
//! mappings by buffer ([`maps`]).

pub mod dump;
pub mod fdt;
pub mod machine;
pub mod maps;
pub mod snapshot;
pub mod trace;
pub mod workload;

use machine::Machine;
use serde_json::Value;
use std::io::Write;
use trace::Op;
use workload::Expect;

/// What a replay found.
#[derive(Debug, Default)]
pub struct Report {
    /// Result of each operation.
    pub results: Vec<Value>,
    /// Operations whose result was not the expected one: (index, expected, got).
    pub mismatches: Vec<(usize, Expect, Value)>,
}

/// Replays `ops` on `m`; with `expect`, checks every result. `progress` is called before each
/// operation with its index. Each result goes to `out` if given, and stays in the report's
/// `results` only if `keep_results` (a long trace's results do not fit in memory).
pub fn replay(
    m: &mut Machine,
    ops: &[Op],
    expect: Option<&[Expect]>,
    mut progress: impl FnMut(usize, &Machine),
    mut out: Option<&mut dyn Write>,
    keep_results: bool,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    for (i, op) in ops.iter().enumerate() {
        progress(i, m);
        let r = m.execute(op);
        if let Some(w) = out.as_deref_mut() {
            writeln!(w, "{r}")?;
        }
        if let Some(e) = expect.and_then(|e| e.get(i)) {
            if !e.matches(&r) {
                report.mismatches.push((i, e.clone(), r.clone()));
            }
        }
        if keep_results {
            report.results.push(r);
        }
    }
    Ok(report)
}
