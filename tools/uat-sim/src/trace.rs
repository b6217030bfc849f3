// SPDX-License-Identifier: GPL-2.0

//! Traces of userspace operations: JSON Lines, one operation per line, mirroring the uAPI
//! (`include/uapi/drm/asahi_drm.h`: the ioctls' field names), so that the same trace can be
//! replayed through the render node.
//!
//! ```text
//! {"op":"vm_create","vm":1}
//! {"op":"vm_create","vm":2,"kernel_start":"0x4000","kernel_end":"0x40004000"}
//! {"op":"gem_create","bo":7,"size":"0x40000"}
//! {"op":"gem_create","bo":8,"size":"0x4000","flags":["WRITEBACK","VM_PRIVATE"],"vm_id":1}
//! {"op":"bind","vm":1,"ops":[{"flags":["READ","WRITE"],"handle":7,"offset":"0x0","range":"0x40000","addr":"0x1000000"},
//!                            {"flags":["UNBIND"],"range":"0x8000","addr":"0x1004000"}]}
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
//! Numbers are JSON integers or strings (`"0x..."` hex or decimal); flags lists of names or
//! numbers. `vm`, `bo`, `vm_id` and `handle` are the trace's own names for objects, mapped to
//! the driver's IDs and handles on replay (a name nothing has, to an ID or handle nothing has);
//! an absent `vm_id` or `handle` is the uAPI's 0. `vm_create` without `kernel_start` and
//! `kernel_end` (both or neither) gets Mesa's kernel range. A `bind` is one VM_BIND: `ops` are
//! its `drm_asahi_gem_bind_op`s (`flags`, `handle`, `offset` default to 0); the single-op
//! forms `bind` with `bo` and `unbind` are one op. `submit` and `complete` stand for work: a
//! `complete` ends the oldest work submitted under its `vm` name, even if that VM was destroyed
//! since. Blank lines and lines starting with `#` are skipped. A whole trace is parsed before
//! anything runs, so a malformed line stops the replay before it touches any state.

use asahi::gpuvm::{bind_flags, gem_flags};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// One `drm_asahi_gem_bind_op` of a bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemBindOp {
    /// `DRM_ASAHI_BIND_*`.
    pub flags: u32,
    /// The buffer's trace name; `None` is handle 0 (an unbind's).
    pub handle: Option<u64>,
    /// Offset into the buffer.
    pub offset: u64,
    /// Bytes.
    pub range: u64,
    /// GPU VA.
    pub addr: u64,
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create VM `vm`, with kernel range `kernel` (`start`, `end`), or Mesa's if `None`.
    VmCreate { vm: u64, kernel: Option<(u64, u64)> },
    /// Destroy VM `vm`.
    VmDestroy { vm: u64 },
    /// Create buffer `bo` of `size` bytes with `DRM_ASAHI_GEM_*` `flags`, private to VM `vm_id`
    /// (a trace name; `None` is the uAPI's 0).
    GemCreate {
        bo: u64,
        size: u64,
        flags: u32,
        vm_id: Option<u64>,
    },
    /// Close buffer `bo`'s handle.
    GemClose { bo: u64 },
    /// VM_BIND: `ops` on VM `vm`.
    Bind { vm: u64, ops: Vec<GemBindOp> },
    /// Work submitted for `vm`.
    Submit { vm: u64 },
    /// Work of `vm` completed.
    Complete { vm: u64 },
    /// The GPU writes `data` at `addr` in `vm`.
    GpuWrite { vm: u64, addr: u64, data: Vec<u8> },
    /// The GPU reads `len` bytes at `addr` in `vm`.
    GpuRead { vm: u64, addr: u64, len: u64 },
}

/// The longest read a trace may ask for: a read's result is built in memory.
pub const MAX_READ: u64 = 1 << 20;

/// A trace line that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong (with the column, 1-based in bytes, where the JSON parser knows it).
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trace line {}: {}", self.line, self.what)
    }
}

