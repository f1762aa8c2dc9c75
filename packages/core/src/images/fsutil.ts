/** Crash-safe file writes and small host helpers for the image store. */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { errors } from '../errors.js';

/** fsyncs a directory so that a rename or create inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A temp name next to `path`, on the same filesystem so that rename is atomic. */
export function tempSibling(path: string): string {
  return join(dirname(path), `.tmp-${basename(path)}-${randomBytes(6).toString('hex')}`);
}

/**
 * Writes `data` to `path` so that a reader (or a restart after a crash) sees
 * either the old file or the whole new one: temp file, fsync, rename, fsync dir.
 */
export async function atomicWriteFile(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = tempSibling(path);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(path));
}

/** True when `e` is a Node system error with the given `code` (ENOENT, EEXIST, …). */
export function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}

/**
 * Runs `file` with an argv array (never a shell) and resolves with its stdout;
 * fails Internal with the command's stderr, or Unavailable when the tool is
 * not installed.
 */
export function run(file: string, args: readonly string[], options: { cwd?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd: options.cwd, encoding: 'utf8', maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error === null) {
        resolve(stdout);
        return;
      }
      const cmd = [file, ...args].join(' ');
      if (isErrno(error, 'ENOENT')) {
        reject(errors.unavailable(`${file} not found: install it to run "${cmd}"`, error));
        return;
      }
      reject(errors.internal(`"${cmd}" failed: ${(stderr || error.message).trim()}`, error));
    });
  });
}
