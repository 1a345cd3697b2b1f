//! Per-vCPU CPUID: KVM's supported set, with the topology leaves rewritten to
//! describe `count` single-threaded cores in one package (APIC id = vCPU
//! index), the hypervisor bit set, and features a guest must not see cleared
//! (VMX/SMX, MONITOR, thermal/perf-monitoring and energy controls the VMM does
//! not emulate). Follows the spirit of Firecracker's CPUID normalisation.

use kvm_bindings::{
    kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::Kvm;

use super::LinuxBootError;

/// leaf 1 ECX: running under a hypervisor.
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// leaf 1 ECX bits cleared: DTES64(2), MONITOR(3), DS-CPL(4), VMX(5), SMX(6),
/// EST(7), TM2(8), PDCM(15).
const LEAF1_ECX_CLEAR: u32 =
    (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 15);
/// leaf 1 EDX: HTT (more than one logical processor per package).
const EDX_HTT: u32 = 1 << 28;
/// leaf 1 EDX bits cleared: DS(21), ACPI thermal(22), TM(29), PBE(31).
const LEAF1_EDX_CLEAR: u32 = (1 << 21) | (1 << 22) | (1 << 29) | (1 << 31);
/// Topology level types of leaves 0xb / 0x1f.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// The CPUID for vCPU `index` of `count`.
pub fn cpuid_for(kvm: &Kvm, index: u8, count: u8) -> Result<CpuId, LinuxBootError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(LinuxBootError::Cpuid)?;
    let entries = normalize(supported.as_slice(), index, count);
    CpuId::from_entries(&entries).map_err(|_| LinuxBootError::CpuidTooManyEntries)
}

/// Rewrites the supported entries for vCPU `index` of `count` (pure: unit-tested).
pub fn normalize(supported: &[kvm_cpuid_entry2], index: u8, count: u8) -> Vec<kvm_cpuid_entry2> {
    let count = u32::from(count.max(1));
    let apic_id = u32::from(index);
    // Bits of the APIC id that select the core (leaf 0xb level 1 shift).
    let core_bits = 32 - (count - 1).leading_zeros();
    let amd = supported
        .iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Auth"));

    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(supported.len() + 4);
    let mut has_1f = false;
    for e in supported {
        let mut e = *e;
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count.min(255) << 16);
                e.ecx = (e.ecx & !LEAF1_ECX_CLEAR) | ECX_HYPERVISOR;
                e.edx &= !LEAF1_EDX_CLEAR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // Deterministic cache parameters: EAX[25:14] = threads sharing - 1
                // (L1/L2 private to a core, L3 shared by all), EAX[31:26] = cores - 1.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            0x6 => {
                // No turbo boost (EAX[1]) and no energy-performance bias (ECX[3]).
                e.eax &= !(1 << 1);
                e.ecx &= !(1 << 3);
            }
            0xa => {
                // No architectural PMU is offered.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                has_1f |= e.function == 0x1f;
                continue; // rebuilt below
            }
            0x8000_0008 if amd => {
                // NC: number of physical cores - 1; ApicIdCoreIdSize.
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff) | (core_bits << 12);
            }
            0x8000_001e if amd => {
                e.eax = apic_id;
                e.ebx = apic_id & 0xff; // core id; one thread per core
                e.ecx = 0; // node 0, one node
            }
            _ => {}
        }
        out.push(e);
    }
    let has_b = supported.iter().any(|e| e.function == 0xb);
    let topo_leaves: &[u32] = match (has_b, has_1f) {
        (_, true) => &[0xb, 0x1f],
        (true, false) => &[0xb],
        (false, false) => &[],
    };
    for &function in topo_leaves {
        for index in 0..3u32 {
            let (eax, ebx, ecx) = match index {
                0 => (0, 1, (LEVEL_SMT << 8) | index),
                1 => (core_bits, count, (LEVEL_CORE << 8) | index),
                _ => (0, 0, index),
            };
            out.push(kvm_cpuid_entry2 {
                function,
                index,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                eax,
                ebx,
                ecx,
                edx: apic_id,
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(e: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *e.iter().find(|x| x.function == f && x.index == i).unwrap()
    }

    fn fake_supported() -> Vec<kvm_cpuid_entry2> {
        let leaf = |function, index, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        vec![
            leaf(0, 0, 0x1f, u32::from_le_bytes(*b"Genu"), 0, 0),
            leaf(
                1,
                0,
                0x906ea,
                0x0010_0800,
                0xfffa_3203 | (1 << 5),
                0xbfeb_fbff,
            ),
            leaf(4, 0, 0x121, 0, 0, 0),
            leaf(4, 3, 0x163, 0, 0, 0),
            leaf(0xa, 0, 0x0730_0805, 0, 0, 0),
            leaf(0xb, 0, 1, 2, 0x100, 7),
            leaf(0x1f, 0, 1, 2, 0x100, 7),
        ]
    }

    #[test]
    fn topology_for_each_vcpu() {
        for (index, count) in [(0u8, 1u8), (0, 4), (3, 4), (5, 6), (31, 32)] {
            let e = normalize(&fake_supported(), index, count);
            let l1 = find(&e, 1, 0);
            assert_eq!(l1.ebx >> 24, u32::from(index), "initial APIC id");
            assert_eq!((l1.ebx >> 16) & 0xff, u32::from(count));
            assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
            assert_ne!(l1.ecx & ECX_HYPERVISOR, 0, "hypervisor bit");
            assert_eq!(l1.ecx & (1 << 5), 0, "no VMX");
            assert_eq!(l1.ecx & (1 << 3), 0, "no MONITOR");
            assert_eq!(l1.edx & EDX_HTT != 0, count > 1);
            for f in [0xb, 0x1f] {
                let smt = find(&e, f, 0);
                let core = find(&e, f, 1);
                let end = find(&e, f, 2);
                assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8), (0, 1, 1));
                assert_eq!(core.ebx, u32::from(count));
                assert_eq!(core.ecx, (2 << 8) | 1);
                assert!(
                    1u32 << core.eax >= u32::from(count),
                    "shift covers all APIC ids"
                );
                assert_eq!(
                    (end.ebx, (end.ecx >> 8) & 0xff),
                    (0, 0),
                    "invalid level ends the list"
                );
                assert!([smt.edx, core.edx, end.edx]
                    .iter()
                    .all(|&x| x == u32::from(index)));
                assert_eq!(e.iter().filter(|x| x.function == f).count(), 3);
            }
            assert_eq!(find(&e, 4, 0).eax >> 26, u32::from(count) - 1);
            assert_eq!((find(&e, 4, 0).eax >> 14) & 0xfff, 0, "L1 private");
            assert_eq!(
                (find(&e, 4, 3).eax >> 14) & 0xfff,
                u32::from(count) - 1,
                "L3 shared"
            );
            assert_eq!(find(&e, 0xa, 0).eax, 0, "no PMU");
        }
    }

    #[test]
    fn real_kvm_cpuid_has_hypervisor_bit_and_apic_id() {
        let kvm = Kvm::new().unwrap();
        let c = cpuid_for(&kvm, 2, 3).unwrap();
        let l1 = find(c.as_slice(), 1, 0);
        assert_eq!(l1.ebx >> 24, 2);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert!(
            c.as_slice().iter().any(|x| x.function == 0x4000_0000),
            "KVM signature leaf kept"
        );
    }
}
