import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable, type Duplex, type Readable } from 'node:stream';
import { errors, type ExecSyncResult } from '@hcr/core';
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
 * is also what a timeout kills.
 */
export async function runExec(
  runsc: Runsc,
  containerId: string,
  cmd: readonly string[],
  io: ExecStreams,
  opts: ExecOptions,
): Promise<number> {
  if (cmd.length === 0) throw errors.invalidArgument('exec needs a command', 'cmd');
  const pidFile = join(opts.dir, `exec-${randomBytes(6).toString('hex')}.pid`);
  const child = spawn(
    runsc.binary,
    [...runsc.globalArgs(), 'exec', `--internal-pid-file=${pidFile}`, containerId, ...cmd],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stderrTail = '';
  child.stderr.on('data', (d: Buffer) => {
    stderrTail = (stderrTail + d.toString('utf8')).slice(-4096);
  });
  child.stdin.on('error', () => undefined); // the process may exit without reading its input
  if (io.stdin !== null) io.stdin.pipe(child.stdin);
  else child.stdin.end(); // no stdin: the process reads end-of-file, as from /dev/null
  if (io.stdout !== null) child.stdout.pipe(io.stdout, { end: false });
  else child.stdout.resume();
  if (io.stderr !== null) child.stderr.pipe(io.stderr, { end: false });
  else child.stderr.resume();

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
      child.once('exit', (exitCode, sig) => {
        const done = (): void => resolve(exitCode ?? (sig === null ? null : 128));
        if (child.stdout.readableEnded && child.stderr.readableEnded) return done();
        const timer = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          done();
        }, OUTPUT_GRACE_MS);
        child.once('close', () => {
          clearTimeout(timer);
          done();
        });
      });
    });
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
    await rm(pidFile, { force: true });
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
  opts: { dir: string; maxBytes: number },
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
 * Connects `stream` to TCP `127.0.0.1:port` inside the pod network namespace.
 * In network mode "host" the gVisor sandbox's sockets are host sockets in
 * that namespace, so a helper that enters it reaches the pod's loopback (Node
 * cannot enter a namespace itself). Resolves when the connection is over.
 */
export function portForward(netnsPath: string, port: number, stream: Duplex): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // -t: keep passing one direction for a while after the other reached EOF (a half-closed request may
    // still get a long answer); the helper is killed as soon as the client's stream closes.
    const child = spawn('nsenter', [`--net=${netnsPath}`, '--', 'socat', '-t', '3600', '-', `TCP4:127.0.0.1:${port}`], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    stream.pipe(child.stdin);
    child.stdout.pipe(stream);
    child.stdin.on('error', () => undefined);
    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    stream.once('close', kill);
    stream.once('error', kill);
    child.once('error', (e: NodeJS.ErrnoException) => {
      reject(
        errors.failedPrecondition(
          e.code === 'ENOENT'
            ? 'port-forward needs nsenter (Debian package util-linux) on the host'
            : `cannot start the port-forward helper: ${e.message}`,
        ),
      );
    });
    child.once('close', (code, sig) => {
      stream.off('close', kill);
      stream.off('error', kill);
      if (code === 0 || sig === 'SIGKILL') return resolve();
      const text = stderr.trim().split('\n').pop() ?? '';
      if (/socat/.test(text) && /No such file|not found/.test(text)) {
        return reject(errors.failedPrecondition('port-forward needs socat on the host (Debian package socat)'));
      }
      reject(
        errors.unavailable(
          `port-forward to port ${port} in the pod network failed (exit ${code ?? '?'}): ${text.replace(/^.*? E /, '') || 'no message'}`,
        ),
      );
    });
  });
}
