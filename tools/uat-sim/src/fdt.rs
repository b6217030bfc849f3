// SPDX-License-Identifier: GPL-2.0

//! A flattened device tree (DTB) reader: enough to find the GPU node and the reserved-memory
//! regions it names, as the driver's probe would through the OF API.

use std::fmt;

/// A node with its properties and children.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Name with unit address (`gpu@206400000`).
    pub name: String,
    /// Properties in order.
    pub props: Vec<(String, Vec<u8>)>,
    /// Child nodes.
    pub children: Vec<Node>,
}

/// Why a DTB could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdtError(pub String);

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device tree: {}", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, FdtError> {
    Err(FdtError(msg.into()))
}

fn be32(b: &[u8], off: usize) -> Result<u32, FdtError> {
    match b.get(off..off + 4) {
        Some(s) => Ok(u32::from_be_bytes(s.try_into().unwrap())),
        None => err(format!("truncated at {off:#x}")),
    }
}

fn cstr(b: &[u8], off: usize) -> Result<&str, FdtError> {
    let s = b
        .get(off..)
        .ok_or_else(|| FdtError("string offset out of range".into()))?;
    let end = s
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| FdtError("unterminated string".into()))?;
    std::str::from_utf8(&s[..end]).map_err(|_| FdtError("string is not UTF-8".into()))
}

/// Parses a DTB into its root node.
pub fn parse(dtb: &[u8]) -> Result<Node, FdtError> {
    if be32(dtb, 0)? != 0xd00d_feed {
        return err("bad magic");
    }
    let total = be32(dtb, 4)? as usize;
    if total > dtb.len() {
        return err("truncated");
    }
    let off_struct = be32(dtb, 8)? as usize;
    let off_strings = be32(dtb, 12)? as usize;
    let strings = dtb
        .get(off_strings..total)
        .ok_or_else(|| FdtError("bad strings offset".into()))?;
    let mut pos = off_struct;
    let mut stack: Vec<Node> = Vec::new();
    loop {
        let token = be32(dtb, pos)?;
        pos += 4;
        match token {
            1 => {
                let name = cstr(dtb, pos)?.to_string();
                pos += (name.len() + 1).next_multiple_of(4);
                stack.push(Node {
                    name,
                    ..Node::default()
                });
            }
            2 => {
                let node = stack
                    .pop()
                    .ok_or_else(|| FdtError("unbalanced END_NODE".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            3 => {
                let len = be32(dtb, pos)? as usize;
                let nameoff = be32(dtb, pos + 4)? as usize;
                pos += 8;
                let value = dtb
                    .get(pos..pos + len)
                    .ok_or_else(|| FdtError("truncated property".into()))?
                    .to_vec();
                pos += len.next_multiple_of(4);
                let name = cstr(strings, nameoff)?.to_string();
                stack
                    .last_mut()
                    .ok_or_else(|| FdtError("property outside a node".into()))?
                    .props
                    .push((name, value));
            }
            4 => {}
            9 => return err("END before the root node closed"),
            t => return err(format!("unknown token {t}")),
        }
    }
}

impl Node {
    /// A property's raw value.
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A property as big-endian 32-bit cells.
    pub fn cells(&self, name: &str) -> Option<Vec<u32>> {
        let v = self.prop(name)?;
        if v.len() % 4 != 0 {
            return None;
        }
        Some(
            v.chunks(4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    /// A property as a list of strings.
    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        let v = self.prop(name)?;
        Some(
            v.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )
    }

    /// The child named `name` (with or without unit address).
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.name == name || c.name.split('@').next() == Some(name))
    }

    /// Depth-first search with the parent of each node.
    pub fn find<'a>(&'a self, pred: &impl Fn(&Node) -> bool) -> Option<(&'a Node, &'a Node)> {
        for c in &self.children {
            if pred(c) {
                return Some((c, self));
            }
            if let Some(found) = c.find(pred) {
                return Some(found);
            }
        }
        None
    }

    /// The node whose `phandle` is `ph`, with its parent.
    pub fn by_phandle(&self, ph: u32) -> Option<(&Node, &Node)> {
        self.find(&|n| n.cells("phandle").is_some_and(|c| c == [ph]))
    }

    /// `reg` as (address, size) pairs, with the parent's cell counts.
    pub fn reg(&self, parent: &Node) -> Option<Vec<(u64, u64)>> {
        let ac = parent.cells("#address-cells").map_or(2, |c| c[0]) as usize;
        let sc = parent.cells("#size-cells").map_or(1, |c| c[0]) as usize;
        let cells = self.cells("reg")?;
        if ac == 0 || cells.len() % (ac + sc) != 0 {
            return None;
        }
        let num = |c: &[u32]| c.iter().fold(0u64, |a, &x| (a << 32) | x as u64);
        Some(
            cells
                .chunks(ac + sc)
                .map(|c| (num(&c[..ac]), num(&c[ac..])))
                .collect(),
        )
    }
}
