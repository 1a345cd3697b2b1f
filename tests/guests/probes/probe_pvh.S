/* Probe for the PVH entry: 32-bit protected mode, paging off, ebx =
 * hvm_start_info. Reports the entry registers, the start info, its memory
 * map, module list and command line, the MP table and CPUID. */
    .code32
    .include "common.S"

    .text
    .globl _start
_start:
    mov %ebx, %ebp                  /* hvm_start_info */
    mov %ebx, scratch + 16
    mov %esp, scratch + 20
    mov %cr0, %eax
    mov %eax, scratch + 24
    mov %cr3, %eax
    mov %eax, scratch + 28
    mov %cr4, %eax
    mov %eax, scratch + 32
    save_efer_and_segments
    /* PVH gives no stack: use our own from here on. */
    mov $stack_top, %esp
    pushf
    pop %eax
    mov %eax, scratch + 52
    dump "REGS", $scratch + 16, $40

    dump "PVH", %ebp, $56
    mov 0x30(%ebp), %eax            /* memmap_entries */
    imul $24, %eax, %edi
    dump "MEMMAP", 0x28(%ebp), %edi
    mov 0x0c(%ebp), %eax            /* nr_modules */
    shl $5, %eax
    mov %eax, %edi
    dump "MODLIST", 0x10(%ebp), %edi
    mov 0x18(%ebp), %esi            /* cmdline_paddr */
    call strlen
    dump "CMDLINE", 0x18(%ebp), %edi

    call dump_mp
    call dump_cpuid
    jmp finish


    .bss
    .balign 16
    .skip 4096
stack_top:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18                  /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start
