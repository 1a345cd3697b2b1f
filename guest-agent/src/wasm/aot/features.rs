//! x86-64 CPU features as compiled code depends on them: the names wasmtime
//! asks its `detect_host_feature` hook about, the cranelift flag of each, and
//! a bitmask of them (the artefact header's `features`, part of the cache
//! key). The guest detects its own set with CPUID and XGETBV (AVX counts only
//! when the OS — here the VMM — enabled its state in XCR0).

/// One feature: (wasmtime's name, cranelift's flag).
pub const FEATURES: &[(&str, &str)] = &[
    ("sse3", "has_sse3"),
    ("ssse3", "has_ssse3"),
    ("sse4.1", "has_sse41"),
    ("sse4.2", "has_sse42"),
    ("popcnt", "has_popcnt"),
    ("cmpxchg16b", "has_cmpxchg16b"),
    ("avx", "has_avx"),
    ("avx2", "has_avx2"),
    ("fma", "has_fma"),
    ("bmi1", "has_bmi1"),
    ("bmi2", "has_bmi2"),
    ("lzcnt", "has_lzcnt"),
    ("avx512f", "has_avx512f"),
    ("avx512dq", "has_avx512dq"),
    ("avx512vl", "has_avx512vl"),
    ("avx512bitalg", "has_avx512bitalg"),
    ("avx512vbmi", "has_avx512vbmi"),
    ("avx512vnni", "has_avx512vnni"),
    ("avxvnni", "has_avx_vnni"),
];

/// The bit of feature `name` in a feature mask.
pub fn bit(name: &str) -> Option<u64> {
    FEATURES
        .iter()
        .position(|(n, _)| *n == name)
        .map(|i| 1u64 << i)
}

/// The names in `mask`, comma-separated (for messages).
pub fn names(mask: u64) -> alloc::string::String {
    let mut out = alloc::string::String::new();
    for (i, (n, _)) in FEATURES.iter().enumerate() {
        if mask & (1 << i) != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(n);
        }
    }
    out
}

/// The raw CPUID registers feature detection reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    /// Leaf 1: ECX.
    pub l1_ecx: u32,
    /// Leaf 7.0: EBX, ECX.
    pub l7_ebx: u32,
    pub l7_ecx: u32,
    /// Leaf 7.1: EAX.
    pub l7s1_eax: u32,
    /// Leaf 0x80000001: ECX.
    pub ext_ecx: u32,
    /// XCR0 (0 when CR4.OSXSAVE is off).
    pub xcr0: u64,
}

/// The feature mask these CPUID values describe.
pub fn mask_of(c: &Cpuid) -> u64 {
    let b = |r: u32, n: u32| r & (1 << n) != 0;
    let osxsave = b(c.l1_ecx, 27);
    let avx_state = osxsave && c.xcr0 & 0x6 == 0x6;
    let avx512_state = avx_state && c.xcr0 & 0xe0 == 0xe0;
    let avx = avx_state && b(c.l1_ecx, 28);
    let avx512f = avx512_state && b(c.l7_ebx, 16);
    let have = [
        ("sse3", b(c.l1_ecx, 0)),
        ("ssse3", b(c.l1_ecx, 9)),
        ("sse4.1", b(c.l1_ecx, 19)),
        ("sse4.2", b(c.l1_ecx, 20)),
        ("popcnt", b(c.l1_ecx, 23)),
        ("cmpxchg16b", b(c.l1_ecx, 13)),
        ("avx", avx),
        ("avx2", avx && b(c.l7_ebx, 5)),
        ("fma", avx && b(c.l1_ecx, 12)),
        ("bmi1", b(c.l7_ebx, 3)),
        ("bmi2", b(c.l7_ebx, 8)),
        ("lzcnt", b(c.ext_ecx, 5)),
        ("avx512f", avx512f),
        ("avx512dq", avx512f && b(c.l7_ebx, 17)),
        ("avx512vl", avx512f && b(c.l7_ebx, 31)),
        ("avx512bitalg", avx512f && b(c.l7_ecx, 12)),
        ("avx512vbmi", avx512f && b(c.l7_ecx, 1)),
        ("avx512vnni", avx512f && b(c.l7_ecx, 11)),
        ("avxvnni", avx && b(c.l7s1_eax, 4)),
    ];
    have.iter()
        .filter(|(_, on)| *on)
        .filter_map(|(n, _)| bit(n))
        .fold(0, |m, b| m | b)
}

