import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { errors, type ExecSyncResult, type HcrError, type StreamIO, type TerminalSize } from '@hcr/core';
import type Docker from 'dockerode';
import { StdFrameParser, writeRespectingBackpressure } from './stdcopy.js';

/** How a hijacked exec or attach connection is wired to the caller's streams. */
interface Wiring {
  readonly stdin: StreamIO['stdin'];
  readonly stdout: Writable | null;
  readonly stderr: Writable | null;
  /** Whether Docker sends one raw stream (TTY) instead of multiplexed frames. */
  readonly raw: boolean;
}

/**
 * Pumps a hijacked Docker connection: the caller's stdin into it (a
 * half-close when stdin ends, which Docker passes on as EOF), and its output
 * to stdout/stderr with backpressure. Resolves when Docker ends the output
 * (the process exited); the caller's streams are left open for the caller.
 */
export function pump(socket: Duplex, w: Wiring): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (e?: unknown): void => {
      if (settled) return;
      settled = true;
      w.stdin?.unpipe(socket);
      if (e === undefined) resolve();
      else reject(e instanceof Error ? e : new Error(String(e)));
    };
    if (w.stdin !== null) {
      w.stdin.pipe(socket, { end: false });
      w.stdin.once('end', () => {
        if (!socket.destroyed) socket.end();
      });
    }
    const sink = w.raw
      ? null
      : new StdFrameParser((stream, payload) => {
          const target = stream === 'stderr' ? w.stderr : w.stdout;
          return target === null ? undefined : writeRespectingBackpressure(target, payload);
        });
    if (sink !== null)
      sink.on('error', (e) => {
        socket.destroy();
        finish(e);
      });
    socket.on('data', (chunk: Buffer) => {
      const wait =
        sink !== null
          ? sink.write(chunk)
            ? undefined
            : 'drain'
          : w.stdout === null
            ? undefined
            : writeRespectingBackpressure(w.stdout, chunk);
      if (wait === undefined) return;
      socket.pause();
      if (wait === 'drain') sink!.once('drain', () => socket.resume());
      else void wait.then(() => socket.resume());
    });
    socket.once('end', () => {
      if (sink === null) finish();
      else sink.end(() => finish());
    });
    socket.once('close', () => {
      // A connection that closes without a clean end still delivered what it had.
      if (sink === null) finish();
      else if (!sink.writableEnded) sink.end(() => finish());
    });
    socket.once('error', (e) => {
      if ((e as NodeJS.ErrnoException).code === 'ECONNRESET' || (e as NodeJS.ErrnoException).code === 'EPIPE') return;
      finish(e);
    });
  });
}

/** Exit code of a finished exec; Docker marks it finished a moment after its output ends. */
async function execExitCode(exec: Docker.Exec): Promise<number> {
  for (let i = 0; ; i++) {
    const info = await exec.inspect();
    if (!info.Running && info.ExitCode !== null) return info.ExitCode;
    if (i >= 200) {
      if (info.Running) throw errors.internal(`exec ${exec.id} still running after its output ended`);
      throw errors.internal(`exec ${exec.id} ended without an exit code`);
    }
    await sleep(i < 20 ? 5 : 25);
  }
}

/** Kills a process and every descendant of it (host pids), so nothing keeps running after a timeout. */
export async function killTree(pid: number): Promise<void> {
  const children = new Map<number, number[]>();
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => null);
    if (stat === null) continue;
    // The command name may contain spaces and parentheses; the ppid follows the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const order: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    order.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  for (const p of order) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Options of {@link runExec}. */
export interface ExecOptions {
  /** Aborting kills the exec'd process tree and rejects with DeadlineExceeded. */
  readonly signal?: AbortSignal;
  readonly timeoutMessage?: string;
}

/** Runs `cmd` in a container over a hijacked exec connection; resolves with its exit code. */
export async function runExec(
  container: Docker.Container,
  cmd: readonly string[],
  io: StreamIO,
  opts: ExecOptions = {},
): Promise<number> {
  const exec = await container.exec({
    Cmd: [...cmd],
    AttachStdin: io.stdin !== null,
    AttachStdout: io.stdout !== null,
    AttachStderr: io.stderr !== null,
    Tty: io.tty,
  });
  const socket = (await exec.start({ hijack: true, stdin: io.stdin !== null, Tty: io.tty })) as unknown as Duplex;
  if (io.tty) {
    io.onResize((size: TerminalSize) => {
      exec.resize({ h: size.height, w: size.width }).catch(() => undefined);
    });
  }
  const output = pump(socket, { stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, raw: io.tty });
  if (opts.signal === undefined) {
    await output;
    return execExitCode(exec);
  }
  const signal = opts.signal;
  const aborted = new Promise<never>((_, reject) => {
    const onAbort = (): void => {
      void (async () => {
        const pid = await exec
          .inspect()
          .then((i) => i.Pid)
          .catch(() => 0);
        if (pid > 0) await killTree(pid);
        socket.destroy();
        reject(errors.deadlineExceeded(opts.timeoutMessage ?? `command ${JSON.stringify(cmd)} was cancelled`));
      })();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  await Promise.race([output, aborted]);
  return Promise.race([execExitCode(exec), aborted]);
}

/** A Writable that keeps the first `limit` bytes written to it and drops the rest. */
class CappedBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  readonly stream: Writable;

  constructor(limit: number) {
    this.stream = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        const room = limit - this.size;
        if (room > 0) {
          const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
          this.chunks.push(part);
          this.size += part.length;
        }
        cb();
      },
    });
  }

  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** ExecSync: runs `cmd`, collects its output, and gives up (killing it) after `timeoutSeconds` (0 = never). */
