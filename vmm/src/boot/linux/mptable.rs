//! The Intel MultiProcessor Specification 1.4 table (floating pointer +
//! configuration table) that tells Linux how many CPUs there are, their APIC
//! ids, the I/O APIC and how the ISA interrupts and LINT0/LINT1 are wired.
//! Linux finds it by scanning the EBDA for "_MP_" (`smp_scan_config`).

use super::layout::{APIC_ADDR, EBDA_START, IOAPIC_ADDR};

/// Most vCPUs the table (and ember) supports.
pub const MAX_VCPUS: u8 = 32;
/// I/O APIC pins described (one per ISA/legacy IRQ line).
pub const IOAPIC_PINS: u8 = 24;
/// MP spec revision 1.4.
const SPEC_REV: u8 = 4;
/// Local APIC version reported in processor entries (integrated APIC).
const APIC_VERSION: u8 = 0x14;
/// I/O APIC version (82093AA-compatible, as KVM's in-kernel IOAPIC).
const IOAPIC_VERSION: u8 = 0x11;
/// Size of the floating pointer structure.
pub const MPF_SIZE: usize = 16;
/// Size of the configuration table header.
pub const MPC_HEADER_SIZE: usize = 44;

/// The whole table, ready to be written at [`EBDA_START`].
pub fn build(vcpu_count: u8) -> Vec<u8> {
    let count = vcpu_count.clamp(1, MAX_VCPUS);
    let ioapic_id = count + 1;
    let mut entries = Vec::new();
    let mut n_entries: u16 = 0;

    for id in 0..count {
        // Processor entry (type 0): enabled, BSP flag on vCPU 0.
        let flags = if id == 0 { 0b11 } else { 0b01 };
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU | APIC
        entries.extend_from_slice(&[0; 8]);
        n_entries += 1;
    }
    // Bus entry (type 1): bus 0 is ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    n_entries += 1;
    // I/O APIC entry (type 2): enabled.
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    n_entries += 1;
    // I/O interrupt entries (type 3): ISA IRQ i -> I/O APIC pin i, conforming polarity/trigger.
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, 0 /* INT */, 0, 0, 0, irq, ioapic_id, irq]);
        n_entries += 1;
    }
    // Local interrupt entries (type 4): ExtINT -> LINT0 of every APIC, NMI -> LINT1.
    entries.extend_from_slice(&[4, 3 /* ExtINT */, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1 /* NMI */, 0, 0, 0, 0, 0xff, 1]);
    n_entries += 2;

    let table_len = MPC_HEADER_SIZE + entries.len();
    let mut mpc = Vec::with_capacity(table_len);
    mpc.extend_from_slice(b"PCMP");
    mpc.extend_from_slice(&(table_len as u16).to_le_bytes());
    mpc.push(SPEC_REV);
    mpc.push(0); // checksum, below
    mpc.extend_from_slice(b"EMBER   "); // OEM id, 8 bytes
    mpc.extend_from_slice(b"EMBER-VMM   "); // product id, 12 bytes
    mpc.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    mpc.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    mpc.extend_from_slice(&n_entries.to_le_bytes());
    mpc.extend_from_slice(&APIC_ADDR.to_le_bytes());
    mpc.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    mpc.push(0); // extended table checksum (no extended entries)
    mpc.push(0); // reserved
    debug_assert_eq!(mpc.len(), MPC_HEADER_SIZE);
    mpc.extend_from_slice(&entries);
    mpc[7] = checksum_byte(&mpc);

    let mut mpf = Vec::with_capacity(MPF_SIZE + table_len);
    mpf.extend_from_slice(b"_MP_");
    mpf.extend_from_slice(&((EBDA_START as u32) + MPF_SIZE as u32).to_le_bytes());
    mpf.push(1); // length in 16-byte units
    mpf.push(SPEC_REV);
    mpf.push(0); // checksum, below
    mpf.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    mpf[10] = checksum_byte(&mpf);
    mpf.extend_from_slice(&mpc);
    mpf
}

/// The byte that makes `bytes` sum to zero (mod 256) once stored.
fn checksum_byte(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    0u8.wrapping_sub(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_header_fields() {
        for n in [1u8, 2, 7, 32] {
            let t = build(n);
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            let phys = u32::from_le_bytes(t[4..8].try_into().unwrap());
            assert_eq!(phys as u64, EBDA_START + 16);
            let mpc = &t[16..];
            assert_eq!(&mpc[..4], b"PCMP");
            let len = u16::from_le_bytes([mpc[4], mpc[5]]) as usize;
            assert_eq!(len, mpc.len());
            assert_eq!(sum(&mpc[..len]), 0, "configuration table checksum");
            assert_eq!(mpc[6], 4);
            let count = u16::from_le_bytes([mpc[34], mpc[35]]) as usize;
            assert_eq!(count, n as usize + 1 + 1 + 24 + 2);
            assert_eq!(
                u32::from_le_bytes(mpc[36..40].try_into().unwrap()),
                0xfee0_0000
            );
            assert!(t.len() <= 1024, "fits the 1 KiB EBDA");
        }
    }

    #[test]
    fn processors_bus_ioapic_and_interrupts() {
        let t = build(4);
        let mut p = 16 + MPC_HEADER_SIZE;
        let mut cpus = Vec::new();
        let (mut buses, mut ioapics, mut ints, mut lints) = (0, 0, 0, Vec::new());
        while p < t.len() {
            match t[p] {
                0 => {
                    cpus.push((t[p + 1], t[p + 3]));
                    p += 20;
                }
                1 => {
                    assert_eq!(&t[p + 2..p + 8], b"ISA   ");
                    buses += 1;
                    p += 8;
                }
                2 => {
                    assert_eq!(t[p + 1], 5, "I/O APIC id after the CPUs");
                    assert_eq!(t[p + 3], 1, "enabled");
                    assert_eq!(
                        u32::from_le_bytes(t[p + 4..p + 8].try_into().unwrap()),
                        0xfec0_0000
                    );
                    ioapics += 1;
                    p += 8;
                }
                3 => {
                    assert_eq!(t[p + 5], t[p + 7], "ISA irq n on pin n");
                    assert_eq!(t[p + 6], 5);
                    ints += 1;
                    p += 8;
                }
                4 => {
                    lints.push((t[p + 1], t[p + 7]));
                    p += 8;
                }
                other => panic!("unknown entry type {other}"),
            }
        }
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1), (3, 1)]);
        assert_eq!((buses, ioapics, ints), (1, 1, 24));
        assert_eq!(lints, vec![(3, 0), (1, 1)], "ExtINT on LINT0, NMI on LINT1");
    }

    #[test]
    fn vcpu_count_is_clamped() {
        assert_eq!(build(0).len(), build(1).len());
        assert_eq!(build(200).len(), build(32).len());
    }
}
