//! Test guest: reports the CPU features it sees (the mask the wasm agent
//! announces) and, with `avx SEED ROUNDS`, checks that its AVX registers
//! survive VM exits: it loads all 16 YMM registers with a pattern drawn from
//! SEED, then ROUNDS times sleeps on `PORT_SLEEP` (the vCPU thread blocks and
//! other VMs run on that host CPU) and compares every register with the
//! pattern. Exit 0: intact; 1: a register changed (another context's state
//! leaked in, or this one's was lost); 3: no AVX in this guest; 2: bad args.
#![no_std]
#![no_main]

use ember_guest::wasm::aot::features;
use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

/// Microseconds each round sleeps.
const SLEEP_US: u32 = 50;

fn main(info: &'static StartInfo) -> i32 {
    let mask = features::detected();
    println!(
        "cpu_state: features={mask:#x} [{}] from {:x?}",
        features::names(mask),
        features::read_cpuid()
    );
    let mut args = info.args().split_whitespace();
    match args.next() {
        None => 0,
        Some(mode @ ("avx" | "avx512")) => {
            let (Some(seed), Some(rounds)) = (
                args.next().and_then(|s| s.parse::<u64>().ok()),
                args.next().and_then(|s| s.parse::<u64>().ok()),
            ) else {
                println!("cpu_state: usage: {mode} SEED ROUNDS");
                return 2;
            };
            let need = if mode == "avx" { "avx" } else { "avx512f" };
            if mask & features::bit(need).unwrap_or(0) == 0 {
                println!("cpu_state: no {need}");
                return 3;
            }
            let check = if mode == "avx" { ymm_survive } else { zmm_survive };
            match check(seed, rounds.max(1)) {
                0 => {
                    println!("cpu_state: {mode} registers intact after {rounds} exits");
                    0
                }
                round => {
                    println!("cpu_state: {mode} registers changed, {round} rounds before the end");
                    1
                }
            }
        }
        Some(other) => {
            println!("cpu_state: unknown mode {other:?}");
            2
        }
    }
}

/// Vector registers' worth of pattern: 32 ZMM registers (2 KiB), of which
/// the YMM check uses the first 512 bytes.
#[repr(C, align(64))]
struct Regs([u64; 256]);

impl Regs {
    /// Distinct per seed and per word, every word non-zero.
    fn pattern(seed: u64) -> Regs {
        let mut r = Regs([0; 256]);
        let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
        for w in r.0.iter_mut() {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *w = (z ^ (z >> 31)) | 1;
        }
        r
    }
}

