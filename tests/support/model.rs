// SPDX-License-Identifier: GPL-2.0

//! An independent model of one address space: an interval map from VA to what backs it.
//!
//! It knows nothing of tables or descriptors; the tests compare the driver's translations and
//! walks with it.

use asahi::pte::Prot;
use std::collections::BTreeMap;

/// Page size of the model.
pub const PG: u64 = 1 << 14;

/// What backs an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Contiguous physical memory starting at this address.
    Linear(u64),
    /// The same page for every page of the interval.
    Repeat(u64),
}

/// One mapped interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Length in bytes.
    pub len: u64,
    /// Backing memory.
    pub backing: Backing,
    /// Protection.
    pub prot: Prot,
}

impl Interval {
    fn pa_at(&self, off: u64) -> u64 {
        match self.backing {
            Backing::Linear(pa) => pa + off,
            Backing::Repeat(pa) => pa + off % PG,
        }
    }

    /// The part starting `off` bytes in, `len` long.
    fn slice(&self, off: u64, len: u64) -> Interval {
        Interval {
            len,
            backing: match self.backing {
                Backing::Linear(pa) => Backing::Linear(pa + off),
                b => b,
            },
            prot: self.prot,
        }
    }
}

/// A merged run as a page-table walk reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First VA.
    pub va: u64,
    /// First physical address.
    pub pa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Protection.
    pub prot: Prot,
}

/// VA space model: non-overlapping intervals keyed by start VA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaModel {
    map: BTreeMap<u64, Interval>,
}

impl VaModel {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// The intervals, in VA order.
    pub fn intervals(&self) -> impl Iterator<Item = (u64, &Interval)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }

    /// Whether any byte of `va .. va + len` is mapped.
    pub fn overlaps(&self, va: u64, len: u64) -> bool {
        let last = va + (len - 1);
        if let Some((s, i)) = self.map.range(..=last).next_back() {
            if s + (i.len - 1) >= va {
                return true;
            }
        }
        false
    }

    /// Whether every page of `va .. va + len` is mapped.
    pub fn covers(&self, va: u64, len: u64) -> bool {
        let mut at = va;
        let end = va + len;
        while at < end {
            match self.lookup_interval(at) {
                Some((s, i)) => at = s + i.len,
                None => return false,
            }
        }
        true
    }

    fn lookup_interval(&self, va: u64) -> Option<(u64, Interval)> {
        let (s, i) = self.map.range(..=va).next_back()?;
        (va - s < i.len).then_some((*s, *i))
    }

    /// What `va` translates to.
    pub fn translate(&self, va: u64) -> Option<(u64, Prot)> {
        let (s, i) = self.lookup_interval(va)?;
        Some((i.pa_at(va - s), i.prot))
    }

    /// Inserts an interval that must not overlap anything.
    pub fn insert(&mut self, va: u64, interval: Interval) {
        assert!(!self.overlaps(va, interval.len));
        self.map.insert(va, interval);
    }

    /// Removes `va .. va + len`, splitting intervals at the edges. Returns the pages removed.
    pub fn remove(&mut self, va: u64, len: u64) -> u64 {
        let end = va + len;
        let mut removed = 0;
        let touched: Vec<(u64, Interval)> = self
            .map
            .range(..end)
            .filter(|(s, i)| **s + i.len > va)
            .map(|(s, i)| (*s, *i))
            .collect();
        for (s, i) in touched {
            self.map.remove(&s);
            let e = s + i.len;
            if s < va {
                self.map.insert(s, i.slice(0, va - s));
            }
            if e > end {
                self.map.insert(end, i.slice(end - s, e - end));
            }
            removed += (e.min(end) - s.max(va)) / PG;
        }
        removed
    }

    /// Changes the protection of `va .. va + len`, which must be fully mapped.
    pub fn reprot(&mut self, va: u64, len: u64, prot: Prot) {
        let end = va + len;
        let touched: Vec<(u64, Interval)> = self
            .map
            .range(..end)
            .filter(|(s, i)| **s + i.len > va)
            .map(|(s, i)| (*s, *i))
            .collect();
        for (s, i) in touched {
            self.map.remove(&s);
            let e = s + i.len;
            if s < va {
                self.map.insert(s, i.slice(0, va - s));
            }
            let (a, b) = (s.max(va), e.min(end));
            let mut mid = i.slice(a - s, b - a);
            mid.prot = prot;
            self.map.insert(a, mid);
            if e > end {
                self.map.insert(end, i.slice(end - s, e - end));
            }
        }
    }

    /// Number of mapped pages.
    pub fn pages(&self) -> u64 {
        self.map.values().map(|i| i.len / PG).sum()
    }

    /// The runs a walk must report: pages contiguous in VA and PA with one protection, merged.
    pub fn runs(&self) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        let mut push = |r: Run| match out.last_mut() {
            Some(l) if l.prot == r.prot && l.va + l.size == r.va && l.pa + l.size == r.pa => {
                l.size += r.size
            }
            _ => out.push(r),
        };
        for (&va, i) in &self.map {
            match i.backing {
                Backing::Linear(pa) => push(Run {
                    va,
                    pa,
                    size: i.len,
                    prot: i.prot,
                }),
                Backing::Repeat(pa) => {
                    for p in 0..i.len / PG {
                        push(Run {
                            va: va + p * PG,
                            pa,
                            size: PG,
                            prot: i.prot,
                        });
                    }
                }
            }
        }
        out
    }

    /// The distinct table pages below the top level that the mapped pages need, for a geometry
    /// whose entries at L1 span `1 << l1_shift` and at L2 `1 << l2_shift`.
    pub fn tables_needed(&self, l1_shift: u32, l2_shift: u32) -> usize {
        let mut l2 = std::collections::BTreeSet::new();
        let mut l3 = std::collections::BTreeSet::new();
        for (&va, i) in &self.map {
            let last = va + i.len - 1;
            for t in (va >> l1_shift)..=(last >> l1_shift) {
                l2.insert(t);
            }
            for t in (va >> l2_shift)..=(last >> l2_shift) {
                l3.insert(t);
            }
        }
        l2.len() + l3.len()
    }
}
