// SPDX-License-Identifier: GPL-2.0

//! Crash dumps parsed back with an ELF library and compared with the VM's mappings and the
//! memory behind them; `readelf` and `gdb` must open them.

use agx_soc::firmware::FwKnobs;
use agx_soc::Soc;
use asahi::crashdump::{vm_core, NT_AGX_SEGMENT, RECORD_SIZE};
use asahi::gpuvm::{bind_flags::*, BindOp};
use asahi::pgtable::PhysRange;
use kernel::error::code::E2BIG;
use kernel::sim;
use object::elf::{PF_R, PF_W, PT_LOAD, PT_NOTE};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::LittleEndian as LE;
use std::process::Command;

const PG: u64 = 1 << 14;

struct Dumped {
    core: Vec<u8>,
    /// (va, pa, size, ram, writable)
    expect: Vec<(u64, u64, u64, bool, bool)>,
    /// The memory behind each RAM segment, read at dump time.
    contents: Vec<Vec<u8>>,
}

fn make_dump() -> Dumped {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let a = g.gem_create(3 * PG).unwrap();
    let obj = g.gem(a).unwrap();
    let mut expect = Vec::new();
    for p in 0..3 {
        let pa = obj.phys_at(p * PG).unwrap();
        sim::write_phys(pa, format!("page {p} of a").as_bytes()).unwrap();
    }
    let pas: Vec<u64> = (0..3).map(|p| obj.phys_at(p * PG).unwrap()).collect();
    g.bind(
        vm,
        &BindOp {
            flags: READ | WRITE,
            handle: a,
            offset: 0,
            range: 3 * PG,
            addr: 0x10_0000,
        },
    )
    .unwrap();
    // Runs of physically contiguous pages merge; others are separate segments.
    let mut run_start = 0;
    for p in 1..=3 {
        if p == 3 || pas[p] != pas[p - 1] + PG {
            expect.push((
                0x10_0000 + run_start as u64 * PG,
                pas[run_start],
                (p - run_start) as u64 * PG,
                true,
                true,
            ));
            run_start = p;
        }
    }
    // Not RAM (an imported carve-out in the hole): mapped, not read, marked.
    let hole = g
        .gem_import(&[PhysRange {
            addr: sim::HOLE.0,
            len: 2 * PG,
        }])
        .unwrap();
    g.bind(
        vm,
        &BindOp {
            flags: READ,
            handle: hole,
            offset: 0,
            range: 2 * PG,
            addr: 0x20_0000,
        },
    )
    .unwrap();
    expect.push((0x20_0000, sim::HOLE.0, 2 * PG, false, false));
    // The dummy page, read-only.
    let dummy = g.kernel_range(vm).unwrap().start;
    let dpa = g.uat().vm_table(vm).unwrap().translate(dummy).unwrap().pa;
    expect.push((dummy, dpa, PG, true, false));
    let pt = g.uat().vm_table(vm).unwrap();
    // SAFETY: The engine's buffers and the VM's dummy page stay while the VM maps them.
    assert_eq!(unsafe { vm_core(pt, 1000) }.err(), Some(E2BIG));
    // SAFETY: As above.
    let core = unsafe { vm_core(pt, 1 << 20) }.unwrap().as_slice().to_vec();
    let contents = expect
        .iter()
        .map(|&(_, pa, size, ram, _)| {
            let mut b = vec![0u8; if ram { size as usize } else { 0 }];
            if ram {
                sim::read_phys(pa, &mut b).unwrap();
            }
            b
        })
        .collect();
    drop(g);
    drop(soc);
    Dumped {
        core,
        expect,
        contents,
    }
}

