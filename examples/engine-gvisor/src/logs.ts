import { join } from 'node:path';
import type { Socket } from 'node:net';
import { CriLogWriter, type LogStream } from '@hcr/core';
import { closeFd, makeFifo, openFifoReader, openFifoWriter } from './fifo.js';

/** The two FIFOs a container writes its output into, in its engine directory. */
export function fifoPaths(dir: string): Record<LogStream, string> {
  return { stdout: join(dir, 'stdout.fifo'), stderr: join(dir, 'stderr.fifo') };
}

/** Creates the container's stdout/stderr FIFOs (idempotent). */
export async function makeFifos(dir: string): Promise<void> {
  const paths = fifoPaths(dir);
  await makeFifo(paths.stdout);
  await makeFifo(paths.stderr);
}

/**
 * Opens the write side of the FIFOs for `runsc start` to hand to the
 * container (read-write, see {@link openFifoWriter}: the container survives an
 * HCR restart with its output intact). The caller closes them once runsc has them.
 */
export async function openFifoWriters(dir: string): Promise<Record<LogStream, number>> {
  const paths = fifoPaths(dir);
  const stdout = await openFifoWriter(paths.stdout);
  try {
    return { stdout, stderr: await openFifoWriter(paths.stderr) };
  } catch (e) {
    await closeFd(stdout);
    throw e;
  }
}

/** Closes descriptors from {@link openFifoWriters}. */
export async function closeFds(fds: Record<LogStream, number>): Promise<void> {
  await Promise.all([closeFd(fds.stdout), closeFd(fds.stderr)]);
}

/** How much of stderr the pump remembers, to explain a failed start. */
const STDERR_TAIL_BYTES = 4096;

/**
 * Copies one container's stdout and stderr from its FIFOs into its CRI log
 * file (or nowhere, when the container has no log path: the FIFOs must still
 * be drained or the container would block). The FIFOs are read through
 * non-blocking sockets, so a quiet container costs no thread. The copy ends
 * when every writer is gone, which happens when the container's processes
 * have exited.
 */
export class LogPump {
  private readonly writer: CriLogWriter | null;
  private readonly sockets: Socket[] = [];
  private readonly ended: Promise<void>;
  private stderrTail = Buffer.alloc(0);
  private closed = false;

  private constructor(logPath: string, readers: Record<LogStream, Socket>) {
    this.writer = logPath === '' ? null : new CriLogWriter(logPath);
    const ends: Promise<void>[] = [];
    for (const stream of ['stdout', 'stderr'] as const) {
      const socket = readers[stream];
      this.sockets.push(socket);
      socket.on('data', (chunk: Buffer) => this.write(stream, chunk));
      ends.push(
        new Promise<void>((resolve) => {
          socket.once('end', resolve);
          socket.once('close', () => resolve());
          socket.once('error', () => resolve());
        }),
      );
    }
    this.ended = Promise.all(ends).then(() => undefined);
  }

  /** Starts copying from the FIFOs in `dir` to `logPath` ('' = discard). */
  static async open(dir: string, logPath: string): Promise<LogPump> {
    const paths = fifoPaths(dir);
    const stdout = await openFifoReader(paths.stdout);
    let stderr: Socket | null = null;
    try {
      stderr = await openFifoReader(paths.stderr);
      return new LogPump(logPath, { stdout, stderr });
    } catch (e) {
      stdout.destroy();
      stderr?.destroy();
      throw e;
    }
  }

  /** Resolves true once both streams ended (all output is in the log), false after `timeoutMs`. */
  async drained(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.ended.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last bytes the container (or runsc on its behalf) wrote to stderr. */
  stderrText(): string {
    return this.stderrTail.toString('utf8');
  }

  /** Closes and reopens the log file, after the kubelet rotated it. */
  reopen(): void {
    this.writer?.reopen();
  }

  /** Stops copying and closes the log (flushing an unterminated last line as a partial record). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    this.writer?.close();
  }

  private write(stream: LogStream, chunk: Buffer): void {
    if (this.closed) return;
    if (stream === 'stderr') {
      const joined = Buffer.concat([this.stderrTail, chunk]);
      this.stderrTail = joined.subarray(Math.max(0, joined.length - STDERR_TAIL_BYTES));
    }
    this.writer?.write(stream, chunk);
  }
}
