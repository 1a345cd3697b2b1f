/* The benchmark's null guest, a PVH ELF runnable by ember-vmm and QEMU:
 * write 123 to the boot-timer MMIO byte, reset through the i8042, and if
 * the reset is ignored (QEMU microvm has no i8042), exit through
 * isa-debug-exit with 0x31, which QEMU turns into exit status 0x63 = 99:
 * proof that the guest ran to the end. */
    .code32
    .text
    .globl _start
_start:
    movb $123, 0xc0000000
    mov $0xfe, %al
    out %al, $0x64
    mov $0x31, %al
    out %al, $0xf4
1:  hlt
    jmp 1b

    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18
    .asciz "Xen"
    .balign 4
    .long _start