/// A number: a non-negative JSON integer, or a string (`"0x..."` hex or decimal).
pub struct Num(pub u64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a \"0x...\"/decimal string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                u64::try_from(v)
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Num, E> {
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => s.parse(),
                }
                .map(Num)
                .map_err(|_| E::custom(format!("{s:?} is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// The names of a set of flags.
pub trait FlagNames {
    /// Each flag with its name.
    const NAMES: &'static [(u32, &'static str)];
}

/// `DRM_ASAHI_BIND_*`.
pub struct BindFlagNames;

impl FlagNames for BindFlagNames {
    const NAMES: &'static [(u32, &'static str)] = &[
        (bind_flags::READ, "READ"),
        (bind_flags::WRITE, "WRITE"),
        (bind_flags::SINGLE_PAGE, "SINGLE_PAGE"),
        (bind_flags::UNBIND, "UNBIND"),
    ];
}

/// `DRM_ASAHI_GEM_*`.
pub struct GemFlagNames;

impl FlagNames for GemFlagNames {
    const NAMES: &'static [(u32, &'static str)] = &[
        (gem_flags::WRITEBACK, "WRITEBACK"),
        (gem_flags::VM_PRIVATE, "VM_PRIVATE"),
    ];
}

/// Flags: a list of names, or a number.
struct Flags<N>(u32, std::marker::PhantomData<N>);

