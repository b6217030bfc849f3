// SPDX-License-Identifier: GPL-2.0

//! A flattened device tree (DTB) reader: enough to find the GPU node and the reserved-memory
//! regions it names, as the driver's probe would through the OF API.
//!
//! The tree is read into a flat list of nodes in document order that borrows names and values
//! from the blob: nothing recurses (neither the search nor the drop), nesting is limited to
//! [`MAX_DEPTH`], and the memory used is a small multiple of the blob's size (each node and
//! property costs at least 12 bytes of blob and at most 40 bytes here). Every error names the
//! byte offset, node or property at fault.
//!
//! (The `fdt` crate was considered: its 0.1 releases panic on malformed blobs — `unwrap`s and
//! `panic!`s in the node and property iterators — and 0.2 is an alpha.)

use std::fmt;
use std::ops::Range;

/// Deepest nesting accepted (the root is depth 1); Linux's unflattening uses the same limit.
pub const MAX_DEPTH: usize = 64;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// Why a DTB could not be read, or a property is not what it must be.
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

/// A node's index in its [`Tree`].
pub type NodeId = usize;

struct NodeData<'a> {
    name: &'a str,
    parent: Option<NodeId>,
    props: Range<usize>,
}

/// A parsed device tree, borrowing from the blob.
pub struct Tree<'a> {
    nodes: Vec<NodeData<'a>>,
    props: Vec<(&'a str, &'a [u8])>,
}

fn be32(b: &[u8], off: usize) -> Result<u32, FdtError> {
    match off.checked_add(4).and_then(|end| b.get(off..end)) {
        Some(s) => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        None => err(format!("truncated at byte {off:#x}")),
    }
}

fn cstr<'a>(b: &'a [u8], off: usize, what: &str) -> Result<&'a str, FdtError> {
    let s = b
        .get(off..)
        .ok_or_else(|| FdtError(format!("{what} at byte {off:#x} is out of range")))?;
    let end = s
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| FdtError(format!("{what} at byte {off:#x} is unterminated")))?;
    std::str::from_utf8(&s[..end])
        .map_err(|e| FdtError(format!("{what} at byte {off:#x} is not UTF-8 ({e})")))
}

/// Parses a DTB.
pub fn parse(dtb: &[u8]) -> Result<Tree<'_>, FdtError> {
    if be32(dtb, 0)? != MAGIC {
        return err("bad magic at byte 0");
    }
    let total = be32(dtb, 4)? as usize;
    if total > dtb.len() {
        return err(format!(
            "header says {total:#x} bytes (byte 0x4), the blob has {:#x}",
            dtb.len()
        ));
    }
    let dtb = &dtb[..total];
    let off_struct = be32(dtb, 8)? as usize;
    let off_strings = be32(dtb, 12)? as usize;
    let strings = dtb.get(off_strings..).ok_or_else(|| {
        FdtError(format!(
            "strings offset {off_strings:#x} (byte 0xc) is out of range"
        ))
    })?;
    let mut tree = Tree {
        nodes: Vec::new(),
        props: Vec::new(),
    };
    // The open nodes, innermost last.
    let mut open: Vec<NodeId> = Vec::new();
    let mut pos = off_struct;
    loop {
        let at = pos;
        let token = be32(dtb, pos)?;
        pos += 4;
        match token {
            BEGIN_NODE => {
                if open.is_empty() && !tree.nodes.is_empty() {
                    return err(format!("a second root node at byte {at:#x}"));
                }
                if open.len() == MAX_DEPTH {
                    return err(format!(
                        "node at byte {at:#x} is nested deeper than {MAX_DEPTH} levels"
                    ));
                }
                let name = cstr(dtb, pos, "node name")?;
                pos += (name.len() + 1).next_multiple_of(4);
                tree.nodes.push(NodeData {
                    name,
                    parent: open.last().copied(),
                    props: tree.props.len()..tree.props.len(),
                });
                open.push(tree.nodes.len() - 1);
            }
            END_NODE => {
                if open.pop().is_none() {
                    return err(format!("END_NODE at byte {at:#x} closes no node"));
                }
            }
            PROP => {
                let len = be32(dtb, pos)? as usize;
                let nameoff = be32(dtb, pos + 4)? as usize;
                pos += 8;
                let value = pos
                    .checked_add(len)
                    .and_then(|end| dtb.get(pos..end))
                    .ok_or_else(|| {
                        FdtError(format!(
                            "property at byte {at:#x}: {len:#x} bytes run past the blob"
                        ))
                    })?;
                pos += len.next_multiple_of(4);
                let name = cstr(strings, nameoff, "property name")?;
                let Some(&node) = open.last() else {
                    return err(format!("property at byte {at:#x} is outside any node"));
                };
                // Properties follow their node's name, before its children: they are contiguous.
                if tree.nodes[node].props.end != tree.props.len() {
                    return err(format!(
                        "property {name:?} at byte {at:#x} comes after a child node"
                    ));
                }
                tree.props.push((name, value));
                tree.nodes[node].props.end += 1;
            }
            NOP => {}
            END if open.is_empty() && !tree.nodes.is_empty() => return Ok(tree),
            END => return err(format!("END at byte {at:#x} before the root node closed")),
            t => return err(format!("unknown token {t:#x} at byte {at:#x}")),
        }
    }
}

