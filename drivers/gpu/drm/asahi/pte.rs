// SPDX-License-Identifier: GPL-2.0

//! UAT descriptor format and GPU memory protections.
//!
//! Descriptors are 64-bit little-endian words. Bits `[1:0]` are `0b11` for a valid table (levels
//! 1 and 2) or page (level 3) descriptor and `0b00` for an invalid one. Page descriptors carry
//! the output address in bits `[47:14]` and the attributes below. The hardware's permission model
//! reads the pair (UXN, PXN) against AP, which is easy to get wrong with raw bits, so the rest of
//! the driver only speaks [`Prot`], built from the named protections.

use crate::geometry::{Level, LEAF_LEVEL, UAT_PGMSK};
use kernel::io::PhysAddr;

const DESC_TYPE_MASK: u64 = 0b11;
const DESC_VALID: u64 = 0b11;
const ATTR_SHIFT: u32 = 2;
const ATTR_MASK: u64 = 0b111 << ATTR_SHIFT;
const AP_SHIFT: u32 = 6;
const AP_MASK: u64 = 0b11 << AP_SHIFT;
const SH_MASK: u64 = 0b11 << 8;
const PTE_AF: u64 = 1 << 10;
const PTE_NG: u64 = 1 << 11;
const OA_LOW_BIT: u32 = 14;
const OA_HIGH_BIT: u32 = 47;
const PTE_PXN: u64 = 1 << 53;
const PTE_UXN: u64 = 1 << 54;
const PTE_GPU_ACCESS: u64 = 1 << 55;

/// Mask of the output-address field, bits `[47:14]`.
const OA_FIELD: u64 = ((1u64 << (OA_HIGH_BIT + 1)) - 1) & !((1u64 << OA_LOW_BIT) - 1);

/// Memory attribute index (AttrIndex, bits `[4:2]`): selects a MAIR entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemAttr {
    /// Index 0: normal cached memory.
    Cached,
    /// Index 1: device memory (MMIO).
    Device,
    /// Index 2: normal uncached, coherent ("shared") memory.
    Uncached,
    /// Indices 3 to 7: never written by this driver, decoded as found.
    Other(u8),
}

impl MemAttr {
    const fn index(self) -> u64 {
        match self {
            MemAttr::Cached => 0,
            MemAttr::Device => 1,
            MemAttr::Uncached => 2,
            MemAttr::Other(i) => (i & 0b111) as u64,
        }
    }

    const fn from_index(i: u64) -> MemAttr {
        match i {
            0 => MemAttr::Cached,
            1 => MemAttr::Device,
            2 => MemAttr::Uncached,
            _ => MemAttr::Other(i as u8),
        }
    }
}

/// Access permission field (AP, bits `[7:6]`): which agents the (UXN, PXN) pair speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ap {
    /// AP 0: firmware and GPU get the same access.
    FwGpu,
    /// AP 1: firmware access, with a GPU read-only variant.
    Fw,
    /// AP 2: GPU-only access.
    Gpu,
    /// AP 3: not defined for the UAT; never written, decoded as no access.
    Reserved,
}

impl Ap {
    const fn bits(self) -> u64 {
        match self {
            Ap::FwGpu => 0,
            Ap::Fw => 1,
            Ap::Gpu => 2,
            Ap::Reserved => 3,
        }
    }

    const fn from_bits(b: u64) -> Ap {
        match b & 0b11 {
            0 => Ap::FwGpu,
            1 => Ap::Fw,
            2 => Ap::Gpu,
            _ => Ap::Reserved,
        }
    }
}

/// What one agent may do with a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Loads are allowed.
    pub read: bool,
    /// Stores are allowed.
    pub write: bool,
}

impl Access {
    /// No access.
    pub const NONE: Access = Access::new(false, false);
    /// Read-only.
    pub const RO: Access = Access::new(true, false);
    /// Write-only.
    pub const WO: Access = Access::new(false, true);
    /// Read and write.
    pub const RW: Access = Access::new(true, true);

