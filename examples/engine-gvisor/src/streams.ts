import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Writable, type Duplex, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { errors, type ExecSyncResult } from '@hcr/core';
import { closeFd, makeFifo, openFifoReader, openFifoWriter } from './fifo.js';
import type { OciProcess } from './oci.js';
import { runscMessage, type Runsc } from './runsc.js';

/** The streams of one exec; null streams are not connected. */
export interface ExecStreams {
  readonly stdin: Readable | null;
  readonly stdout: Writable | null;
  readonly stderr: Writable | null;
}

/** Options of {@link runExec}. */
export interface ExecOptions {
  /** Directory for the exec's pid file (the container's engine directory). */
  readonly dir: string;
  /**
   * The container's own process (from its bundle): an exec runs as the same
   * user, with the same environment, working directory and capabilities, as
   * `docker exec` and containerd do. Plain `runsc exec` would run as root.
   */
  readonly process: OciProcess;
  /** Aborting kills the exec'd process inside the sandbox and rejects with DeadlineExceeded. */
  readonly signal?: AbortSignal;
  readonly timeoutMessage?: string;
}

/** How long to wait for output after the exec'd process ended (a background child may still hold it). */
const OUTPUT_GRACE_MS = 2_000;

/**
 * Runs `cmd` in a running container with `runsc exec`, which hands its own
 * stdio to the new process and exits with that process's status. runsc
 * also exits 128 when it cannot start the process at all, so the engine asks
 * for `--internal-pid-file`: the file exists exactly when the process
 * started, which tells an application's 128 from runsc's failure. That pid
 * is also what a timeout kills. stderr goes through a FIFO (see fifo.ts), so
 * that runsc's own error message survives a failed start.
 */
export async function runExec(
  runsc: Runsc,
  containerId: string,
  cmd: readonly string[],
  io: ExecStreams,
  opts: ExecOptions,
): Promise<number> {
  if (cmd.length === 0) throw errors.invalidArgument('exec needs a command', 'cmd');
  const base = join(opts.dir, `exec-${randomBytes(6).toString('hex')}`);
  const pidFile = `${base}.pid`;
  const stderrFifo = `${base}.stderr`;
  const processFile = `${base}.process.json`;
  await writeFile(processFile, JSON.stringify({ ...opts.process, terminal: false, args: cmd }), { mode: 0o600 });
  await makeFifo(stderrFifo);
  const writer = await openFifoWriter(stderrFifo);
  let stderr: Socket;
  let child: ChildProcessByStdio<Writable, Readable, null>;
  try {
    stderr = await openFifoReader(stderrFifo);
    // Node's typings have no overload for a descriptor in the stdio tuple; the shape is the one asked for.
    const args = ['exec', `--internal-pid-file=${pidFile}`, `--process=${processFile}`, containerId];
    child = spawn(runsc.binary, [...runsc.globalArgs(), ...args], {
      stdio: ['pipe', 'pipe', writer],
    }) as ChildProcessByStdio<Writable, Readable, null>;
  } finally {
    await closeFd(writer);
  }
  let stderrTail = '';
  stderr.on('data', (d: Buffer) => {
    stderrTail = (stderrTail + d.toString('utf8')).slice(-4096);
    if (io.stderr !== null && !io.stderr.write(d)) {
      stderr.pause();
      io.stderr.once('drain', () => stderr.resume());
    }
  });
  const stderrEnded = new Promise<void>((resolve) => {
    stderr.once('end', resolve);
    stderr.once('close', () => resolve());
  });
  child.stdin.on('error', () => undefined); // the process may exit without reading its input
  if (io.stdin !== null) io.stdin.pipe(child.stdin);
  else child.stdin.end(); // no stdin: the process reads end-of-file, as from /dev/null
  if (io.stdout !== null) child.stdout.pipe(io.stdout, { end: false });
  else child.stdout.resume();

  let timedOut = false;
  const onAbort = (): void => {
    timedOut = true;
    void readFile(pidFile, 'utf8')
      .then((pid) => runsc.kill(containerId, 'KILL', { pid: Number(pid.trim()) }))
      .catch(() => child.kill('SIGKILL'));
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', (e) => reject(errors.unavailable(`cannot run runsc exec: ${e.message}`, e)));
      child.once('exit', (exitCode) => resolve(exitCode));
    });
    // Output may trail the exit a little; a background child still holding it is not waited for long.
    const drained = await Promise.race([
      Promise.all([stderrEnded, child.stdout.readableEnded ? null : once(child.stdout, 'end')]).then(() => true),
      sleep(OUTPUT_GRACE_MS).then(() => false),
    ]);
    if (!drained) child.stdout.destroy();
    if (timedOut) {
      throw errors.deadlineExceeded(opts.timeoutMessage ?? `exec ${JSON.stringify(cmd[0])} timed out`);
    }
    const started = await readFile(pidFile, 'utf8').then(
      () => true,
      () => false,
    );
    if (!started) {
      const message = runscMessage(stderrTail) || `runsc exec exited ${code ?? '?'}`;
      throw /failed to load|no such file or directory|not found|permission denied/i.test(message)
        ? errors.invalidArgument(`cannot run ${JSON.stringify(cmd[0])} in container ${containerId}: ${message}`, 'cmd')
        : errors.internal(`runsc exec in container ${containerId}: ${message}`);
    }
    return code ?? 128;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (io.stdin !== null) io.stdin.unpipe(child.stdin);
    stderr.destroy();
    await Promise.all([pidFile, stderrFifo, processFile].map((f) => rm(f, { force: true })));
  }
}

