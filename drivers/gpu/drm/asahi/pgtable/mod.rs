// SPDX-License-Identifier: GPL-2.0

//! UAT page tables: one address space's translation tables in memory the GPU walks.
//!
//! Table pages are owned by the [`PageTable`] (a [`Page`], turned into the physical address
//! stored in the parent descriptor and claimed back when the table is freed), and reached by
//! borrowing them by physical address. The exception is a top-level table that belongs to the
//! bootloader (the `pagetables` reserved-memory region): it is reached through its mapping,
//! since reserved memory is not the page allocator's and cannot be borrowed, and never freed.
//!
//! Every operation validates its arguments and checks the part of the tables it will change
//! before it changes anything, then makes the change in a pass that cannot fail:
//!
//! - `map` first walks the existing tables of the range, refusing an occupied entry (`EEXIST`)
//!   or a corrupt descriptor (`EIO`) and counting the tables missing; it then allocates exactly
//!   that many zeroed pages (`ENOMEM` here leaves everything as it was), and finally links them
//!   and writes runs of descriptors, one leaf table at a time;
//! - `unmap` validates, then clears runs of descriptors and unlinks every table that became
//!   empty into the caller's [`Gather`](crate::tlb::Gather), to be freed after the TLB
//!   invalidation;
//! - `reprot` requires every page of the range to be mapped, then rewrites the attributes.
//!
//! What each leaf table holds is kept beside it ([`Occupancy`]: how many pages, and the span of
//! entries holding them), so the checks read only the entries that may hold pages: an entry
//! outside the span is known invalid and is neither read nor checked for corruption, and an
//! unmap that holds every page of a table takes it unread, as one it covers whole. Nothing ever
//! follows a leaf descriptor.
//!
//! The caller serializes modifications (`&mut self`); the GPU may walk the tables at any time,
//! so descriptors are written whole, and a new table is published only after its zeroed contents.
//!
//! This module holds the tables' structure: the [`PageTable`] object, its walks, caches and
//! occupancy bookkeeping. The operations are in its submodules: `map` (map, prealloc, reprot),
//! `unmap` (unmap, prune) and `lookup` (translate, the mappings, the checks of the suites). The
//! loops over runs of descriptors are in [`crate::desc_run`], the sources of a map's pages in
//! [`crate::page_source`].

use crate::desc_run::{fill, is_empty_around, scan_leaves, Entries};
use crate::geometry::{
    Geometry, Level, VaRange, LEAF_LEVEL, PTES_PER_TABLE, TOP_LEVEL, UAT_PGBIT, UAT_PGMSK, UAT_PGSZ,
};
use crate::occupancy::{Held, Occupancy};
use crate::page_list::PageList;
use crate::pte::{pa_aligned, table_desc, Desc, LeafCheck, Oas, Prot};
use crate::region::Region;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::alloc::Flags;
use kernel::io::PhysAddr;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::barrier::{dma_mb, Write};

mod lookup;
mod map;
mod unmap;

const _: () = assert!(
    PAGE_SIZE as u64 == UAT_PGSZ,
    "the UAT granule must be the CPU page size"
);

/// What a page table covers and how its descriptors are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtConfig {
    /// Level geometry of the GPU generation.
    pub geometry: Geometry,
    /// The VAs this table manages: page aligned, inside one half. A table with a borrowed
    /// top level never touches top-level entries outside this range.
    pub range: VaRange,
    /// Output address size.
    pub oas: Oas,
    /// Whether this is a user VM's table: its pages are charged to the client (see
    /// [`PtConfig::gfp`]).
    pub user: bool,
    /// Whether its leaves are global (nG = 0), found in the TLB by every ASID: only the kernel
    /// VM's part of the upper half, which kernel-visible user contexts walk under their own
    /// ASIDs. Every other table is non-global, the kernel VM's lower half too: it shares its
    /// VAs with every user VM, and a global translation the kernel context cached there would
    /// be found by user contexts in place of their own.
    pub global: bool,
}

impl PtConfig {
    fn validate(&self) -> Result {
        let g = self.geometry;
        let r = self.range;
        let in_half = g.lower_half().contains_range(&r) || g.upper_half().contains_range(&r);
        if r.start > r.last
            || r.start & UAT_PGMSK != 0
            || r.last & UAT_PGMSK != UAT_PGMSK
            || !in_half
            || (self.global && (self.user || !g.upper_half().contains_range(&r)))
        {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// The flags of every allocation the table makes: a user address space charges its tables
    /// and counts to the memory cgroup of the task that grows it (the client, in its ioctl), as
    /// iommufd does for IOMMU page tables. A client can make one page cost a leaf table by
    /// binding it 32 MiB apart, so uncharged tables would let it take unbounded kernel memory.
    /// At the cgroup's limit, reclaim and the cgroup's OOM killer act as for any charged
    /// allocation; one that fails anyway is `ENOMEM`, which every operation here takes without
    /// changing anything. The kernel VM's tables are shared by every client and the firmware,
    /// and stay uncharged.
    #[inline]
    pub fn gfp(&self) -> Flags {
        if self.user {
            GFP_KERNEL_ACCOUNT
        } else {
            GFP_KERNEL
        }
    }
}

/// What a map of a range still needs allocated before it can write anything (see
/// [`PageTable::prealloc_from`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableNeeds {
    /// Zeroed table pages.
    pub pages: usize,
    /// Occupancy arrays of new second-level tables.
    pub counts: usize,
}

/// Tables allocated ahead of a map, so that the allocation can happen without the lock that
/// serializes the page table: one bind can need thousands of table pages, and the lock of the
/// device's UAT is every client's. What a map does not use is freed with the reserve.
///
/// # Invariants
///
/// The pages of `pages` are zero (apart from the list's link word); every entry of `counts`
/// holds `PTES_PER_TABLE` empty occupancies.
pub struct TableReserve {
    pages: PageList,
    counts: KVec<Occupancies>,
}

impl TableReserve {
    /// An empty reserve.
    pub const fn new() -> TableReserve {
        // INVARIANT: Nothing in it.
        TableReserve {
            pages: PageList::new(),
            counts: KVec::new(),
        }
    }