#[test]
fn dump_matches_mappings_and_contents() {
    let d = make_dump();
    let elf = ElfFile64::<LE>::parse(&d.core[..]).unwrap();
    let hdr = elf.elf_header();
    assert_eq!(hdr.e_type.get(LE), object::elf::ET_CORE);
    let phdrs = elf.elf_program_headers();
    assert_eq!(phdrs[0].p_type(LE), PT_NOTE);
    let loads: Vec<_> = phdrs.iter().filter(|p| p.p_type(LE) == PT_LOAD).collect();
    assert_eq!(loads.len(), d.expect.len());
    for ((p, &(va, pa, size, ram, w)), want) in loads.iter().zip(&d.expect).zip(&d.contents) {
        assert_eq!(p.p_vaddr(LE), va);
        assert_eq!(p.p_paddr(LE), pa);
        assert_eq!(p.p_memsz(LE), size);
        assert_eq!(p.p_filesz(LE), if ram { size } else { 0 });
        assert_eq!(p.p_flags(LE), PF_R | if w { PF_W } else { 0 });
        if ram {
            let data = p.data(LE, &d.core[..]).unwrap();
            assert!(data == &want[..], "contents of {va:#x}");
        }
    }
    // The first load holds "page 0 of a" at its start.
    let first = loads[0].data(LE, &d.core[..]).unwrap();
    assert!(first.starts_with(b"page 0 of a"));
    // The note: one record per load, with RAM-ness.
    let mut notes = phdrs[0].notes(LE, &d.core[..]).unwrap().unwrap();
    let note = notes.next().unwrap().unwrap();
    assert_eq!(note.name(), b"AGXUAT");
    assert_eq!(note.n_type(LE), NT_AGX_SEGMENT);
    let desc = note.desc();
    assert_eq!(desc.len(), RECORD_SIZE * loads.len());
    for (i, &(va, _, _, ram, _)) in d.expect.iter().enumerate() {
        let w =
            |k: usize| u64::from_le_bytes(desc[i * RECORD_SIZE + 8 * k..][..8].try_into().unwrap());
        assert_eq!(w(0), va);
        assert_eq!(w(4), ram as u64);
        assert_eq!(w(3) & 3, 3, "leaf attributes");
    }
}