impl<'a> Tree<'a> {
    /// The root node.
    pub fn root(&self) -> NodeId {
        0
    }

    /// A node's name with unit address (`gpu@206400000`).
    pub fn name(&self, n: NodeId) -> &'a str {
        self.nodes[n].name
    }

    /// A node's parent (`None` for the root).
    pub fn parent(&self, n: NodeId) -> Option<NodeId> {
        self.nodes[n].parent
    }

    /// A node's full path, for messages.
    pub fn path(&self, n: NodeId) -> String {
        let mut parts = Vec::new();
        let mut at = Some(n);
        while let Some(i) = at {
            if self.nodes[i].parent.is_some() {
                parts.push(self.nodes[i].name);
            }
            at = self.nodes[i].parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// A property's raw value.
    pub fn prop(&self, n: NodeId, name: &str) -> Option<&'a [u8]> {
        self.props[self.nodes[n].props.clone()]
            .iter()
            .find(|(p, _)| *p == name)
            .map(|(_, v)| *v)
    }

    /// A node's properties in order.
    pub fn props(&self, n: NodeId) -> &[(&'a str, &'a [u8])] {
        &self.props[self.nodes[n].props.clone()]
    }

    /// A property as big-endian 32-bit cells: `Ok(None)` if absent, an error if its length is
    /// not a multiple of 4.
    pub fn cells(&self, n: NodeId, name: &str) -> Result<Option<Vec<u32>>, FdtError> {
        let Some(v) = self.prop(n, name) else {
            return Ok(None);
        };
        if v.len() % 4 != 0 {
            return err(format!(
                "{}: {name} is {} bytes, not a whole number of cells",
                self.path(n),
                v.len()
            ));
        }
        Ok(Some(
            v.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// A property that must be a single cell, or `default` if absent.
    pub fn cell(&self, n: NodeId, name: &str, default: u32) -> Result<u32, FdtError> {
        match self.cells(n, name)?.as_deref() {
            None => Ok(default),
            Some(&[v]) => Ok(v),
            Some(c) => err(format!(
                "{}: {name} must be one cell, it has {}",
                self.path(n),
                c.len()
            )),
        }
    }

    /// A property as a list of strings (invalid UTF-8 shown as U+FFFD).
    pub fn strings(&self, n: NodeId, name: &str) -> Option<Vec<String>> {
        let v = self.prop(n, name)?;
        Some(
            v.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )
    }

    /// The first node (other than the root) in document order for which `pred` holds.
    pub fn find(&self, pred: impl Fn(NodeId) -> bool) -> Option<NodeId> {
        (1..self.nodes.len()).find(|&n| pred(n))
    }

    /// The node whose `phandle` is `ph`.
    pub fn by_phandle(&self, ph: u32) -> Option<NodeId> {
        self.find(|n| {
            ["phandle", "linux,phandle"]
                .iter()
                .any(|p| self.cells(n, p).ok().flatten().as_deref() == Some(&[ph]))
        })
    }

    /// `reg` as (address, size) pairs, with the parent's cell counts (at most two cells each, an
    /// address of at least one). Errors name the node and what is wrong.
    pub fn reg(&self, n: NodeId) -> Result<Vec<(u64, u64)>, FdtError> {
        let parent = self.parent(n).unwrap_or(n);
        let ac = self.cell(parent, "#address-cells", 2)? as usize;
        let sc = self.cell(parent, "#size-cells", 1)? as usize;
        if !(1..=2).contains(&ac) || sc > 2 {
            return err(format!(
                "{}: #address-cells {ac} / #size-cells {sc} not supported (1-2 / 0-2)",
                self.path(parent)
            ));
        }
        let cells = self
            .cells(n, "reg")?
            .ok_or_else(|| FdtError(format!("{}: no reg", self.path(n))))?;
        if cells.is_empty() || cells.len() % (ac + sc) != 0 {
            return err(format!(
                "{}: reg has {} cells, not a non-zero multiple of {}",
                self.path(n),
                cells.len(),
                ac + sc
            ));
        }
        let num = |c: &[u32]| c.iter().fold(0u64, |a, &x| (a << 32) | x as u64);
        Ok(cells
            .chunks_exact(ac + sc)
            .map(|c| (num(&c[..ac]), num(&c[ac..])))
            .collect())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has no node (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