    const fn new(read: bool, write: bool) -> Access {
        Access { read, write }
    }
}

/// A GPU page protection: the attribute and permission fields of a page descriptor.
///
/// Values are built from the named protections below (or [`Prot::gpu`] for user mappings) and
/// compared as a whole; [`Prot::gpu_access`] and [`Prot::fw_access`] interpret the permission
/// table of the hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    ap: Ap,
    attr: MemAttr,
    uxn: bool,
    pxn: bool,
}

impl Prot {
    const fn new(ap: Ap, attr: MemAttr, uxn: bool, pxn: bool) -> Prot {
        Prot { ap, attr, uxn, pxn }
    }

    /// Firmware MMIO, read-write.
    pub const FW_MMIO_RW: Prot = Prot::new(Ap::Fw, MemAttr::Device, true, false);
    /// Firmware MMIO, read-only.
    pub const FW_MMIO_RO: Prot = Prot::new(Ap::Fw, MemAttr::Device, false, false);
    /// Firmware shared (uncached) memory, read-write.
    pub const FW_SHARED_RW: Prot = Prot::new(Ap::Fw, MemAttr::Uncached, true, false);
    /// Firmware shared (uncached) memory, read-only.
    pub const FW_SHARED_RO: Prot = Prot::new(Ap::Fw, MemAttr::Uncached, false, false);
    /// Firmware private (cached) memory, read-write.
    pub const FW_PRIV_RW: Prot = Prot::new(Ap::Fw, MemAttr::Cached, true, false);
    /// Memory shared (uncached) by the GPU and the firmware, read-write for both.
    pub const GPUFW_SHARED_RW: Prot = Prot::new(Ap::FwGpu, MemAttr::Uncached, true, true);
    /// Memory private (cached) to the GPU and the firmware, read-write for both.
    pub const GPUFW_PRIV_RW: Prot = Prot::new(Ap::FwGpu, MemAttr::Cached, true, true);
    /// GPU read-only, firmware private read-write (cached).
    pub const GPU_RO_FW_PRIV_RW: Prot = Prot::new(Ap::Fw, MemAttr::Cached, true, true);
    /// GPU-only memory, read-write (user buffers).
    pub const GPU_SHARED_RW: Prot = Prot::new(Ap::Gpu, MemAttr::Cached, true, false);
    /// GPU-only memory, read-only.
    pub const GPU_SHARED_RO: Prot = Prot::new(Ap::Gpu, MemAttr::Cached, false, false);
    /// GPU-only memory, write-only.
    pub const GPU_SHARED_WO: Prot = Prot::new(Ap::Gpu, MemAttr::Cached, false, true);

    /// Every named protection, with its name (for tests, dumps and messages).
    pub const NAMED: [(&'static str, Prot); 13] = [
        ("FW_MMIO_RW", Prot::FW_MMIO_RW),
        ("FW_MMIO_RO", Prot::FW_MMIO_RO),
        ("FW_SHARED_RW", Prot::FW_SHARED_RW),
        ("FW_SHARED_RO", Prot::FW_SHARED_RO),
        ("FW_PRIV_RW", Prot::FW_PRIV_RW),
        ("GPUFW_SHARED_RW", Prot::GPUFW_SHARED_RW),
        ("GPUFW_PRIV_RW", Prot::GPUFW_PRIV_RW),
        ("GPU_RO_FW_PRIV_RW", Prot::GPU_RO_FW_PRIV_RW),
        ("GPU_SHARED_RW", Prot::GPU_SHARED_RW),
        ("GPU_SHARED_RO", Prot::GPU_SHARED_RO),
        ("GPU_SHARED_WO", Prot::GPU_SHARED_WO),
        // Two more rows of the permission table the driver may need: firmware-only read-write
        // through the GPU+firmware AP, and GPU+firmware read-only.
        (
            "GPUFW_SHARED_RO",
            Prot::new(Ap::FwGpu, MemAttr::Uncached, false, true),
        ),
        (
            "GPUFW_PRIV_WO",
            Prot::new(Ap::FwGpu, MemAttr::Cached, true, false),
        ),
    ];

    /// The GPU-only protection giving `access` (cached): what user VM binds use. `None` for no
    /// access, which is not a mapping.
    pub const fn gpu(access: Access) -> Option<Prot> {
        match (access.read, access.write) {
            (true, true) => Some(Prot::GPU_SHARED_RW),
            (true, false) => Some(Prot::GPU_SHARED_RO),
            (false, true) => Some(Prot::GPU_SHARED_WO),
            (false, false) => None,
        }
    }

    /// The name of this protection, if it is one of [`Prot::NAMED`].
    pub fn name(&self) -> Option<&'static str> {
        Prot::NAMED.iter().find(|(_, p)| p == self).map(|(n, _)| *n)
    }

