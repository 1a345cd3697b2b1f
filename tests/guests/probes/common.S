/* Shared probe routines, assembled into both the 64-bit and the 32-bit (PVH)
 * probes: only instructions valid in both modes with 32-bit operands, no
 * push/pop. Output goes to COM1 (0x3f8) as "KEY hexbytes\n" lines that
 * tests/tests/linux_boot_probe.rs parses. Registers: routines clobber eax,
 * ecx, edx, esi, edi; ebp and ebx are left alone for the callers. */

    .text
/* putc: al -> serial */
putc:
    mov $0x3f8, %dx
    out %al, %dx
    ret

/* nibble: low nibble of al as a hex digit */
nibble:
    and $0xf, %al
    cmp $10, %al
    jb 1f
    add $('a' - '0' - 10), %al
1:  add $'0', %al
    jmp putc

/* puthex8: al as two hex digits (clobbers cl) */
puthex8:
    mov %al, %cl
    shr $4, %al
    call nibble
    mov %cl, %al
    jmp nibble

/* puts: NUL-terminated string at esi */
puts:
1:  mov (%esi), %al
    test %al, %al
    jz 2f
    call putc
    inc %esi
    jmp 1b
2:  ret

/* hexdump: edi bytes at esi, as hex */
hexdump:
    test %edi, %edi
    jz 2f
1:  mov (%esi), %al
    call puthex8
    inc %esi
    dec %edi
    jnz 1b
2:  ret

/* strlen: esi -> edi (at most 4096) */
strlen:
    xor %edi, %edi
1:  cmpb $0, (%esi,%edi)
    je 2f
    inc %edi
    cmp $4096, %edi
    jb 1b
2:  ret

/* sum8: al = sum of edi bytes at esi (edi > 0) */
sum8:
    xor %eax, %eax
1:  add (%esi), %al
    inc %esi
    dec %edi
    jnz 1b
    ret

/* dump KEY, addr, len: one "KEY hex\n" line. addr/len are operands
 * (register, memory or $immediate) not based on esi. */
.macro dump key:req, addr:req, len:req
    .pushsection .rodata
.Lkey\@: .asciz "\key "
    .popsection
    mov \len, %edi
    mov $.Lkey\@, %esi
    call puts
    mov \addr, %esi
    call hexdump
    mov $'\n', %al
    call putc
.endm

/* save_efer_and_segments: EFER, CS, DS, SS into scratch+36..+52 (the
 * REGS record both probes print). No stack use: valid before a stack exists. */
.macro save_efer_and_segments
    mov $0xc0000080, %ecx
    rdmsr
    mov %eax, scratch + 36
    mov %cs, %eax
    mov %eax, scratch + 40
    mov %ds, %eax
    mov %eax, scratch + 44
    mov %ss, %eax
    mov %eax, scratch + 48
.endm

/* cpuid_dump LEAF, SUBLEAF: "CPUID.LEAF.SUBLEAF eax ebx ecx edx" (LE bytes).
 * Clobbers ebx: callers keep their pointers in ebp. */
.macro cpuid_dump leaf:req, sub:req
    mov $\leaf, %eax
    mov $\sub, %ecx
    cpuid
    mov %eax, scratch
    mov %ebx, scratch + 4
    mov %ecx, scratch + 8
    mov %edx, scratch + 12
    dump "CPUID.\leaf\().\sub", $scratch, $16
.endm

/* dump_mp: find the MP floating pointer in the EBDA's first KiB (where Linux
 * scans), dump it and the configuration table, and both checksums. */
dump_mp:
    mov $0x9fc00, %esi
1:  cmpl $0x5f504d5f, (%esi)        /* "_MP_" */
    je 2f
    add $16, %esi
    cmp $0xa0000, %esi
    jb 1b
    dump "NOMP", $scratch, $0
    ret
2:  mov %esi, mpf_ptr
    mov 4(%esi), %eax
    mov %eax, mpc_ptr
    movzwl 4(%eax), %eax
    mov %eax, mpc_len
    dump "MPF", mpf_ptr, $16
    dump "MPC", mpc_ptr, mpc_len
    mov mpf_ptr, %esi
    mov $16, %edi
    call sum8
    mov %al, scratch
    mov mpc_ptr, %esi
    mov mpc_len, %edi
    call sum8
    mov %al, scratch + 1
    dump "MPSUM", $scratch, $2
    ret

/* The CPUID leaves every probe reports. */
dump_cpuid:
    cpuid_dump 0x0, 0x0
    cpuid_dump 0x1, 0x0
    cpuid_dump 0x4, 0x0
    cpuid_dump 0xb, 0x0
    cpuid_dump 0xb, 0x1
    cpuid_dump 0xb, 0x2
    cpuid_dump 0x1f, 0x1
    cpuid_dump 0x40000000, 0x0
    ret

/* finish: "END", then reset through the i8042 (out 0x64, 0xfe); if that
 * returns, exit through isa-debug-exit, then halt forever. */
finish:
    dump "END", $scratch, $0
    mov $0xfe, %al
    out %al, $0x64
    xor %eax, %eax
    out %al, $0xf4
1:  hlt
    jmp 1b

    .bss
    .balign 16
scratch: .skip 64
mpf_ptr: .long 0
mpc_ptr: .long 0
mpc_len: .long 0
    .text