/// Loads the pattern into ymm0..ymm15 and checks it after each of `rounds`
/// sleeps; 0 if it held, else the round (counted down from `rounds`) it
/// broke in.
fn ymm_survive(seed: u64, rounds: u64) -> u64 {
    let pattern = Regs::pattern(seed);
    let mut seen = Regs([0; 256]);
    let mut left = rounds;
    // SAFETY: the block reads `pattern` and writes `seen` (2 KiB each,
    // 64-byte aligned, live for the block; it touches the first 512 bytes),
    // clobbers only the registers it names (xmm0-15 stand for ymm0-15), and
    // its port write is the ABI's PORT_SLEEP. The caller checked that AVX is
    // enabled (CPUID + XCR0).
    unsafe {
        core::arch::asm!(
            "vmovdqu ymm0, [{p} + 0]",
            "vmovdqu ymm1, [{p} + 32]",
            "vmovdqu ymm2, [{p} + 64]",
            "vmovdqu ymm3, [{p} + 96]",
            "vmovdqu ymm4, [{p} + 128]",
            "vmovdqu ymm5, [{p} + 160]",
            "vmovdqu ymm6, [{p} + 192]",
            "vmovdqu ymm7, [{p} + 224]",
            "vmovdqu ymm8, [{p} + 256]",
            "vmovdqu ymm9, [{p} + 288]",
            "vmovdqu ymm10, [{p} + 320]",
            "vmovdqu ymm11, [{p} + 352]",
            "vmovdqu ymm12, [{p} + 384]",
            "vmovdqu ymm13, [{p} + 416]",
            "vmovdqu ymm14, [{p} + 448]",
            "vmovdqu ymm15, [{p} + 480]",
            "2:",
            "mov dx, {port}",
            "mov eax, {us}",
            "out dx, eax",
            "vmovdqu [{s} + 0], ymm0",
            "vmovdqu [{s} + 32], ymm1",
            "vmovdqu [{s} + 64], ymm2",
            "vmovdqu [{s} + 96], ymm3",
            "vmovdqu [{s} + 128], ymm4",
            "vmovdqu [{s} + 160], ymm5",
            "vmovdqu [{s} + 192], ymm6",
            "vmovdqu [{s} + 224], ymm7",
            "vmovdqu [{s} + 256], ymm8",
            "vmovdqu [{s} + 288], ymm9",
            "vmovdqu [{s} + 320], ymm10",
            "vmovdqu [{s} + 352], ymm11",
            "vmovdqu [{s} + 384], ymm12",
            "vmovdqu [{s} + 416], ymm13",
            "vmovdqu [{s} + 448], ymm14",
            "vmovdqu [{s} + 480], ymm15",
            "mov rsi, {p}",
            "mov rdi, {s}",
            "mov ecx, 64",
            "cld",
            "repe cmpsq",
            "jne 3f",
            "dec {n}",
            "jnz 2b",
            "3:",
            "vzeroupper",
            p = in(reg) pattern.0.as_ptr(),
            s = in(reg) seen.0.as_mut_ptr(),
            n = inout(reg) left,
            port = const ember_abi::guest::PORT_SLEEP,
            us = const SLEEP_US,
            out("eax") _, out("edx") _, out("rsi") _, out("rdi") _, out("rcx") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
    left
}

/// [`ymm_survive`] for all 32 ZMM registers (AVX-512 state: the ZMM upper
/// halves and zmm16-31).
fn zmm_survive(seed: u64, rounds: u64) -> u64 {
    let pattern = Regs::pattern(seed);
    let mut seen = Regs([0; 256]);
    let mut left = rounds;
    // SAFETY: as in `ymm_survive`, over all 2 KiB; the caller checked that
    // AVX-512F is enabled (CPUID + XCR0).
    unsafe {
        core::arch::asm!(
            "vmovdqu64 zmm0, [{p} + 0]",
            "vmovdqu64 zmm1, [{p} + 64]",
            "vmovdqu64 zmm2, [{p} + 128]",
            "vmovdqu64 zmm3, [{p} + 192]",
            "vmovdqu64 zmm4, [{p} + 256]",
            "vmovdqu64 zmm5, [{p} + 320]",
            "vmovdqu64 zmm6, [{p} + 384]",
            "vmovdqu64 zmm7, [{p} + 448]",
            "vmovdqu64 zmm8, [{p} + 512]",
            "vmovdqu64 zmm9, [{p} + 576]",
            "vmovdqu64 zmm10, [{p} + 640]",
            "vmovdqu64 zmm11, [{p} + 704]",
            "vmovdqu64 zmm12, [{p} + 768]",
            "vmovdqu64 zmm13, [{p} + 832]",
            "vmovdqu64 zmm14, [{p} + 896]",
            "vmovdqu64 zmm15, [{p} + 960]",
            "vmovdqu64 zmm16, [{p} + 1024]",
            "vmovdqu64 zmm17, [{p} + 1088]",
            "vmovdqu64 zmm18, [{p} + 1152]",
            "vmovdqu64 zmm19, [{p} + 1216]",
            "vmovdqu64 zmm20, [{p} + 1280]",
            "vmovdqu64 zmm21, [{p} + 1344]",
            "vmovdqu64 zmm22, [{p} + 1408]",
            "vmovdqu64 zmm23, [{p} + 1472]",
            "vmovdqu64 zmm24, [{p} + 1536]",
            "vmovdqu64 zmm25, [{p} + 1600]",
            "vmovdqu64 zmm26, [{p} + 1664]",
            "vmovdqu64 zmm27, [{p} + 1728]",
            "vmovdqu64 zmm28, [{p} + 1792]",
            "vmovdqu64 zmm29, [{p} + 1856]",
            "vmovdqu64 zmm30, [{p} + 1920]",
            "vmovdqu64 zmm31, [{p} + 1984]",
            "2:",
            "mov dx, {port}",
            "mov eax, {us}",
            "out dx, eax",
            "vmovdqu64 [{s} + 0], zmm0",
            "vmovdqu64 [{s} + 64], zmm1",
            "vmovdqu64 [{s} + 128], zmm2",
            "vmovdqu64 [{s} + 192], zmm3",
            "vmovdqu64 [{s} + 256], zmm4",
            "vmovdqu64 [{s} + 320], zmm5",
            "vmovdqu64 [{s} + 384], zmm6",
            "vmovdqu64 [{s} + 448], zmm7",
            "vmovdqu64 [{s} + 512], zmm8",
            "vmovdqu64 [{s} + 576], zmm9",
            "vmovdqu64 [{s} + 640], zmm10",
            "vmovdqu64 [{s} + 704], zmm11",
            "vmovdqu64 [{s} + 768], zmm12",
            "vmovdqu64 [{s} + 832], zmm13",
            "vmovdqu64 [{s} + 896], zmm14",
            "vmovdqu64 [{s} + 960], zmm15",
            "vmovdqu64 [{s} + 1024], zmm16",
            "vmovdqu64 [{s} + 1088], zmm17",
            "vmovdqu64 [{s} + 1152], zmm18",
            "vmovdqu64 [{s} + 1216], zmm19",
            "vmovdqu64 [{s} + 1280], zmm20",
            "vmovdqu64 [{s} + 1344], zmm21",
            "vmovdqu64 [{s} + 1408], zmm22",
            "vmovdqu64 [{s} + 1472], zmm23",
            "vmovdqu64 [{s} + 1536], zmm24",
            "vmovdqu64 [{s} + 1600], zmm25",
            "vmovdqu64 [{s} + 1664], zmm26",
            "vmovdqu64 [{s} + 1728], zmm27",
            "vmovdqu64 [{s} + 1792], zmm28",
            "vmovdqu64 [{s} + 1856], zmm29",
            "vmovdqu64 [{s} + 1920], zmm30",
            "vmovdqu64 [{s} + 1984], zmm31",
            "mov rsi, {p}",
            "mov rdi, {s}",
            "mov ecx, 256",
            "cld",
            "repe cmpsq",
            "jne 3f",
            "dec {n}",
            "jnz 2b",
            "3:",
            "vzeroupper",
            p = in(reg) pattern.0.as_ptr(),
            s = in(reg) seen.0.as_mut_ptr(),
            n = inout(reg) left,
            port = const ember_abi::guest::PORT_SLEEP,
            us = const SLEEP_US,
            out("eax") _, out("edx") _, out("rsi") _, out("rdi") _, out("rcx") _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _, out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
        );
    }
    left
}