    /// The AP field.
    pub const fn ap(&self) -> Ap {
        self.ap
    }

    /// The memory attribute.
    pub const fn attr(&self) -> MemAttr {
        self.attr
    }

    /// What the GPU may do through a mapping with this protection.
    pub const fn gpu_access(&self) -> Access {
        match (self.ap, self.uxn, self.pxn) {
            (Ap::FwGpu, false, false) => Access::NONE,
            (Ap::FwGpu, false, true) => Access::RO,
            (Ap::FwGpu, true, false) => Access::WO,
            (Ap::FwGpu, true, true) => Access::RW,
            (Ap::Fw, true, true) => Access::RO,
            (Ap::Fw, _, _) => Access::NONE,
            (Ap::Gpu, false, false) => Access::RO,
            (Ap::Gpu, false, true) => Access::WO,
            (Ap::Gpu, true, false) => Access::RW,
            (Ap::Gpu, true, true) => Access::NONE,
            (Ap::Reserved, _, _) => Access::NONE,
        }
    }

    /// What the firmware may do through a mapping with this protection.
    pub const fn fw_access(&self) -> Access {
        match (self.ap, self.uxn, self.pxn) {
            (Ap::FwGpu, _, _) => self.gpu_access(),
            (Ap::Fw, false, false) => Access::RO,
            (Ap::Fw, false, true) => Access::NONE,
            (Ap::Fw, true, _) => Access::RW,
            (Ap::Gpu, _, _) | (Ap::Reserved, _, _) => Access::NONE,
        }
    }

    /// Whether the mapping is cached and not coherent for the firmware, so that unmapping or
    /// changing it needs the firmware cache flush first.
    pub const fn needs_fw_flush(&self) -> bool {
        !matches!(self.ap, Ap::Gpu) && matches!(self.attr, MemAttr::Cached)
    }

    /// The same protection with uncached memory (the step before a firmware cache flush).
    pub const fn uncached(self) -> Prot {
        Prot {
            attr: MemAttr::Uncached,
            ..self
        }
    }

    const fn bits(&self) -> u64 {
        (self.attr.index() << ATTR_SHIFT)
            | (self.ap.bits() << AP_SHIFT)
            | if self.uxn { PTE_UXN } else { 0 }
            | if self.pxn { PTE_PXN } else { 0 }
    }

    const fn from_bits(pte: u64) -> Prot {
        Prot {
            ap: Ap::from_bits((pte & AP_MASK) >> AP_SHIFT),
            attr: MemAttr::from_index((pte & ATTR_MASK) >> ATTR_SHIFT),
            uxn: pte & PTE_UXN != 0,
            pxn: pte & PTE_PXN != 0,
        }
    }
}

/// Output address size: the physical address bits the UAT can emit (40 on t8103/t8112, 42 on
/// t600x/t602x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oas(u32);