fn write_core() -> std::path::PathBuf {
    let d = make_dump();
    let dir = std::env::temp_dir().join(format!("uat-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpu.core");
    std::fs::write(&path, &d.core).unwrap();
    path
}

#[test]
fn readelf_and_gdb_open_it() {
    let path = write_core();
    let out = Command::new("readelf").arg("-lW").arg(&path).output();
    let Ok(out) = out else {
        panic!("readelf (binutils) is needed for this test");
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Elf file type is CORE"), "{text}");
    assert!(text.contains("0x0000000000100000"), "{text}");
    assert_eq!(text.matches("LOAD").count(), 5, "{text}");
    // gdb is optional here (`.ci/run` installs it, and `CI` makes it required).
    match Command::new("gdb")
        .args(["-nx", "-batch", "-ex"])
        .arg(format!("core-file {}", path.display()))
        .args(["-ex", "info files"])
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(text.contains("file type elf64-little"), "{text}");
            assert!(text.contains("0x00100000 - 0x00104000 is load1"), "{text}");
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("gdb is needed in CI: {e}"),
        Err(e) => eprintln!("gdb not run ({e}): only readelf checked the core"),
    }
    // `UAT_CORE_OUT=FILE` keeps a copy, to look at with other tools.
    if let Ok(keep) = std::env::var("UAT_CORE_OUT") {
        std::fs::copy(&path, keep).unwrap();
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A sparse binding is one segment holding its page once; beyond 65534 segments the count goes
/// in section 0 (PN_XNUM), and the `object` crate and `readelf` read it.
#[test]
fn sparse_segments_and_extended_numbering() {
    use asahi::crashdump::{SEG_RAM, SEG_REPEAT};
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let null = g.gem_create(PG).unwrap();
    sim::write_phys(g.gem(null).unwrap().phys_at(0).unwrap(), b"null page").unwrap();
    g.bind(
        vm,
        &BindOp {
            flags: READ | SINGLE_PAGE,
            handle: null,
            offset: 0,
            range: 1 << 30,
            addr: 1 << 32,
        },
    )
    .unwrap();
    // 70000 pages of the hole, never physically adjacent: one segment each.
    let n = 70_000u64;
    let sg: Vec<PhysRange> = (0..n)
        .map(|i| PhysRange {
            addr: sim::HOLE.0 + ((i * 3) % (sim::HOLE.1 / PG)) * PG,
            len: PG,
        })
        .collect();
    let h = g.gem_import(&sg).unwrap();
    g.bind(
        vm,
        &BindOp {
            flags: READ,
            handle: h,
            offset: 0,
            range: n * PG,
            addr: 1 << 36,
        },
    )
    .unwrap();
    // SAFETY: The engine's buffers stay while the VM maps them.
    let core = unsafe { vm_core(g.uat().vm_table(vm).unwrap(), 64 << 20) }
        .unwrap()
        .as_slice()
        .to_vec();
    assert_eq!(
        u16::from_le_bytes([core[56], core[57]]),
        0xffff,
        "e_phnum = PN_XNUM"
    );
    let elf = ElfFile64::<LE>::parse(&core[..]).unwrap();
    let phdrs = elf.elf_program_headers();
    // The note, the sparse segment, the 70000 pages, the dummy page.
    assert_eq!(phdrs.len(), 1 + 1 + n as usize + 1);
    let sparse = &phdrs[1];
    assert_eq!(sparse.p_vaddr(LE), 1 << 32);
    assert_eq!(sparse.p_memsz(LE), 1 << 30);
    assert_eq!(sparse.p_filesz(LE), PG);
    assert!(sparse
        .data(LE, &core[..])
        .unwrap()
        .starts_with(b"null page"));
    let mut notes = phdrs[0].notes(LE, &core[..]).unwrap().unwrap();
    let desc = notes.next().unwrap().unwrap().desc();
    let flags =
        |i: usize| u64::from_le_bytes(desc[i * RECORD_SIZE + 32..][..8].try_into().unwrap());
    assert_eq!(flags(0), SEG_RAM | SEG_REPEAT);
    assert_eq!(flags(1), 0, "not RAM");
    let dir = std::env::temp_dir().join(format!("uat-xnum-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpu.core");
    std::fs::write(&path, &core).unwrap();
    let out = Command::new("readelf")
        .arg("-hW")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Number of program headers:         65535 (70003)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dump shows the descriptors as the tables hold them, not as the protection would rebuild
/// them: a page whose GPU-access bit was cleared (by a bug, or corruption) is a segment of its
/// own, with that bit clear in its note record and no access in its flags.
#[test]
fn dumps_show_the_descriptors_as_they_are() {
    let soc = Soc::new(FwKnobs::default());
    let mut g = soc.boot_gpuvm().unwrap();
    let vm = g.vm_create().unwrap();
    let a = g.gem_create(PG).unwrap();
    let va = 0x10_0000;
    for i in 0..2 {
        g.bind(
            vm,
            &BindOp {
                flags: READ | WRITE,
                handle: a,
                offset: 0,
                range: PG,
                addr: va + i * PG,
            },
        )
        .unwrap();
    }
    let pt = g.uat().vm_table(vm).unwrap();
    // The second page's leaf descriptor, found by walking the tables as the GPU does.
    let mut table = pt.ttb();
    for shift in [36, 25] {
        let desc = sim::read_phys_u64(table + ((va + PG) >> shift & 0x7ff) * 8).unwrap();
        table = desc & 0xffff_ffff_c000;
    }
    let leaf = table + ((va + PG) >> 14 & 0x7ff) * 8;
    let desc = sim::read_phys_u64(leaf).unwrap();
    const GPU_ACCESS: u64 = 1 << 55;
    assert_ne!(desc & GPU_ACCESS, 0);
    sim::write_phys(leaf, &(desc & !GPU_ACCESS).to_le_bytes()).unwrap();
    // SAFETY: The engine's buffers and the VM's dummy page stay while the VM maps them.
    let core = unsafe { vm_core(pt, 1 << 20) }.unwrap().as_slice().to_vec();
    let elf = ElfFile64::<LE>::parse(&core[..]).unwrap();
    let phdrs = elf.elf_program_headers();
    // The note, the two pages (one page repeated would be one segment), the dummy page.
    assert_eq!(phdrs.len(), 4);
    assert_eq!(phdrs[1].p_vaddr(LE), va);
    assert_eq!(phdrs[1].p_flags(LE), PF_R | PF_W);
    assert_eq!(phdrs[2].p_vaddr(LE), va + PG);
    assert_eq!(phdrs[2].p_flags(LE), 0, "no GPU access");
    let mut notes = phdrs[0].notes(LE, &core[..]).unwrap().unwrap();
    let rec = notes.next().unwrap().unwrap().desc().to_vec();
    let attrs = |i: usize| u64::from_le_bytes(rec[i * RECORD_SIZE + 24..][..8].try_into().unwrap());
    assert_eq!(attrs(0), desc & !0xffff_ffff_c000);
    assert_eq!(attrs(1), desc & !0xffff_ffff_c000 & !GPU_ACCESS);
    // Put back, so that the VM's teardown finds its tables as it left them.
    sim::write_phys(leaf, &desc.to_le_bytes()).unwrap();
    drop(g);
    drop(soc);
}