/** A Writable that keeps the first `limit` bytes written to it. */
class Capture {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  readonly stream: Writable;

  constructor(private readonly limit: number) {
    this.stream = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (this.size < this.limit) {
          const take = chunk.subarray(0, this.limit - this.size);
          this.chunks.push(Buffer.from(take));
          this.size += take.length;
        }
        cb();
      },
    });
  }

  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** ExecSync: runs `cmd` with no stdin, collects its output (each stream capped at `maxBytes`). */
export async function execSync(
  runsc: Runsc,
  containerId: string,
  cmd: readonly string[],
  timeoutSeconds: number,
  opts: { dir: string; process: OciProcess; maxBytes: number },
): Promise<ExecSyncResult> {
  const out = new Capture(opts.maxBytes);
  const errOut = new Capture(opts.maxBytes);
  const controller = new AbortController();
  const timer = timeoutSeconds > 0 ? setTimeout(() => controller.abort(), timeoutSeconds * 1000) : null;
  try {
    const exitCode = await runExec(
      runsc,
      containerId,
      cmd,
      { stdin: null, stdout: out.stream, stderr: errOut.stream },
      {
        dir: opts.dir,
        process: opts.process,
        signal: controller.signal,
        timeoutMessage: `command ${JSON.stringify(cmd[0])} in container ${containerId} did not finish within ${timeoutSeconds} s`,
      },
    );
    return { stdout: out.bytes(), stderr: errOut.bytes(), exitCode };
  } finally {
    if (timer !== null) clearTimeout(timer);
  }
}

/**
 * Connects `stream` to TCP `ip:port` (the pod's IP, reached from the node
 * like any pod IP) and resolves when the connection is over. Half-closes are
 * passed on, so a request ended by the client still gets its whole answer.
 */
export function portForward(ip: string, port: number, stream: Duplex): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket = connect({ host: ip, port, allowHalfOpen: true });
    let connected = false;
    socket.once('connect', () => {
      connected = true;
      stream.pipe(socket);
      socket.pipe(stream);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      if (connected) return; // the stream side sees the close
      reject(
        e.code === 'ECONNREFUSED'
          ? errors.unavailable(
              `nothing listens on port ${port} of the pod (${ip}); a server bound to 127.0.0.1 alone is not reachable, ` +
                "since gVisor's network stack keeps the pod loopback inside the sandbox",
              e,
            )
          : errors.unavailable(`cannot connect to port ${port} of the pod (${ip}): ${e.message}`, e),
      );
    });
    socket.once('close', () => {
      if (connected) resolve();
    });
    const hangUp = (): void => {
      socket.destroy();
    };
    stream.once('close', hangUp);
    stream.once('error', hangUp);
  });
}