impl Oas {
    /// 40-bit output addresses (t8103, t8112).
    pub const BITS_40: Oas = Oas(40);
    /// 42-bit output addresses (t600x, t602x).
    pub const BITS_42: Oas = Oas(42);

    /// The OAS of a GPU variant (the letter of its `apple,agx-g13x` compatible): the base SoCs
    /// (`G`: t8103, t8112) emit 40 bits, the Pro, Max and Ultra ones (`S`, `C`, `D`: t600x,
    /// t602x) 42; `None` for another letter.
    pub const fn of_variant(variant: u8) -> Option<Oas> {
        match variant {
            b'G' => Some(Oas::BITS_40),
            b'S' | b'C' | b'D' => Some(Oas::BITS_42),
            _ => None,
        }
    }

    /// An OAS of `bits`, if the descriptor format can hold it (bits 14..=47).
    pub const fn new(bits: u32) -> Option<Oas> {
        if bits > OA_LOW_BIT && bits <= OA_HIGH_BIT + 1 {
            Some(Oas(bits))
        } else {
            None
        }
    }

    /// Number of address bits.
    pub const fn bits(&self) -> u32 {
        self.0
    }

    /// Whether the physical address `last` fits in the output address size.
    pub const fn fits(&self, last: PhysAddr) -> bool {
        last >> self.0 == 0
    }
}

/// A descriptor read from a table, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// All zero: nothing mapped.
    Invalid,
    /// A table descriptor (levels 1 and 2) pointing at the next level's table.
    Table(PhysAddr),
    /// A page descriptor (level 3).
    Page(PageDesc),
    /// Anything else: block descriptors, reserved encodings, stray bits, addresses beyond the
    /// OAS. Reported, never followed.
    Corrupt(u64),
}

/// The decoded fields of a page descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageDesc {
    /// Physical address of the page.
    pub pa: PhysAddr,
    /// Its protection.
    pub prot: Prot,
    /// Every bit of the descriptor but the address: what the hardware sees, which `prot` does
    /// not say all of (nG, the access flag, the GPU-access bit).
    pub attrs: u64,
}

impl PageDesc {
    /// Whether the entry is non-global (tagged with the context's ASID).
    pub fn ng(&self) -> bool {
        self.attrs & PTE_NG != 0
    }

    /// What the GPU may do through the descriptor (see [`gpu_access_of`]).
    pub fn gpu_access(&self) -> Access {
        gpu_access_of(self.attrs)
    }
}

/// What the GPU may do through a page descriptor with the bits `attrs` (its address aside):
/// [`Prot::gpu_access`] of its protection, unless its access flag or its GPU-access bit is clear
/// (the GPU then faults on any access).
pub fn gpu_access_of(attrs: u64) -> Access {
    if attrs & (PTE_AF | PTE_GPU_ACCESS) != PTE_AF | PTE_GPU_ACCESS {
        return Access::NONE;
    }
    Prot::from_bits(attrs).gpu_access()
}

/// Bits a table descriptor may have set.
const TABLE_BITS: u64 = OA_FIELD | DESC_VALID;
/// Bits a page descriptor may have set.
const PAGE_BITS: u64 = OA_FIELD
    | DESC_VALID
    | ATTR_MASK
    | AP_MASK
    | SH_MASK
    | PTE_AF
    | PTE_NG
    | PTE_PXN
    | PTE_UXN
    | PTE_GPU_ACCESS
    | (0b1111 << 59)
    | (1 << 5);