    /// Whether the reserve holds everything `needs` asks for.
    pub fn covers(&self, needs: TableNeeds) -> bool {
        self.pages.len() >= needs.pages && self.counts.len() >= needs.counts
    }

    /// Allocates what the reserve lacks of `needs`, with the flags of a table configured by
    /// `cfg` ([`PtConfig::gfp`]). On failure the reserve keeps what it got.
    pub fn top_up(&mut self, cfg: &PtConfig, needs: TableNeeds) -> Result {
        let gfp = cfg.gfp();
        while self.pages.len() < needs.pages {
            // INVARIANT: Zeroed by the allocator.
            self.pages.push(Page::alloc_page(gfp | __GFP_ZERO)?);
        }
        if let Some(more) = needs.counts.checked_sub(self.counts.len()) {
            self.counts.reserve(more, gfp)?;
        }
        while self.counts.len() < needs.counts {
            let mut counts = KVVec::with_capacity(PTES_PER_TABLE, gfp)?;
            for _ in 0..PTES_PER_TABLE {
                counts
                    .push_within_capacity(Occupancy::new())
                    .map_err(|_| ENOMEM)?;
            }
            // INVARIANT: `PTES_PER_TABLE` empty occupancies.
            self.counts
                .push_within_capacity(counts)
                .map_err(|_| ENOMEM)?;
        }
        Ok(())
    }
}

impl Default for TableReserve {
    fn default() -> Self {
        Self::new()
    }
}

/// A physically contiguous, page-aligned run of memory (one scatter-list entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// Physical address of the first byte.
    pub addr: PhysAddr,
    /// Length in bytes.
    pub len: u64,
}

/// Where a VA points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte at that VA.
    pub pa: PhysAddr,
    /// The protection of its page.
    pub prot: Prot,
}

/// A run of pages mapped to contiguous physical memory with one protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First VA.
    pub va: u64,
    /// Physical address of the first page.
    pub pa: PhysAddr,
    /// Length in bytes.
    pub size: u64,
    /// Protection of every page of the run.
    pub prot: Prot,
    /// The descriptor bits other than the address, the same for every page of the run
    /// ([`crate::pte::PageDesc::attrs`]): for crash dumps, which show what the hardware sees.
    pub attrs: u64,
}

impl Mapping {
    /// What the GPU may do through the run's descriptors ([`crate::pte::gpu_access_of`]).
    pub fn gpu_access(&self) -> crate::pte::Access {
        crate::pte::gpu_access_of(self.attrs)
    }
}

/// The occupancies of the leaf tables below one second-level table, indexed like its entries:
/// `PTES_PER_TABLE` of them while that table exists, none otherwise.
///
/// The occupancy of a leaf table ([`Occupancy`]) counts the page descriptors the driver wrote
/// into it and has not cleared since (0 where there is no leaf table), and bounds the entries
/// they lie in. It lets operations know a table or part of it is empty without reading it, and
/// unmap count the pages of a table it unlinks whole. `kvmalloc`ed: 16 KiB each.
type Occupancies = KVVec<Occupancy>;

/// How the walker treats tables on its way.
enum Tables<'a> {
    /// Visit the existing tables only; missing ones are reported to the visitor.
    Existing,
    /// Create the missing tables from preallocated zeroed pages.
    Create(&'a mut PageList),
    /// After visiting a leaf table, clear the walked part of it; then unlink every table that is
    /// empty and put it on the list. A leaf table the range covers whole, or whose last pages
    /// the range holds, is unlinked as it is, without clearing its descriptors: it is freed only
    /// after the TLB flush, and until then a stale walk cache reaching it finds the same
    /// translations the stale TLB may hold.
    Prune(&'a mut PageList),
    /// Unlink every table of the range that holds nothing (a leaf table whose count is zero, a
    /// second-level table left without tables) and put it on the list; leave the others alone,
    /// descriptors included. The visitor changes nothing.
    PruneEmpty(&'a mut PageList),
}

impl Tables<'_> {
    /// The list of unlinked tables, when the walk unlinks the tables it empties.
    #[inline]
    fn freed(&mut self) -> Option<&mut PageList> {
        match self {
            Tables::Prune(freed) | Tables::PruneEmpty(freed) => Some(freed),
            Tables::Existing | Tables::Create(_) => None,
        }
    }
}

/// A step of a walk: one leaf table (or a region whose tables are missing) and the part of the
/// walked range it covers.
enum Step<'a> {
    /// A leaf table, its occupancy, and the part of the range it maps.
    Leaf(&'a Entries, &'a Occupancy, VaRange),
    /// No table below level `level` maps this part of the range.
    Missing(Level, VaRange),
}

