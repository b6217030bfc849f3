// SPDX-License-Identifier: GPL-2.0

//! Test helpers: device trees as owned values, read from and written to DTBs independently of
//! the simulator's reader (the writer follows the DTB format, version 17).

#![allow(dead_code)]

use uat_sim::fdt;

/// A node with owned properties and children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub props: Vec<(String, Vec<u8>)>,
    pub children: Vec<Node>,
}

impl Node {
    /// The node at `path` (child names with unit address, "/"-separated, "" = self).
    pub fn at(&mut self, path: &str) -> &mut Node {
        let mut n = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            n = n
                .children
                .iter_mut()
                .find(|c| c.name == part || c.name.split('@').next() == Some(part))
                .unwrap_or_else(|| panic!("no node {part}"));
        }
        n
    }

    /// Sets (or adds) a property.
    pub fn set(&mut self, name: &str, value: &[u8]) -> &mut Node {
        match self.props.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value.to_vec(),
            None => self.props.push((name.to_string(), value.to_vec())),
        }
        self
    }

    /// Removes a property.
    pub fn unset(&mut self, name: &str) -> &mut Node {
        self.props.retain(|(n, _)| n != name);
        self
    }
}

/// Cells as property bytes.
pub fn cells(c: &[u32]) -> Vec<u8> {
    c.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Reads a DTB with the simulator's reader into owned nodes.
pub fn read(dtb: &[u8]) -> Node {
    let t = fdt::parse(dtb).unwrap();
    let mut nodes: Vec<Node> = (0..t.len())
        .map(|i| Node {
            name: t.name(i).to_string(),
            props: t
                .props(i)
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            children: Vec::new(),
        })
        .collect();
    // Children come after their parent: attach from the last one up.
    for i in (1..t.len()).rev() {
        let n = std::mem::take(&mut nodes[i]);
        nodes[t.parent(i).unwrap()].children.insert(0, n);
    }
    nodes.swap_remove(0)
}

fn emit(n: &Node, st: &mut Vec<u8>, strings: &mut Vec<u8>) {
    st.extend(1u32.to_be_bytes());
    st.extend(n.name.as_bytes());
    st.push(0);
    while !st.len().is_multiple_of(4) {
        st.push(0);
    }
    for (name, v) in &n.props {
        let off = find_or_add(strings, name);
        st.extend(3u32.to_be_bytes());
        st.extend((v.len() as u32).to_be_bytes());
        st.extend((off as u32).to_be_bytes());
        st.extend(v);
        while !st.len().is_multiple_of(4) {
            st.push(0);
        }
    }
    for c in &n.children {
        emit(c, st, strings);
    }
    st.extend(2u32.to_be_bytes());
}

fn find_or_add(strings: &mut Vec<u8>, name: &str) -> usize {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    if let Some(p) = strings.windows(key.len()).position(|w| w == key) {
        return p;
    }
    strings.extend(&key);
    strings.len() - key.len()
}

/// A DTB from a struct block (without the END token) and a strings block.
pub fn assemble(mut st: Vec<u8>, strings: &[u8]) -> Vec<u8> {
    st.extend(9u32.to_be_bytes());
    let off_rsv = 40u32;
    let off_struct = off_rsv + 16;
    let off_strings = off_struct + st.len() as u32;
    let total = off_strings + strings.len() as u32;
    let mut out = Vec::new();
    for v in [
        0xd00d_feed,
        total,
        off_struct,
        off_strings,
        off_rsv,
        17,
        16,
        0,
        strings.len() as u32,
        st.len() as u32,
    ] {
        out.extend(u32::to_be_bytes(v));
    }
    out.extend([0u8; 16]);
    out.extend(st);
    out.extend(strings);
    out
}

/// Writes a DTB.
pub fn write(root: &Node) -> Vec<u8> {
    let (mut st, mut strings) = (Vec::new(), Vec::new());
    emit(root, &mut st, &mut strings);
    assemble(st, &strings)
}