impl<'de, N: FlagNames> Deserialize<'de> for Flags<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Flags<N>, D::Error> {
        struct V<N>(std::marker::PhantomData<N>);
        impl<'de, N: FlagNames> Visitor<'de> for V<N> {
            type Value = Flags<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of flag names or a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flags<N>, E> {
                u32::try_from(v)
                    .map(|v| Flags(v, self.0))
                    .map_err(|_| E::custom("\"flags\" does not fit in 32 bits"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flags<N>, E> {
                Err(E::custom(format!("\"flags\": {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Flags<N>, E> {
                let Num(v) = Num::deserialize(de::value::StrDeserializer::<E>::new(s))?;
                self.visit_u64(v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Flags<N>, A::Error> {
                let mut acc = 0;
                while let Some(name) = seq.next_element::<&str>()? {
                    acc |= match N::NAMES.iter().find(|(_, n)| *n == name) {
                        Some((bit, _)) => *bit,
                        None => return Err(de::Error::custom(format!("unknown flag {name:?}"))),
                    };
                }
                Ok(Flags(acc, self.0))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Flags as a trace writes them: names if all have one, else the number.
fn flags_value<N: FlagNames>(flags: u32) -> Value {
    let known = N::NAMES.iter().fold(0, |a, (b, _)| a | b);
    if flags & !known != 0 {
        return Value::from(flags);
    }
    let names: Vec<&str> = N::NAMES
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    Value::from(names)
}

/// `"data"`: an even number of hex digits.
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hex, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Hex, E> {
                hex_bytes(s).map(Hex).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

// The trace lines as written, one struct per set of fields: every field is required except
// the optional ones (`Option`), no other field is accepted, and `serde` refuses a field given
// twice. Each is parsed straight from the line's text, so that an error says at which column it
// is.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmCreateLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    vm: Num,
    kernel_start: Option<Num>,
    kernel_end: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    vm: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    bo: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GemCreateLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    bo: Num,
    size: Num,
    flags: Option<Flags<GemFlagNames>>,
    vm_id: Option<Num>,
}

/// A bind: `ops`, or the single-op form's `bo`, `offset`, `range`, `addr` and `flags`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    vm: Num,
    ops: Option<Vec<BindOpLine>>,
    bo: Option<Num>,
    offset: Option<Num>,
    range: Option<Num>,
    addr: Option<Num>,
    flags: Option<Flags<BindFlagNames>>,
}

/// One `drm_asahi_gem_bind_op` of `ops`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindOpLine {
    flags: Option<Flags<BindFlagNames>>,
    handle: Option<Num>,
    offset: Option<Num>,
    range: Num,
    addr: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbindLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    vm: Num,
    addr: Num,
    range: Num,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuWriteLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    vm: Num,
    addr: Num,
    data: Hex,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuReadLine {
    #[serde(rename = "op")]
    _op: de::IgnoredAny,
    vm: Num,
    addr: Num,
    len: Num,
}

/// Decodes hex digits two by two, looking at bytes (never slicing the string).
fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err("\"data\" must have an even number of hex digits".into());
    }
    let digit = |i: usize| {
        (b[i] as char)
            .to_digit(16)
            .filter(|_| b[i].is_ascii())
            .map(|d| d as u8)
            .ok_or_else(|| format!("\"data\": bad hex digit at byte {i} of the string"))
    };
    (0..b.len())
        .step_by(2)
        .map(|i| Ok(digit(i)? << 4 | digit(i + 1)?))
        .collect()
}

/// Rejects a line that is not one JSON object, or whose objects hold the same key twice at any
/// depth; returns the object's `"op"` if it is a string.
fn check_line(line: &str) -> Result<Option<String>, String> {
    struct Check;
    impl<'de> de::DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys: Vec<std::borrow::Cow<'de, str>> = Vec::new();
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if keys.contains(&k) {
                    return Err(de::Error::custom(format!("duplicate key \"{k}\"")));
                }
                map.next_value_seed(Check)?;
                keys.push(k);
            }
            Ok(())
        }
    }
    let mut d = serde_json::Deserializer::from_str(line);
    de::DeserializeSeed::deserialize(Check, &mut d)
        .and_then(|()| d.end())
        .map_err(json_error)?;
    #[derive(Deserialize)]
    struct Tag {
        op: Option<Value>,
    }
    let tag: Tag = serde_json::from_str(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => "not a JSON object".to_string(),
        _ => json_error(e),
    })?;
    Ok(tag.op.and_then(|v| v.as_str().map(str::to_string)))
}

/// A `serde_json` error as "column N: what" (lines are parsed one at a time).
fn json_error(e: serde_json::Error) -> String {
    let text = e.to_string();
    let what = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(w, _)| w);
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("not JSON: {what}")
        }
        _ => what.to_string(),
    };
    if e.column() > 0 {
        format!("column {}: {what}", e.column())
    } else {
        what
    }
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Op, String> {
    fn get<'a, T: Deserialize<'a>>(line: &'a str) -> Result<T, String> {
        serde_json::from_str(line).map_err(json_error)
    }
    let op = check_line(line)?.ok_or("missing \"op\" (a string)")?;
    Ok(match op.as_str() {
        "vm_create" => {
            let l: VmCreateLine = get(line)?;
            let kernel = match (l.kernel_start, l.kernel_end) {
                (Some(s), Some(e)) => Some((s.0, e.0)),
                (None, None) => None,
                _ => return Err("\"kernel_start\" and \"kernel_end\" go together".into()),
            };
            Op::VmCreate { vm: l.vm.0, kernel }
        }
        "vm_destroy" => Op::VmDestroy {
            vm: get::<VmLine>(line)?.vm.0,
        },
        "submit" => Op::Submit {
            vm: get::<VmLine>(line)?.vm.0,
        },
        "complete" => Op::Complete {
            vm: get::<VmLine>(line)?.vm.0,
        },
        "gem_create" => {
            let l: GemCreateLine = get(line)?;
            Op::GemCreate {
                bo: l.bo.0,
                size: l.size.0,
                flags: l.flags.map_or(0, |f| f.0),
                vm_id: l.vm_id.map(|v| v.0),
            }
        }
        "gem_close" => Op::GemClose {
            bo: get::<BoLine>(line)?.bo.0,
        },
        "bind" => {
            let l: BindLine = get(line)?;
            let ops = match l.ops {
                Some(ops) => {
                    if l.bo.is_some()
                        || l.offset.is_some()
                        || l.range.is_some()
                        || l.addr.is_some()
                        || l.flags.is_some()
                    {
                        return Err("\"ops\" goes without the single-op fields \"bo\", \
                                    \"offset\", \"range\", \"addr\", \"flags\""
                            .into());
                    }
                    ops.into_iter()
                        .map(|o| GemBindOp {
                            flags: o.flags.map_or(0, |f| f.0),
                            handle: o.handle.map(|h| h.0),
                            offset: o.offset.map_or(0, |n| n.0),
                            range: o.range.0,
                            addr: o.addr.0,
                        })
                        .collect()
                }
                None => {
                    let need = |v: Option<Num>, name: &str| {
                        v.map(|n| n.0)
                            .ok_or_else(|| format!("missing field `{name}` (or \"ops\")"))
                    };
                    vec![GemBindOp {
                        flags: l.flags.map_or(0, |f| f.0),
                        handle: Some(need(l.bo, "bo")?),
                        offset: need(l.offset, "offset")?,
                        range: need(l.range, "range")?,
                        addr: need(l.addr, "addr")?,
                    }]
                }
            };
            Op::Bind { vm: l.vm.0, ops }
        }
        "unbind" => {
            let l: UnbindLine = get(line)?;
            Op::Bind {
                vm: l.vm.0,
                ops: vec![GemBindOp {
                    flags: bind_flags::UNBIND,
                    handle: None,
                    offset: 0,
                    range: l.range.0,
                    addr: l.addr.0,
                }],
            }
        }
        "gpu_write" => {
            let l: GpuWriteLine = get(line)?;
            Op::GpuWrite {
                vm: l.vm.0,
                addr: l.addr.0,
                data: l.data.0,
            }
        }
        "gpu_read" => {
            let l: GpuReadLine = get(line)?;
            if l.len.0 > MAX_READ {
                return Err(format!("\"len\" {} above 1 MiB", l.len.0));
            }
            Op::GpuRead {
                vm: l.vm.0,
                addr: l.addr.0,
                len: l.len.0,
            }
        }
        other => return Err(format!("unknown op {other:?}")),
    })
}

/// Parses a whole trace; the first bad line is an error with its number. A UTF-8 byte-order
/// mark at the start is skipped.
pub fn parse(text: &str) -> Result<Vec<Op>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
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

/// [`parse`] for raw bytes: text that is not UTF-8 is an error naming its line and byte offset.
pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<Op>, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let at = e.valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            // The lines before the bad byte are reported first if one of them is bad.
            let line_start = bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            parse(std::str::from_utf8(&bytes[..line_start]).unwrap_or_default())?;
            Err(ParseError {
                line,
                what: format!("not UTF-8 (byte offset {at} of the file)"),
            })
        }
    }
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
        Op::VmCreate { vm, kernel } => match kernel {
            None => json!({"op": "vm_create", "vm": vm}),
            Some((s, e)) => json!({"op": "vm_create", "vm": vm,
                                   "kernel_start": hex(*s), "kernel_end": hex(*e)}),
        },
        Op::VmDestroy { vm } => json!({"op": "vm_destroy", "vm": vm}),
        Op::Submit { vm } => json!({"op": "submit", "vm": vm}),
        Op::Complete { vm } => json!({"op": "complete", "vm": vm}),
        Op::GemCreate {
            bo,
            size,
            flags,
            vm_id,
        } => {
            let mut v = json!({"op": "gem_create", "bo": bo, "size": hex(*size)});
            if *flags != 0 {
                v["flags"] = flags_value::<GemFlagNames>(*flags);
            }
            if let Some(id) = vm_id {
                v["vm_id"] = json!(id);
            }
            v
        }
        Op::GemClose { bo } => json!({"op": "gem_close", "bo": bo}),
        Op::Bind { vm, ops } => {
            let ops: Vec<Value> = ops
                .iter()
                .map(|o| {
                    let mut v = json!({"flags": flags_value::<BindFlagNames>(o.flags),
                                       "offset": hex(o.offset), "range": hex(o.range),
                                       "addr": hex(o.addr)});
                    if let Some(h) = o.handle {
                        v["handle"] = json!(h);
                    }
                    v
                })
                .collect();
            json!({"op": "bind", "vm": vm, "ops": ops})
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