/// What a walk changed.
#[derive(Default)]
struct WalkOut {
    /// Tables created minus tables unlinked, below the top level.
    delta: isize,
    /// The top-level entries whose second-level table was unlinked.
    pruned: u64,
    /// The last leaf table visited (0 if none).
    leaf: PhysAddr,
    /// The last second-level table visited (0 if none), and its key for `PageTable::mid_cache`.
    mid: (u64, PhysAddr),
}

/// A walk that failed, with what it changed before it did: a walk that creates or unlinks tables
/// can fail after some (a corrupt descriptor further on, or a bug), and its caller must account
/// for those exactly ([`PageTable::finish_failed_walk`]).
struct WalkFailed {
    out: WalkOut,
    err: Error,
}

/// For walks that change no table ([`Tables::Existing`]): the error alone.
impl From<WalkFailed> for Error {
    #[inline]
    fn from(failed: WalkFailed) -> Error {
        failed.err
    }
}

/// One address space's UAT translation tables.
///
/// # Invariants
///
/// `root` is the physical address of the top-level table: a page this object owns (obtained
/// from [`Page::into_phys`]) if `root_map` is `None`, otherwise the bootloader's table that
/// `root_map` maps (at least `PAGE_SIZE` bytes, page aligned). Every valid table descriptor
/// reachable from `root` within `cfg.range` points at a table page this object owns, obtained
/// from [`Page::into_phys`]. `occ` has one entry per top-level entry; that entry holds
/// `PTES_PER_TABLE` occupancies whenever the top-level entry points at a second-level table, and
/// the occupancy of each leaf table counts the page descriptors written into it and not cleared
/// since (zero for a missing leaf table), and its span holds their indices. At most 64
/// top-level entries are reachable.
/// `leaf_cache`, when set, names a leaf table linked below `root` that maps that VA span;
/// `mid_cache`, when set, a second-level table linked below `root` that maps that VA span.
pub struct PageTable {
    root: PhysAddr,
    root_map: Option<Region>,
    cfg: PtConfig,
    /// Table pages owned below the top level (for statistics and leak accounting).
    tables: usize,
    /// For each top-level entry, the occupancies of the leaf tables below its second-level table
    /// ([`Occupancies`]): `PTES_PER_TABLE` of them while that table exists, none otherwise.
    occ: KVec<Occupancies>,
    /// The leaf table a single-leaf operation last reached: the VA span it maps (VA shifted by
    /// the leaf table span) and its physical address. It stays linked, and so valid, until a
    /// table is unlinked, which clears this.
    leaf_cache: Option<(u64, PhysAddr)>,
    /// The second-level table a walk last went through: the VA span it maps (VA shifted by the
    /// span of a top-level entry) and its physical address. It stays linked, and so valid, until
    /// a second-level table is unlinked, which clears this. It finds the leaf table of a
    /// single-leaf operation that misses `leaf_cache` without walking from the root, and lets
    /// an unmap that empties a leaf table unlink it in place.
    mid_cache: Option<(u64, PhysAddr)>,
    /// Walks of a range started so far (a statistic for benchmarks and tests: modifications are
    /// serialized by `&mut self`, concurrent readers may lose counts).
    walks: AtomicUsize,
    /// Whether dropping the object leaves every table as it is ([`PageTable::leak`]).
    leaked: bool,
    /// The range of the maps that failed while writing since [`PageTable::gather_undone`] last
    /// ran: their descriptors were valid for a while, so the GPU may have cached them.
    undone: Option<VaRange>,
}

impl PageTable {
    /// Creates an empty page table with its own top-level table.
    pub fn new(cfg: PtConfig) -> Result<PageTable> {
        cfg.validate()?;
        let occ = Self::new_occ(&cfg)?;
        let root = Page::alloc_page(cfg.gfp() | __GFP_ZERO)?;
        Ok(PageTable {
            root: Page::into_phys(root),
            root_map: None,
            cfg,
            tables: 0,
            occ,
            walks: AtomicUsize::new(0),
            leaf_cache: None,
            mid_cache: None,
            leaked: false,
            undone: None,
        })
    }

    /// Creates a page table on a top-level table that someone else owns (the bootloader's
    /// `pagetables` region, mapped as `root`), managing only `cfg.range` in it.
    ///
    /// The top-level entries covering `cfg.range` must all be invalid (zero): anything there was
    /// left by someone else (the bootloader, an earlier kernel) and is not ours to follow, prune
    /// or free, so such a table is refused with `EBUSY`.
    ///
    /// # Safety
    ///
    /// `root` must map a top-level table, and nothing else may modify the top-level entries
    /// covering `cfg.range` or what they point to while the returned object lives.
    pub unsafe fn new_borrowed(root: Region, cfg: PtConfig) -> Result<PageTable> {
        cfg.validate()?;
        let root_pa = root.phys();
        if !pa_aligned(root_pa) || !cfg.oas.fits(root_pa) || root.size() < PAGE_SIZE {
            return Err(EINVAL);
        }
        // Refuse a borrowed table whose managed part already holds anything: tables found there
        // were not allocated by us (the type invariant), so pruning would free them. Checked
        // before a `PageTable` exists, since dropping one prunes its range.
        {
            // SAFETY: `root` maps at least `PAGE_SIZE` (= `PTES_PER_TABLE * 8`) page-aligned
            // bytes and outlives this borrow. Descriptors are only ever accessed atomically.
            let t = unsafe { &*(root.as_ptr() as *const Entries) };
            for (idx, sub) in cfg.geometry.entries_in(cfg.range, TOP_LEVEL) {
                let raw = u64::from_le(t[idx].load(Ordering::Relaxed));
                if raw != 0 {
                    pr_err!(
                        "borrowed table {:#x}: entry {} ({:#018x}, VA {:#x}) is not ours, refusing it\n",
                        root_pa,
                        idx,
                        raw,
                        sub.start
                    );
                    return Err(EBUSY);
                }
            }
        }
        let occ = Self::new_occ(&cfg)?;
        Ok(PageTable {
            root: root_pa,
            root_map: Some(root),
            cfg,
            tables: 0,
            occ,
            walks: AtomicUsize::new(0),
            leaf_cache: None,
            mid_cache: None,
            leaked: false,
            undone: None,
        })
    }

