import { execFile } from 'node:child_process';
import { close, constants, open } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CriLogWriter, errors, type LogStream } from '@hcr/core';

const execFileP = promisify(execFile);
const openP = promisify(open);
const closeP = promisify(close);

/** The two FIFOs a container writes its output into, in its engine directory. */
export function fifoPaths(dir: string): Record<LogStream, string> {
  return { stdout: join(dir, 'stdout.fifo'), stderr: join(dir, 'stderr.fifo') };
}

/** Creates the container's stdout/stderr FIFOs (idempotent). Node has no mkfifo, so coreutils' does it. */
export async function makeFifos(dir: string): Promise<void> {
  for (const path of Object.values(fifoPaths(dir))) {
    const st = await stat(path).catch(() => null);
    if (st?.isFIFO() === true) continue;
    await execFileP('mkfifo', ['-m', '0600', path]).catch((e: unknown) => {
      throw errors.internal(`cannot create log FIFO ${path}: ${e instanceof Error ? e.message : String(e)}`, e);
    });
  }
}

/**
 * Opens the write side of the FIFOs for `runsc start` to hand to the container.
 *
 * They are opened read-write on purpose: a FIFO writer whose reader is gone
 * gets EPIPE, so a container would lose its output (or die of SIGPIPE) every
 * time HCR restarts. A read-write descriptor counts as a reader too, so while
 * HCR is away the container's writes only wait once the pipe buffer is full,
 * and a restarted engine reads on from where the last one stopped. The caller
 * closes the returned descriptors once runsc has them. (libuv opens every file
 * close-on-exec, so no other child process inherits a writer, which would keep
 * the log from ever reaching end-of-file.)
 */
export async function openFifoWriters(dir: string): Promise<Record<LogStream, number>> {
  const paths = fifoPaths(dir);
  const stdout = await openP(paths.stdout, constants.O_RDWR);
  try {
    const stderr = await openP(paths.stderr, constants.O_RDWR);
    return { stdout, stderr };
  } catch (e) {
    await closeP(stdout);
    throw e;
  }
}

/** Closes descriptors from {@link openFifoWriters}. */
export async function closeFds(fds: Record<LogStream, number>): Promise<void> {
  await Promise.all([closeP(fds.stdout), closeP(fds.stderr)]);
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

  private constructor(logPath: string, fds: Record<LogStream, number>) {
    this.writer = logPath === '' ? null : new CriLogWriter(logPath);
    const ends: Promise<void>[] = [];
    for (const stream of ['stdout', 'stderr'] as const) {
      const socket = new Socket({ fd: fds[stream], readable: true, writable: false });
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
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    const flags = constants.O_RDONLY | constants.O_NONBLOCK;
    const stdout = await openP(paths.stdout, flags);
    let stderr: number;
    try {
      stderr = await openP(paths.stderr, flags);
    } catch (e) {
      await closeP(stdout);
      throw e;
    }
    return new LogPump(logPath, { stdout, stderr });
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
