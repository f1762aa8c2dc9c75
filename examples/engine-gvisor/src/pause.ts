import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { arch } from 'node:os';
import { join } from 'node:path';
import { errors } from '@hcr/core';

/**
 * The pod's first gVisor container only has to exist: it holds the sandbox
 * (runsc ends the sandbox when it ends). No registry is reachable to pull a
 * pause image, and a host binary would drag host libraries into the sandbox,
 * so the engine writes a tiny static program instead — it sleeps in pause(2)
 * forever and is stopped with SIGKILL.
 *
 * Layout: one ELF64 header, one PT_LOAD program header mapping the whole file
 * read+execute at {@link LOAD_ADDRESS}, then the code.
 */
const LOAD_ADDRESS = 0x400000n;
const ELF_HEADER_SIZE = 64;
const PROGRAM_HEADER_SIZE = 56;

/** x86-64: `loop: mov eax, 34 (SYS_pause); syscall; jmp loop`. */
const X86_64_CODE = Buffer.from([0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7]);
const EM_X86_64 = 0x3e;

/** The pause program for the host architecture; null where the engine has none (only x86-64 so far). */
export function pauseProgram(hostArch: string = arch()): Buffer | null {
  if (hostArch !== 'x64') return null;
  const code = X86_64_CODE;
  const size = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE + code.length;
  const elf = Buffer.alloc(size);
  // e_ident: magic, 64-bit, little-endian, ELF version 1, System V ABI.
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0);
  elf.writeUInt16LE(2, 16); // e_type: ET_EXEC
  elf.writeUInt16LE(EM_X86_64, 18); // e_machine
  elf.writeUInt32LE(1, 20); // e_version
  elf.writeBigUInt64LE(LOAD_ADDRESS + BigInt(ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE), 24); // e_entry
  elf.writeBigUInt64LE(BigInt(ELF_HEADER_SIZE), 32); // e_phoff
  elf.writeBigUInt64LE(0n, 40); // e_shoff: no sections
  elf.writeUInt32LE(0, 48); // e_flags
  elf.writeUInt16LE(ELF_HEADER_SIZE, 52); // e_ehsize
  elf.writeUInt16LE(PROGRAM_HEADER_SIZE, 54); // e_phentsize
  elf.writeUInt16LE(1, 56); // e_phnum
  // e_shentsize, e_shnum, e_shstrndx stay 0.
  const ph = ELF_HEADER_SIZE;
  elf.writeUInt32LE(1, ph); // p_type: PT_LOAD
  elf.writeUInt32LE(5, ph + 4); // p_flags: PF_R | PF_X
  elf.writeBigUInt64LE(0n, ph + 8); // p_offset
  elf.writeBigUInt64LE(LOAD_ADDRESS, ph + 16); // p_vaddr
  elf.writeBigUInt64LE(LOAD_ADDRESS, ph + 24); // p_paddr
  elf.writeBigUInt64LE(BigInt(size), ph + 32); // p_filesz
  elf.writeBigUInt64LE(BigInt(size), ph + 40); // p_memsz
  elf.writeBigUInt64LE(0x1000n, ph + 48); // p_align
  code.copy(elf, ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE);
  return elf;
}

/** Name of the program inside the pause root filesystem. */
export const PAUSE_PATH = '/pause';

/**
 * Writes the pause root filesystem (a directory holding only the program)
 * under `dir` and returns its path. The directory is shared read-only by every
 * sandbox, so it is replaced atomically and only when its content differs.
 */
export async function installPauseRootfs(dir: string): Promise<string> {
  const program = pauseProgram();
  if (program === null) {
    throw errors.failedPrecondition(
      `the gvisor engine has no pause program for ${arch()} (only x64); pods cannot be created on this host`,
    );
  }
  const rootfs = join(dir, 'rootfs');
  const target = join(rootfs, PAUSE_PATH);
  const current = await readFile(target).catch(() => null);
  if (current !== null && current.equals(program)) return rootfs;
  await mkdir(rootfs, { recursive: true, mode: 0o755 });
  const tmp = `${target}.${process.pid}.tmp`;
  await writeFile(tmp, program, { mode: 0o755 });
  await rename(tmp, target);
  return rootfs;
}