    /// One empty [`Occupancies`] per top-level entry.
    fn new_occ(cfg: &PtConfig) -> Result<KVec<Occupancies>> {
        let n = cfg.geometry.entries(TOP_LEVEL);
        if n > 64 {
            // The masks of top-level entries (`WalkOut::pruned`) are 64 bits.
            return Err(EINVAL);
        }
        let mut occ = KVec::with_capacity(n, cfg.gfp())?;
        for _ in 0..n {
            // Within the capacity: does not allocate.
            occ.push(KVVec::new(), cfg.gfp())?;
        }
        Ok(occ)
    }

    /// Gives up every table of this address space, the top level included: dropping the object
    /// then frees nothing and leaves the descriptors as they are. For an address space the GPU
    /// may still walk (its TTBAT entry could not be cleared): a leak, not a use after free.
    pub fn leak(&mut self) {
        if !self.leaked {
            pr_warn!("leaking the page tables of {:#x}\n", self.root);
        }
        self.leaked = true;
    }

    /// Physical address of the top-level table (what goes into a TTBAT entry).
    pub fn ttb(&self) -> PhysAddr {
        self.root
    }

    /// The configuration this table was created with.
    pub fn config(&self) -> &PtConfig {
        &self.cfg
    }

    /// Number of table pages this object owns below the top level.
    pub fn table_pages(&self) -> usize {
        self.tables
    }

    /// Runs `f` on the descriptors of the table at `pa`, mapped once for the whole call: the
    /// mapped top-level table, or a table page we own, borrowed by its address. `EIO` if `pa` is
    /// neither (only a corrupt descriptor can point there).
    ///
    /// # Safety
    ///
    /// `pa` must be the root, or a table reachable from it within `cfg.range`, which this object
    /// owns (its type invariants), while `self` is borrowed. Descriptors are shared with the GPU
    /// and accessed atomically, except through [`plain`](crate::desc_run::plain).
    #[inline]
    unsafe fn with_table<R>(&self, pa: PhysAddr, f: impl FnOnce(&Entries) -> R) -> Result<R> {
        if let Some(map) = &self.root_map {
            if pa == self.root {
                // SAFETY: By the type invariants the mapping holds a page-aligned table of
                // `PAGE_SIZE` (= `PTES_PER_TABLE * 8`) bytes, alive as long as `self`.
                return Ok(f(unsafe { &*(map.as_ptr() as *const Entries) }));
            }
        }
        // SAFETY: The caller guarantees that the page stays allocated; `borrow_phys` still
        // refuses anything that is not the page allocator's.
        let page = unsafe { Page::borrow_phys(pa) }.ok_or(EIO)?;
        Ok(page.with_page_mapped(|p| {
            // SAFETY: The mapping is `PAGE_SIZE` (= `PTES_PER_TABLE * 8`) bytes and page aligned,
            // valid for the duration of the closure.
            f(unsafe { &*(p as *const Entries) })
        }))
    }

    /// Number of walks of a range the operations on this table have made so far.
    pub fn walks(&self) -> usize {
        self.walks.load(Ordering::Relaxed)
    }

    /// Validates a VA range argument: `EINVAL` if unaligned, empty or wrapping, `ERANGE` if not
    /// inside the table's range.
    #[inline]
    fn check_range(&self, iova: u64, size: u64) -> Result<VaRange> {
        let range = VaRange::from_start_size(iova, size)?;
        if !self.cfg.range.contains_range(&range) {
            return Err(ERANGE);
        }
        Ok(range)
    }

    #[cold]
    fn corrupt(&self, va: u64, level: Level, raw: u64) -> Error {
        pr_err!(
            "corrupt L{} descriptor {:#018x} at VA {:#x} (table {:#x}), not followed\n",
            level,
            raw,
            va,
            self.root
        );
        EIO
    }

    /// Reports the first corrupt descriptor of `run`, the part of a leaf table that maps `sub`.
    #[cold]
    fn corrupt_in(&self, run: &[AtomicU64], sub: VaRange) -> Error {
        let check = LeafCheck::new(self.cfg.oas);
        for (i, e) in run.iter().enumerate() {
            let raw = e.load(Ordering::Relaxed);
            if check.is_corrupt(raw) {
                let va = sub.start + ((i as u64) << UAT_PGBIT);
                return self.corrupt(va, LEAF_LEVEL, u64::from_le(raw));
            }
        }
        EIO
    }

    /// Counts the pages mapped in `run`, the part of a leaf table that maps `sub`; `EIO` if a
    /// descriptor there is neither invalid nor a page.
    #[inline]
    fn count_pages(&self, run: &[AtomicU64], sub: VaRange) -> Result<usize> {
        let (count, bad) = scan_leaves(run, LeafCheck::new(self.cfg.oas));
        if bad {
            return Err(self.corrupt_in(run, sub));
        }
        Ok(count)
    }