export async function execSync(
  container: Docker.Container,
  cmd: readonly string[],
  timeoutSeconds: number,
  maxOutputBytes: number,
): Promise<ExecSyncResult> {
  const stdout = new CappedBuffer(maxOutputBytes);
  const stderr = new CappedBuffer(maxOutputBytes);
  const io: StreamIO = {
    stdin: null,
    stdout: stdout.stream,
    stderr: stderr.stream,
    tty: false,
    onResize: () => undefined,
  };
  const signal = timeoutSeconds > 0 ? AbortSignal.timeout(timeoutSeconds * 1000) : undefined;
  const exitCode = await runExec(container, cmd, io, {
    ...(signal === undefined ? {} : { signal }),
    timeoutMessage: `command ${JSON.stringify(cmd)} timed out after ${timeoutSeconds}s and was killed`,
  });
  return { stdout: stdout.data, stderr: stderr.data, exitCode };
}

/** Attaches to a container's main process; resolves when its output ends. */
export async function attach(container: Docker.Container, tty: boolean, io: StreamIO): Promise<void> {
  const socket = (await container.attach({
    stream: true,
    stdin: io.stdin !== null,
    stdout: io.stdout !== null,
    stderr: io.stderr !== null,
    hijack: true,
  })) as unknown as Duplex;
  if (tty) {
    io.onResize((size: TerminalSize) => {
      container.resize({ h: size.height, w: size.width }).catch(() => undefined);
    });
  }
  await pump(socket, { stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, raw: tty });
}

/**
 * Forwards `stream` to TCP `127.0.0.1:port` inside the pod network namespace
 * (`netnsPath`), or on the host for a host-network pod (null). Node cannot
 * enter a namespace itself, so a short-lived `nsenter … socat` helper carries
 * the bytes. Resolves when the connection is over.
 */
export function portForward(netnsPath: string | null, port: number, stream: Duplex): Promise<void> {
  return netnsPath === null ? forwardOnHost(port, stream) : forwardInNetns(netnsPath, port, stream);
}

function forwardOnHost(port: number, stream: Duplex): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port });
    let connected = false;
    sock.once('connect', () => {
      connected = true;
      stream.pipe(sock);
      sock.pipe(stream);
    });
    sock.once('error', (e) => {
      if (!connected)
        reject(errors.unavailable(`cannot connect to 127.0.0.1:${port} on the host network: ${e.message}`, e));
    });
    sock.once('close', () => {
      if (connected) resolve();
    });
    stream.once('close', () => sock.destroy());
    stream.once('error', () => sock.destroy());
  });
}

function forwardInNetns(netnsPath: string, port: number, stream: Duplex): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // shut-close: when the pod side closes, close our stdout so the client sees EOF at once. -t: after the
    // client's EOF, keep passing the pod's answer this long (the helper dies with the client's stream anyway).
    const child = spawn(
      'nsenter',
      [`--net=${netnsPath}`, '--', 'socat', '-t', '3600', 'STDIO,shut-close', `TCP4:127.0.0.1:${port}`],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    stream.pipe(child.stdin);
    child.stdout.pipe(stream);
    child.stdin.on('error', () => undefined);
    // The pod side closed: the client gets EOF (pipe ends `stream`), and the helper is told there is no more
    // input so it exits now rather than waiting for the client to close its side too.
    child.stdout.once('end', () => {
      stream.unpipe(child.stdin);
      child.stdin.end();
    });
    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    stream.once('close', kill);
    stream.once('error', kill);
    child.once('error', (e: NodeJS.ErrnoException) => {
      const what = e.code === 'ENOENT' ? 'nsenter is not installed (Debian package util-linux)' : e.message;
      reject(errors.failedPrecondition(`cannot start the port-forward helper: ${what}`));
    });
    child.once('close', (code, sig) => {
      stream.off('close', kill);
      stream.off('error', kill);
      if (code === 0 || sig === 'SIGKILL') return resolve();
      reject(portForwardError(port, code, stderr));
    });
  });
}

function portForwardError(port: number, code: number | null, stderr: string): HcrError {
  const text = stderr.trim().split('\n').pop() ?? '';
  if (/No such file|not found/.test(text) && /socat/.test(text))
    return errors.failedPrecondition('the port-forward helper needs socat on the host (Debian package socat)');
  return errors.unavailable(
    `port-forward to port ${port} in the pod network failed (exit ${code ?? '?'}): ${text.replace(/^.*?E /, '') || 'no message'}`,
  );
}
