import { execFile } from 'node:child_process';
import { close, constants, open } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import { promisify } from 'node:util';
import { errors } from '@hcr/core';

const execFileP = promisify(execFile);
const openP = promisify(open);

/**
 * Named pipes are how this engine hands output streams to runsc. Node's
 * own child-process pipes are socketpairs, and gVisor shuts an imported
 * socket down when it lets go of it — for every holder, so runsc could then
 * no longer even report its own errors on it. A FIFO is a real pipe.
 */

/** Creates a FIFO at `path` unless one is there. Node has no mkfifo, so coreutils' does it. */
export async function makeFifo(path: string): Promise<void> {
  const st = await stat(path).catch(() => null);
  if (st?.isFIFO() === true) return;
  await execFileP('mkfifo', ['-m', '0600', path]).catch((e: unknown) => {
    throw errors.internal(`cannot create FIFO ${path}: ${e instanceof Error ? e.message : String(e)}`, e);
  });
}

/**
 * Opens a FIFO for a child process to write to. Read-write on purpose: a
 * FIFO writer whose reader is gone gets EPIPE (and SIGPIPE), so a container
 * would lose its output, or die, each time HCR restarts; a read-write
 * descriptor counts as a reader too, so while HCR is away writes only wait
 * once the pipe buffer is full. libuv opens files close-on-exec, so no other
 * child inherits the descriptor (which would keep the reader from ever
 * seeing end-of-file).
 */
export function openFifoWriter(path: string): Promise<number> {
  return openP(path, constants.O_RDWR);
}

/**
 * Opens a FIFO for reading as a socket: non-blocking, so a quiet stream costs
 * no thread, and opening does not wait for a writer. Open the writer first,
 * or a reader may see end-of-file before any writer came.
 */
export async function openFifoReader(path: string): Promise<Socket> {
  const fd = await openP(path, constants.O_RDONLY | constants.O_NONBLOCK);
  return new Socket({ fd, readable: true, writable: false });
}

/** Closes a descriptor, ignoring one already closed. */
export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}
