// SPDX-License-Identifier: GPL-2.0

//! Traces of userspace operations: JSON Lines, one operation per line, mirroring the uAPI.
//!
//! ```text
//! {"op":"vm_create","vm":1}
//! {"op":"gem_create","bo":7,"size":"0x40000"}
//! {"op":"bind","vm":1,"bo":7,"offset":"0x0","range":"0x40000","addr":"0x1000000","flags":["READ","WRITE"]}
//! {"op":"unbind","vm":1,"addr":"0x1004000","range":"0x8000"}
//! {"op":"submit","vm":1}
//! {"op":"complete","vm":1}
//! {"op":"gpu_write","vm":1,"addr":"0x1000010","data":"00ff..."}
//! {"op":"gpu_read","vm":1,"addr":"0x1000010","len":16}
//! {"op":"gem_close","bo":7}
//! {"op":"vm_destroy","vm":1}
//! ```
//!
//! Numbers are JSON integers or strings (`"0x..."` hex or decimal). `vm` and `bo` are the
//! trace's own names for objects, mapped to the driver's IDs and handles on replay. Blank lines
//! and lines starting with `#` are skipped. A whole trace is parsed before anything runs, so a
//! malformed line stops the replay before it touches any state.

use asahi::gpuvm::bind_flags;
use serde_json::{Map, Value};

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create VM `vm`.
    VmCreate { vm: u64 },
    /// Destroy VM `vm`.
    VmDestroy { vm: u64 },
    /// Create buffer `bo` of `size` bytes.
    GemCreate { bo: u64, size: u64 },
    /// Close buffer `bo`'s handle.
    GemClose { bo: u64 },
    /// VM_BIND map.
    Bind {
        vm: u64,
        bo: u64,
        offset: u64,
        range: u64,
        addr: u64,
        flags: u32,
    },
    /// VM_BIND unmap.
    Unbind { vm: u64, addr: u64, range: u64 },
    /// Work submitted for `vm`.
    Submit { vm: u64 },
    /// Work of `vm` completed.
    Complete { vm: u64 },
    /// The GPU writes `data` at `addr` in `vm`.
    GpuWrite { vm: u64, addr: u64, data: Vec<u8> },
    /// The GPU reads `len` bytes at `addr` in `vm`.
    GpuRead { vm: u64, addr: u64, len: u64 },
}

/// A trace line that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "trace line {}: {}", self.line, self.what)
    }
}

fn num(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match obj.get(key) {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("\"{key}\" must be a non-negative integer")),
        Some(Value::String(s)) => {
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.map_err(|_| format!("\"{key}\": {s:?} is not a number"))
        }
        Some(_) => Err(format!("\"{key}\" must be a number or a string")),
        None => Err(format!("missing \"{key}\"")),
    }
}