impl Desc {
    /// Classifies the raw descriptor `raw` found at `level`, for a table with output address
    /// size `oas`.
    pub const fn decode(raw: u64, level: Level, oas: Oas) -> Desc {
        if raw == 0 {
            return Desc::Invalid;
        }
        if raw & DESC_TYPE_MASK != DESC_VALID {
            return Desc::Corrupt(raw);
        }
        let pa = raw & OA_FIELD;
        if !oas.fits(pa) {
            return Desc::Corrupt(raw);
        }
        if level == LEAF_LEVEL {
            if raw & !PAGE_BITS != 0 {
                return Desc::Corrupt(raw);
            }
            Desc::Page(PageDesc {
                pa,
                prot: Prot::from_bits(raw),
                attrs: raw & !OA_FIELD,
            })
        } else {
            if raw & !TABLE_BITS != 0 {
                return Desc::Corrupt(raw);
            }
            Desc::Table(pa)
        }
    }
}

/// The test [`Desc::decode`] makes of a page descriptor, reduced to two masks so that a whole
/// run of descriptors is checked with a few branch-free (vectorizable) operations per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafCheck {
    /// Bits no page descriptor within the OAS may have set.
    forbidden: u64,
}

impl LeafCheck {
    /// The check for tables with output address size `oas`.
    pub const fn new(oas: Oas) -> LeafCheck {
        let beyond_oas = OA_FIELD & !((1u64 << oas.bits()) - 1);
        LeafCheck {
            forbidden: !(PAGE_BITS & !beyond_oas),
        }
    }

    /// The bits no page descriptor may have set (the type bits aside, which must be `0b11`).
    #[inline(always)]
    pub const fn forbidden(&self) -> u64 {
        self.forbidden
    }

    /// What [`LeafCheck::all_pages`] XORs every descriptor (as read, little endian) with before
    /// OR-ing them together: the type bits of a page descriptor, which the XOR clears.
    pub const FLIP: u64 = DESC_VALID.to_le();

    /// Whether every descriptor of a run is a page descriptor (none is zero or corrupt), given
    /// the OR of all of them each XOR-ed with [`LeafCheck::FLIP`], in CPU byte order: exactly
    /// when no descriptor has a type bit clear (set once flipped) or a forbidden bit.
    #[inline(always)]
    pub const fn all_pages(&self, flipped: u64) -> bool {
        flipped & (DESC_TYPE_MASK | self.forbidden) == 0
    }

    /// Whether `raw` (as read, little endian) is neither invalid (zero) nor a page descriptor:
    /// exactly when `Desc::decode(raw, LEAF_LEVEL, oas)` is `Desc::Corrupt`.
    #[inline(always)]
    pub const fn is_corrupt(&self, raw: u64) -> bool {
        let raw = u64::from_le(raw);
        raw != 0 && (raw & self.forbidden != 0 || raw & DESC_TYPE_MASK != DESC_VALID)
    }
}

/// Encodes a table descriptor pointing at the table page `pa`.
pub const fn table_desc(pa: PhysAddr) -> u64 {
    (pa & OA_FIELD) | DESC_VALID
}

/// The constant part of every page descriptor of a mapping: everything but the address.
///
/// Map loops compute this once and OR in each page's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteTemplate(u64);

impl PteTemplate {
    /// The template for pages with `prot`, non-global (`ng`) everywhere but in the kernel VM's
    /// upper half (see [`crate::pgtable::PtConfig::global`]).
    pub const fn new(prot: Prot, ng: bool) -> PteTemplate {
        PteTemplate(
            DESC_VALID | prot.bits() | PTE_AF | PTE_GPU_ACCESS | if ng { PTE_NG } else { 0 },
        )
    }

    /// The page descriptor for physical page `pa` (page aligned, within the OAS: checked by the
    /// callers before anything is written).
    #[inline(always)]
    pub const fn pte(&self, pa: PhysAddr) -> u64 {
        self.0 | (pa & OA_FIELD)
    }

    /// The same descriptor `pte` with its protection replaced (address and nG kept).
    pub const fn reprot(&self, pte: u64) -> u64 {
        self.0 | (pte & OA_FIELD)
    }
}

/// Whether a physical address is page aligned.
pub const fn pa_aligned(pa: PhysAddr) -> bool {
    pa & UAT_PGMSK == 0
}
