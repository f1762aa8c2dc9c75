/*
 * PVH entry for the HCR test unikernel.
 *
 * QEMU (and Xen, Firecracker) start a PVH kernel in 32-bit protected mode
 * with paging off, flat segments, and %ebx holding the physical address of
 * struct hvm_start_info. The loader finds the entry point through a Xen ELF
 * note of type XEN_ELFNOTE_PHYS32_ENTRY (18) in a PT_NOTE segment.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.pvh, "a"
	.p2align 2
	.long 4                         /* namesz: "Xen\0" */
	.long 4                         /* descsz: a 32-bit entry address */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.p2align 2
	.long pvh_start

	.text
	.code32
	.globl pvh_start
pvh_start:
	cli
	movl $stack_top, %esp
	xorl %ebp, %ebp
	pushl %ebx                      /* struct hvm_start_info * */
	call hello_main
	/* hello_main only returns when it could not make QEMU exit. */
halt:
	hlt
	jmp halt

	.bss
	.p2align 4
stack:
	.skip 16384
stack_top:
