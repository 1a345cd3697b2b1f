/* Probe for the Linux 64-bit boot protocol: entered in long mode at CPL0 with
 * rsi = zero page. Reports the entry registers, the zero page up to the end
 * of its e820 table, the command line it points at, the MP table and CPUID.
 * Built as an ELF vmlinux (probe.ld) and as a bzImage (probe_bz.ld). */
    .code64
    .include "common.S"

    /* First in the image: a bzImage build (probe_bz.ld) needs the 64-bit
     * entry at the start of its protected-mode code + 0x200. */
    .section .text.start, "ax"
    .globl _start
_start:
    mov %esi, %ebp                  /* zero page */
    mov %esi, scratch + 16          /* entry rsi (low half) */
    mov %rsp, %rax
    mov %eax, scratch + 20
    mov %cr0, %rax
    mov %eax, scratch + 24
    mov %cr3, %rax
    mov %eax, scratch + 28
    mov %cr4, %rax
    mov %eax, scratch + 32
    save_efer_and_segments
    pushfq
    pop %rax
    mov %eax, scratch + 52
    dump "REGS", $scratch + 16, $40

    movzbl 0x1e8(%ebp), %eax        /* e820_entries */
    imul $20, %eax, %eax
    add $0x2d0, %eax
    mov %eax, %edi
    dump "ZP", %ebp, %edi

    mov 0x228(%ebp), %esi           /* cmd_line_ptr */
    call strlen
    dump "CMDLINE", 0x228(%ebp), %edi

    call dump_mp
    call dump_cpuid
    jmp finish