    /// Whether `range` lies inside the span of one leaf table: then an operation can check and
    /// change it in a single walk, the check of the whole range still preceding every write.
    #[inline]
    fn single_leaf(&self, range: VaRange) -> bool {
        let shift = self.cfg.geometry.shift(LEAF_LEVEL - 1);
        range.start >> shift == range.last >> shift
    }

    /// The part of the leaf table `t` that maps `sub`.
    #[inline]
    fn run<'t>(&self, t: &'t Entries, sub: VaRange) -> &'t [AtomicU64] {
        let (first, last) = self.leaf_indices(sub);
        &t[first..=last]
    }

    /// Walks `range`, calling `visit` once per leaf table it touches (in VA order) and once per
    /// region with missing tables. Each table is mapped once per visit.
    ///
    /// When pruning, a leaf table is unlinked when the range covers it whole or its count drops
    /// to zero (the visitor updates the occupancy of a partly covered table, and clears its
    /// descriptors unless it empties); a second-level table when it has no entry left. The
    /// occupancy of an unlinked leaf table is cleared; those below an unlinked second-level
    /// table are for the caller to drop (`WalkOut::pruned`, see [`PageTable::finish_walk`]).
    ///
    /// A failed walk returns what it changed before it failed, for the caller to account for.
    fn walk<F>(
        &self,
        range: VaRange,
        tables: &mut Tables<'_>,
        visit: &mut F,
    ) -> core::result::Result<WalkOut, WalkFailed>
    where
        F: FnMut(Step<'_>) -> Result,
    {
        let mut out = WalkOut::default();
        // A plain load and store: a statistic, not worth a locked read-modify-write.
        self.walks
            .store(self.walks.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        match self.walk_table(self.root, TOP_LEVEL, range, tables, visit, &mut out, None) {
            Ok(_) => Ok(out),
            Err(err) => Err(WalkFailed { out, err }),
        }
    }

    /// Walks the part `range` of the table at `table_pa`, of level `level` (with its occupancy
    /// when it is a leaf table). Returns, when pruning, whether the table is now empty
    /// (never for the top level).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn walk_table<F>(
        &self,
        table_pa: PhysAddr,
        level: Level,
        range: VaRange,
        tables: &mut Tables<'_>,
        visit: &mut F,
        out: &mut WalkOut,
        occ: Option<&Occupancy>,
    ) -> Result<bool>
    where
        F: FnMut(Step<'_>) -> Result,
    {
        if level == LEAF_LEVEL {
            out.leaf = table_pa;
        } else if level + 1 == LEAF_LEVEL {
            out.mid = (range.start >> self.cfg.geometry.shift(TOP_LEVEL), table_pa);
        }
        // SAFETY: By the type invariants, `table_pa` is the root or a table page we own, alive
        // while `self` is borrowed.
        unsafe {
            self.with_table(table_pa, |t| {
                self.walk_entries(t, level, range, tables, visit, out, occ)
            })
        }?
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_entries<F>(
        &self,
        t: &Entries,
        level: Level,
        range: VaRange,
        tables: &mut Tables<'_>,
        visit: &mut F,
        out: &mut WalkOut,
        occ: Option<&Occupancy>,
    ) -> Result<bool>
    where
        F: FnMut(Step<'_>) -> Result,
    {
        let g = self.cfg.geometry;
        let (first, last) = (g.index(range.start, level), g.index(range.last, level));
        let whole = first == 0 && last == g.entries(level) - 1;
        if level == LEAF_LEVEL {
            // Only the second level walks into leaf tables, always with their occupancy.
            let occ = occ.ok_or(EIO)?;
            visit(Step::Leaf(t, occ, range))?;
            if tables.freed().is_none() {
                return Ok(false);
            }
            if whole && matches!(tables, Tables::Prune(_)) {
                // Unlinked as it is (see `Tables::Prune`): its pages go with it.
                occ.clear();
                return Ok(true);
            }
            return Ok(occ.pages() == 0);
        }
        // The occupancies of the leaf tables below this one, when it is a second-level table.
        let occs: &[Occupancy] = if level + 1 == LEAF_LEVEL {
            self.occ
                .get(g.index(range.start, TOP_LEVEL))
                .map_or(&[], |c| c.as_slice())
        } else {
            &[]
        };
        // Whether every entry of the range is now invalid.
        let mut emptied = true;
        for (idx, sub) in g.entries_in(range, level) {
            let raw = u64::from_le(t[idx].load(Ordering::Relaxed));
            let child = if raw == 0 {
                match tables {
                    Tables::Create(pool) => {
                        if level == TOP_LEVEL
                            && self.occ.get(idx).map_or(0, |c| c.len()) != PTES_PER_TABLE
                        {
                            // The caller installs the occupancies first (`install_counts`).
                            return Err(EIO);
                        }
                        let page = pool.pop().ok_or(ENOMEM)?;
                        let child = Page::into_phys(page);
                        // The table's zeroed contents before the descriptor that publishes it:
                        // the GPU walks tables outside the CPUs' inner-shareable domain.
                        dma_mb(Write);
                        t[idx].store(table_desc(child).to_le(), Ordering::Relaxed);
                        out.delta += 1;
                        Some(child)
                    }
                    _ => None,
                }
            } else {
                match Desc::decode(raw, level, self.cfg.oas) {
                    Desc::Table(child) => Some(child),
                    _ => return Err(self.corrupt(sub.start, level, raw)),
                }
            };
            let Some(child) = child else {
                visit(Step::Missing(level, sub))?;
                continue;
            };
            let child_count = if level + 1 == LEAF_LEVEL {
                match occs.get(idx) {
                    Some(c) => Some(c),
                    None => {
                        pr_err!("no occupancy for the leaf table at VA {:#x}\n", sub.start);
                        return Err(EIO);
                    }
                }
            } else {
                None
            };
            let empty = self.walk_table(child, level + 1, sub, tables, visit, out, child_count)?;
            if let Some(freed) = tables.freed() {
                if empty {
                    t[idx].store(0, Ordering::Relaxed);
                    // SAFETY: The descriptor that owned the page is gone; ownership comes back
                    // to us exactly once.
                    freed.push_stale(unsafe { Page::from_phys(child) });
                    out.delta -= 1;
                    if level == TOP_LEVEL {
                        out.pruned |= 1 << idx;
                    }
                } else {
                    emptied = false;
                }
            }
        }
        if level == TOP_LEVEL || !emptied || tables.freed().is_none() {
            return Ok(false);
        }
        Ok(whole || is_empty_around(t, first, last))
    }

    /// After a walk: drops the occupancies below the second-level tables it unlinked, and
    /// returns by how many the tables below the top level changed.
    fn finish_walk(&mut self, out: WalkOut) -> isize {
        self.cache_mid(&out);
        self.drop_counts(out.pruned);
        out.delta
    }

    /// After a walk that failed: accounts for the tables it created or unlinked before it did
    /// (and drops the occupancies below the second-level tables it unlinked), as
    /// [`PageTable::finish_walk`] does after a whole one, drops the occupancies a map installed
    /// for second-level tables it did not get to create, forgets the caches and returns the
    /// walk's error. The tables it unlinked are on the caller's list: they must still wait for
    /// the TLB flush.
    fn finish_failed_walk(&mut self, failed: WalkFailed) -> Error {
        let delta = self.finish_walk(failed.out);
        self.account(delta);
        self.leaf_cache = None;
        self.mid_cache = None;
        let mut unused = 0u64;
        // SAFETY: By the type invariants, `root` is the top-level table, alive with `self`.
        let read = unsafe {
            self.with_table(self.root, |t| {
                for (idx, c) in self.occ.iter().enumerate().take(64) {
                    if !c.is_empty() && t[idx].load(Ordering::Relaxed) == 0 {
                        unused |= 1 << idx;
                    }
                }
            })
        };
        if read.is_ok() {
            self.drop_counts(unused);
        }
        failed.err
    }

    /// Drops the occupancies of the top-level entries in `mask`.
    fn drop_counts(&mut self, mut mask: u64) {
        while mask != 0 {
            let idx = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(c) = self.occ.get_mut(idx) {
                *c = KVVec::new();
            }
        }
    }

    /// Remembers the last second-level table `out`'s walk went through, or forgets the cached
    /// one if the walk unlinked any second-level table.
    #[inline(always)]
    fn cache_mid(&mut self, out: &WalkOut) {
        if out.pruned != 0 {
            self.mid_cache = None;
        } else if out.mid.1 != 0 {
            self.mid_cache = Some(out.mid);
        }
    }

    /// The cached second-level table, if it is the one that maps `range`.
    #[inline(always)]
    fn cached_mid(&self, range: VaRange) -> Option<PhysAddr> {
        let key = range.start >> self.cfg.geometry.shift(TOP_LEVEL);
        match self.mid_cache {
            Some((k, pa)) if k == key => Some(pa),
            _ => None,
        }
    }

    /// The leaf table that maps `range` (inside one leaf table) according to its entry in the
    /// cached second-level table, if that one maps `range`; `None` if not, or if the entry is not
    /// a table descriptor (nothing mapped there, or a corrupt one: for the walk to report).
    #[inline]
    fn mid_leaf(&self, range: VaRange) -> Option<PhysAddr> {
        let mid = self.cached_mid(range)?;
        let idx = self.cfg.geometry.index(range.start, LEAF_LEVEL - 1);
        // SAFETY: The cache only names a second-level table of ours, linked below the root.
        let raw = unsafe { self.with_table(mid, |t| t[idx].load(Ordering::Relaxed)) }.ok()?;
        match Desc::decode(u64::from_le(raw), LEAF_LEVEL - 1, self.cfg.oas) {
            Desc::Table(leaf) => Some(leaf),
            _ => None,
        }
    }

    /// The cached leaf table that maps `range` (inside one leaf table), if it is the cached one.
    #[inline(always)]
    fn cached_leaf(&self, range: VaRange) -> Option<PhysAddr> {
        let key = range.start >> self.cfg.geometry.shift(LEAF_LEVEL - 1);
        match self.leaf_cache {
            Some((k, pa)) if k == key => Some(pa),
            _ => None,
        }
    }

    /// Remembers `leaf` (0: nothing) as the leaf table that maps `range`.
    #[inline(always)]
    fn cache_leaf(&mut self, range: VaRange, leaf: PhysAddr) {
        if leaf != 0 {
            let key = range.start >> self.cfg.geometry.shift(LEAF_LEVEL - 1);
            self.leaf_cache = Some((key, leaf));
        }
    }

    /// Runs `f` on the leaf table at `leaf` that maps `range`, and its occupancy, without
    /// walking down to it: the path of single-leaf operations that find it cached.
    ///
    /// # Safety
    ///
    /// `leaf` must be a leaf table this object owns, linked where it maps `range`.
    #[inline(always)]
    unsafe fn with_leaf<R>(
        &self,
        leaf: PhysAddr,
        range: VaRange,
        f: impl FnOnce(&Entries, &Occupancy) -> Result<R>,
    ) -> Result<R> {
        let g = self.cfg.geometry;
        let occ = self
            .occ
            .get(g.index(range.start, TOP_LEVEL))
            .and_then(|c| c.get(g.index(range.start, LEAF_LEVEL - 1)))
            .ok_or(EIO)?;
        // SAFETY: The caller guarantees that `leaf` is a table we own, linked (so alive while
        // `self` is borrowed).
        unsafe { self.with_table(leaf, |t| f(t, occ)) }?
    }

    /// Whether `sub` covers a whole leaf table.
    #[inline(always)]
    fn whole_leaf(&self, sub: VaRange) -> bool {
        let mask = (1u64 << self.cfg.geometry.shift(LEAF_LEVEL - 1)) - 1;
        sub.start & mask == 0 && sub.last & mask == mask
    }

    /// The part of `sub` (inside the leaf table `t`) that may hold pages by the span of what
    /// the table holds (`o`), with its descriptors; `None` when no part may.
    #[inline(always)]
    fn live_run<'t>(
        &self,
        t: &'t Entries,
        o: Held,
        sub: VaRange,
    ) -> Option<(&'t [AtomicU64], VaRange)> {
        let (first, last) = self.leaf_indices(sub);
        // Inside `first..=last`, so inside the table: `get` always finds the run.
        let (a, b) = o.clip(first, last)?;
        let live = VaRange {
            start: sub.start + (((a - first) as u64) << UAT_PGBIT),
            last: sub.last - (((last - b) as u64) << UAT_PGBIT),
        };
        Some((t.get(a..=b)?, live))
    }

    /// [`PageTable::occupied`] for a range expected to hold pages (an unmap's): no zero test
    /// first.
    #[inline]
    fn occupied_full(&self, t: &Entries, o: Held, sub: VaRange) -> Result<usize> {
        let Some((run, live)) = self.live_run(t, o, sub) else {
            return Ok(0);
        };
        self.occupied_scan(run, o.pages(), live)
    }

    /// The checked page count of `run`, in a leaf table with `c` pages.
    #[inline(always)]
    fn occupied_scan(&self, run: &[AtomicU64], c: usize, sub: VaRange) -> Result<usize> {
        let n = self.count_pages(run, sub)?;
        self.within_count(n, c, sub)
    }

    /// `n`, the pages found in the part `sub` of a leaf table with `c` pages; `EIO` if more.
    #[inline(always)]
    fn within_count(&self, n: usize, c: usize, sub: VaRange) -> Result<usize> {
        if n > c {
            pr_err!(
                "leaf table at VA {:#x}: {} pages where {} were mapped (table {:#x})\n",
                sub.start,
                n,
                c,
                self.root
            );
            return Err(EIO);
        }
        Ok(n)
    }

    #[inline]
    fn leaf_indices(&self, sub: VaRange) -> (usize, usize) {
        let g = self.cfg.geometry;
        (
            g.index(sub.start, LEAF_LEVEL),
            g.index(sub.last, LEAF_LEVEL),
        )
    }

    fn account(&mut self, delta: isize) {
        match self.tables.checked_add_signed(delta) {
            Some(n) => self.tables = n,
            None => {
                // More tables unlinked than this object ever linked: a bookkeeping bug.
                pr_warn!(
                    "table count {} {:+} out of range, clamped\n",
                    self.tables,
                    delta
                );
                self.tables = if delta < 0 { 0 } else { usize::MAX };
            }
        }
    }

    fn visit_tables(
        &self,
        table_pa: PhysAddr,
        level: Level,
        range: VaRange,
        f: &mut impl FnMut(PhysAddr),
    ) -> Result {
        if level == LEAF_LEVEL {
            return Ok(());
        }
        // SAFETY: By the type invariants, `table_pa` is the root or a table page we own.
        unsafe {
            self.with_table(table_pa, |table| {
                for (idx, sub) in self.cfg.geometry.entries_in(range, level) {
                    let raw = u64::from_le(table[idx].load(Ordering::Relaxed));
                    match Desc::decode(raw, level, self.cfg.oas) {
                        Desc::Table(child) => {
                            f(child);
                            self.visit_tables(child, level + 1, sub, f)?;
                        }
                        Desc::Invalid => {}
                        Desc::Page(_) | Desc::Corrupt(_) => {
                            return Err(self.corrupt(sub.start, level, raw))
                        }
                    }
                }
                Ok(())
            })
        }?
    }
}

impl Drop for PageTable {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // The owner has unbound this address space and invalidated its TLB entries: the GPU can
        // no longer walk these tables, so they are freed at once.
        let mut freed = PageList::new();
        let range = self.cfg.range;
        let result = self.walk(range, &mut Tables::Prune(&mut freed), &mut |step| {
            if let Step::Leaf(t, occ, sub) = step {
                // Everything goes: a table the range covers in part is cleared too.
                if !self.whole_leaf(sub) {
                    fill(self.run(t, sub), 0);
                }
                occ.clear();
            }
            Ok(())
        });
        if result.is_err() {
            pr_err!("leaking page tables below a corrupt descriptor\n");
        }
        drop(freed);
        self.leaf_cache = None;
        if self.root_map.is_none() {
            // SAFETY: By the type invariants we own the root, which came from `into_phys`.
            drop(unsafe { Page::from_phys(self.root) });
        }
    }
}

#[cfg(test)]
mod tests {
    //! Host-only checks of paths the public API cannot reach.

    use super::*;
    use crate::geometry::Geometry;
    use crate::page_source::{PageSource, Scatter};
    use crate::tlb::Gather;

    fn pt() -> PageTable {
        let g = Geometry::G13;
        PageTable::new(PtConfig {
            geometry: g,
            range: g.lower_half(),
            oas: crate::pte::Oas::BITS_40,
            user: true,
            global: false,
        })
        .unwrap()
    }

    /// A source that promises pages and runs out after `n`.
    struct Short(u64);

    impl PageSource for Short {
        fn next_page(&mut self) -> Option<PhysAddr> {
            self.0 = self.0.checked_sub(1)?;
            Some(0x8_0000_0000)
        }
    }

    fn range(start: u64, pages: u64) -> VaRange {
        VaRange::from_start_size(start, pages * UAT_PGSZ).unwrap()
    }

    /// Unmaps `pages` pages at `va` and flushes (no TLB to invalidate).
    fn unmap_now(pt: &mut PageTable, va: u64, pages: u64) -> Result<usize> {
        let mut gather = Gather::new();
        let r = pt.unmap(va, pages * UAT_PGSZ, &mut gather);
        gather.finish_unbound();
        r
    }

    /// The cached second-level table is forgotten when an unmap frees it: the page can go to
    /// another address space's tables at once, and following the stale cache into it would clear
    /// that one's mappings.
    #[test]
    fn a_freed_second_level_table_is_not_used_through_the_cache() {
        let mut a = pt();
        let mut b = pt();
        let l1 = 1u64 << 36;
        let (va, pa) = (0x1_0000_0000u64, 0x8_0000_0000u64);
        a.map(va, pa, UAT_PGSZ, Prot::GPU_SHARED_RW).unwrap();
        // Another top-level entry, walked last: the cached second-level table is its.
        a.map(va + l1, pa, UAT_PGSZ, Prot::GPU_SHARED_RW).unwrap();
        // Frees the leaf and second-level tables of `va`; the cache must not keep the latter.
        assert_eq!(unmap_now(&mut a, va, 1), Ok(1));
        // The page allocator hands the freed pages out again: to `b`'s tables for the same VA.
        b.map(va, pa, UAT_PGSZ, Prot::GPU_SHARED_RW).unwrap();
        // Nothing is mapped at `va` in `a` any more, and `b` keeps its page.
        assert_eq!(unmap_now(&mut a, va, 1), Ok(0));
        assert_eq!(b.translate(va).map(|t| t.pa), Ok(pa));
        a.check_occupancy().unwrap();
        b.check_occupancy().unwrap();
    }

    #[test]
    fn a_short_source_is_refused_before_anything_is_written() {
        let mut pt = pt();
        let sg = [PhysRange {
            addr: 0x8_0000_0000,
            len: 2 * UAT_PGSZ,
        }];
        let src = Scatter {
            ranges: &sg,
            off: 0,
        };
        assert!(src.covers(2) && !src.covers(3));
        // Across an L2 boundary, so that the write pass would cross leaf tables.
        let r = range(0x200_0000 - 2 * UAT_PGSZ, 3);
        assert_eq!(pt.map_pages(r, Prot::GPU_SHARED_RW, src), Err(EINVAL));
        assert_eq!(pt.table_pages(), 0);
    }

    /// What [`PageTable::gather_undone`] gives.
    fn undone(pt: &mut PageTable) -> Option<VaRange> {
        let mut gather = Gather::new();
        pt.gather_undone(&mut gather);
        let range = gather.range();
        gather.finish_unbound();
        range
    }

    #[test]
    fn a_failure_while_writing_is_undone() {
        // Across two leaf tables: runs out on the second leaf table (the first one's two pages
        // were written), or on the first one, with the second one's page still in the reserve.
        // Across two top-level entries: runs out before the second one's second-level table is
        // created, whose occupancies were installed.
        let leaves = 0x200_0000 - 2 * UAT_PGSZ;
        let mids = (1 << 36) - 2 * UAT_PGSZ;
        for (start, pages, tables) in [(leaves, 3, 3), (leaves, 1, 2), (mids, 1, 2)] {
            let mut pt = pt();
            let r = range(start, 4);
            assert_eq!(pt.map_pages(r, Prot::GPU_SHARED_RW, Short(pages)), Err(EIO));
            // The range is for the caller to invalidate, once.
            assert_eq!(undone(&mut pt), Some(r));
            assert_eq!(undone(&mut pt), None);
            let mut runs = 0;
            pt.for_each_mapping_all(|_| runs += 1).unwrap();
            assert_eq!(runs, 0);
            // The tables linked before the failure stay, counted.
            let mut linked = 0;
            pt.for_each_table_page(|_| linked += 1).unwrap();
            assert_eq!(linked, tables + 1);
            assert_eq!(pt.table_pages(), tables);
            pt.check_occupancy().unwrap();
            // The range is free again.
            pt.map(r.start, 0x8_0000_0000, 4 * UAT_PGSZ, Prot::GPU_SHARED_RW)
                .unwrap();
            // A map refused before writing leaves nothing to invalidate.
            assert_eq!(
                pt.map(r.start, 0x8_0000_0000, UAT_PGSZ, Prot::GPU_SHARED_RW),
                Err(EEXIST)
            );
            assert_eq!(undone(&mut pt), None);
        }
    }
}