/// Reads CPUID (and XCR0) on this CPU. Each CPUID is a VM exit in a guest:
/// callers cache the result ([`detected`]).
#[cfg(target_arch = "x86_64")]
pub fn read_cpuid() -> Cpuid {
    use core::arch::x86_64::__cpuid_count;
    // SAFETY: CPUID exists on every x86-64 CPU and has no memory effects.
    #[allow(unused_unsafe)]
    let q = |leaf: u32, sub: u32| unsafe { __cpuid_count(leaf, sub) };
    let max = q(0, 0).eax;
    let max_ext = q(0x8000_0000, 0).eax;
    let l1 = q(1, 0);
    let (l7, l7s1) = if max >= 7 {
        (q(7, 0), q(7, 1))
    } else {
        (q(0, 0), q(0, 0))
    };
    let ext_ecx = if max_ext >= 0x8000_0001 {
        q(0x8000_0001, 0).ecx
    } else {
        0
    };
    let xcr0 = if l1.ecx & (1 << 27) != 0 {
        let (lo, hi): (u32, u32);
        // SAFETY: CR4.OSXSAVE is set (CPUID.1:ECX.OSXSAVE), so XGETBV with
        // ECX = 0 is allowed at any privilege level; no memory effects.
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags))
        };
        u64::from(lo) | (u64::from(hi) << 32)
    } else {
        0
    };
    let keep = |v: u32, ok: bool| if ok { v } else { 0 };
    Cpuid {
        l1_ecx: l1.ecx,
        l7_ebx: keep(l7.ebx, max >= 7),
        l7_ecx: keep(l7.ecx, max >= 7),
        l7s1_eax: keep(l7s1.eax, max >= 7),
        ext_ecx,
        xcr0,
    }
}

/// This CPU's feature mask, read once.
#[cfg(target_arch = "x86_64")]
pub fn detected() -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    const UNKNOWN: u64 = u64::MAX;
    static MASK: AtomicU64 = AtomicU64::new(UNKNOWN);
    let m = MASK.load(Ordering::Relaxed);
    if m != UNKNOWN {
        return m;
    }
    let m = mask_of(&read_cpuid());
    MASK.store(m, Ordering::Relaxed);
    m
}

/// wasmtime's `detect_host_feature` hook over [`detected`]: `Some` for the
/// features this module knows, `None` for others.
#[cfg(target_arch = "x86_64")]
pub fn detect(name: &str) -> Option<bool> {
    bit(name).map(|b| detected() & b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx_needs_its_state_enabled_in_xcr0() {
        let mut c = Cpuid {
            l1_ecx: (1 << 28) | (1 << 27) | (1 << 12) | 1,
            l7_ebx: 1 << 5,
            ..Default::default()
        };
        assert_eq!(mask_of(&c), bit("sse3").unwrap());
        c.xcr0 = 0x7;
        let m = mask_of(&c);
        for f in ["avx", "avx2", "fma", "sse3"] {
            assert_ne!(m & bit(f).unwrap(), 0, "{f}");
        }
        assert_eq!(names(m), "sse3,avx,avx2,fma");
    }

    #[test]
    fn this_cpu_agrees_with_std_detection() {
        let m = detected();
        for (n, _) in FEATURES {
            let std_says = match *n {
                "sse4.1" => std::is_x86_feature_detected!("sse4.1"),
                "avx" => std::is_x86_feature_detected!("avx"),
                "avx2" => std::is_x86_feature_detected!("avx2"),
                "popcnt" => std::is_x86_feature_detected!("popcnt"),
                "lzcnt" => std::is_x86_feature_detected!("lzcnt"),
                "bmi2" => std::is_x86_feature_detected!("bmi2"),
                _ => continue,
            };
            assert_eq!(m & bit(n).unwrap() != 0, std_says, "{n}");
        }
    }
}