fn flags(obj: &Map<String, Value>) -> Result<u32, String> {
    match obj.get("flags") {
        None => Ok(0),
        Some(Value::Array(names)) => names.iter().try_fold(0, |acc, n| {
            let bit = match n.as_str() {
                Some("READ") => bind_flags::READ,
                Some("WRITE") => bind_flags::WRITE,
                Some("SINGLE_PAGE") => bind_flags::SINGLE_PAGE,
                Some("UNBIND") => bind_flags::UNBIND,
                _ => return Err(format!("unknown flag {n}")),
            };
            Ok(acc | bit)
        }),
        Some(_) => {
            let v = num(obj, "flags")?;
            u32::try_from(v).map_err(|_| "\"flags\" does not fit in 32 bits".to_string())
        }
    }
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("\"data\" must have an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("\"data\": bad hex at {i}"))
        })
        .collect()
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Op, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or("missing \"op\"")?;
    let allowed: &[&str] = match op {
        "vm_create" | "vm_destroy" | "submit" | "complete" => &["vm"],
        "gem_create" => &["bo", "size"],
        "gem_close" => &["bo"],
        "bind" => &["vm", "bo", "offset", "range", "addr", "flags"],
        "unbind" => &["vm", "addr", "range"],
        "gpu_write" => &["vm", "addr", "data"],
        "gpu_read" => &["vm", "addr", "len"],
        other => return Err(format!("unknown op {other:?}")),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| *k != "op" && !allowed.contains(&k.as_str()))
    {
        return Err(format!("unexpected field \"{k}\" for {op}"));
    }
    Ok(match op {
        "vm_create" => Op::VmCreate {
            vm: num(obj, "vm")?,
        },
        "vm_destroy" => Op::VmDestroy {
            vm: num(obj, "vm")?,
        },
        "submit" => Op::Submit {
            vm: num(obj, "vm")?,
        },
        "complete" => Op::Complete {
            vm: num(obj, "vm")?,
        },
        "gem_create" => Op::GemCreate {
            bo: num(obj, "bo")?,
            size: num(obj, "size")?,
        },
        "gem_close" => Op::GemClose {
            bo: num(obj, "bo")?,
        },
        "bind" => Op::Bind {
            vm: num(obj, "vm")?,
            bo: num(obj, "bo")?,
            offset: num(obj, "offset")?,
            range: num(obj, "range")?,
            addr: num(obj, "addr")?,
            flags: flags(obj)?,
        },
        "unbind" => Op::Unbind {
            vm: num(obj, "vm")?,
            addr: num(obj, "addr")?,
            range: num(obj, "range")?,
        },
        "gpu_write" => Op::GpuWrite {
            vm: num(obj, "vm")?,
            addr: num(obj, "addr")?,
            data: hex_bytes(
                obj.get("data")
                    .and_then(Value::as_str)
                    .ok_or("missing \"data\" (hex string)")?,
            )?,
        },
        _ => {
            let len = num(obj, "len")?;
            if len > 1 << 20 {
                return Err("\"len\" above 1 MiB".into());
            }
            Op::GpuRead {
                vm: num(obj, "vm")?,
                addr: num(obj, "addr")?,
                len,
            }
        }
    })
}

/// Parses a whole trace; the first bad line is an error with its number.
pub fn parse(text: &str) -> Result<Vec<Op>, ParseError> {
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        ops.push(parse_line(t).map_err(|what| ParseError { line: i + 1, what })?);
    }
    Ok(ops)
}

/// Bytes as the lowercase hex string traces and results use.
pub fn hex_bytes_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

/// The trace line of an operation.
pub fn to_line(op: &Op) -> String {
    use serde_json::json;
    let v = match op {
        Op::VmCreate { vm } => json!({"op": "vm_create", "vm": vm}),
        Op::VmDestroy { vm } => json!({"op": "vm_destroy", "vm": vm}),
        Op::Submit { vm } => json!({"op": "submit", "vm": vm}),
        Op::Complete { vm } => json!({"op": "complete", "vm": vm}),
        Op::GemCreate { bo, size } => json!({"op": "gem_create", "bo": bo, "size": hex(*size)}),
        Op::GemClose { bo } => json!({"op": "gem_close", "bo": bo}),
        Op::Bind {
            vm,
            bo,
            offset,
            range,
            addr,
            flags,
        } => {
            let names: Vec<&str> = [
                (bind_flags::READ, "READ"),
                (bind_flags::WRITE, "WRITE"),
                (bind_flags::SINGLE_PAGE, "SINGLE_PAGE"),
                (bind_flags::UNBIND, "UNBIND"),
            ]
            .iter()
            .filter(|(b, _)| flags & b != 0)
            .map(|(_, n)| *n)
            .collect();
            let f = if flags & !bind_flags::KNOWN == 0 {
                json!(names)
            } else {
                json!(flags)
            };
            json!({"op": "bind", "vm": vm, "bo": bo, "offset": hex(*offset), "range": hex(*range),
                   "addr": hex(*addr), "flags": f})
        }
        Op::Unbind { vm, addr, range } => {
            json!({"op": "unbind", "vm": vm, "addr": hex(*addr), "range": hex(*range)})
        }
        Op::GpuWrite { vm, addr, data } => {
            let d = hex_bytes_string(data);
            json!({"op": "gpu_write", "vm": vm, "addr": hex(*addr), "data": d})
        }
        Op::GpuRead { vm, addr, len } => {
            json!({"op": "gpu_read", "vm": vm, "addr": hex(*addr), "len": len})
        }
    };
    v.to_string()
}
