import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import type { Readable, Writable } from 'node:stream';
import { err, ok, ResultAsync } from 'neverthrow';
import { errors, type HcrError } from '../errors.js';
import { hostTool, tail } from './exec.js';

type Child = ChildProcessByStdio<Writable, Readable, Readable>;

/**
 * A byte stream carried by a helper process's stdin and stdout, e.g. a socat
 * relaying a TCP connection it made somewhere Node cannot reach directly.
 *
 * Ending the writable side closes the helper's stdin (the helper half-closes
 * its connection); the readable side ends when the helper closes stdout; once
 * it has, the writable side ends too (`allowHalfOpen: false`), as for a socket
 * whose peer has gone. Destroying the stream kills the helper. A helper that
 * dies unsuccessfully destroys the stream with an error carrying its stderr.
 */
export class ProcessStream extends Duplex {
  readonly #child: Child;
  #exited = false;
  #stderr = '';

  /** Wraps an already spawned helper. */
  constructor(child: Child, stderrSoFar = '') {
    super({ allowHalfOpen: false });
    this.#child = child;
    this.#stderr = stderrSoFar;
    child.stdout.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) child.stdout.pause();
    });
    child.stdout.on('end', () => this.push(null));
    child.stdout.on('error', (e) => this.destroy(e));
    child.stderr.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-4_096);
    });
    child.stdin.on('error', (e) => this.destroy(e));
    child.on('exit', (code, signal) => {
      this.#exited = true;
      if (this.destroyed || code === 0) return;
      const why = signal !== null ? `killed by ${signal}` : `exit status ${code ?? '?'}`;
      this.destroy(new Error(`stream helper ended (${why}): ${tail(this.#stderr, 500) || 'no output'}`));
    });
  }

  override _read(): void {
    this.#child.stdout.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#child.stdin.write(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#child.stdin.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#exited) this.#child.kill('SIGKILL');
    this.#child.stdin.destroy();
    this.#child.stdout.destroy();
    this.#child.stderr.destroy();
    callback(error);
  }
}

/** How to start a relay and how to tell that it has connected. */
export interface RelaySpec {
  readonly file: string;
  readonly args: readonly string[];
  /** Seen on the helper's stderr once its connection is up. */
  readonly readyPattern: RegExp;
  readonly timeoutMs: number;
  /** Used in error messages, e.g. `127.0.0.1:8080 in /run/hcr/netns/x`. */
  readonly target: string;
}

/**
 * Starts a relay helper and resolves with its stream once it reports being
 * connected; a refused or failed connection is an Unavailable error, silence
 * past the timeout a DeadlineExceeded one, and the helper is gone either way.
 */
export function openRelay(spec: RelaySpec): ResultAsync<Duplex, HcrError> {
  return new ResultAsync(
    new Promise((resolve) => {
      const child: Child = spawn(spec.file, spec.args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      let settled = false;
      const settle = (r: Parameters<typeof resolve>[0]) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.stderr.off('data', onStderr);
        child.off('close', onClose);
        child.off('error', onError);
        resolve(r);
      };
      const fail = (e: HcrError) => {
        child.kill('SIGKILL');
        child.stdin.destroy();
        child.stdout.destroy();
        child.stderr.destroy();
        settle(err(e));
      };
      const onStderr = (chunk: Buffer) => {
        stderr += chunk.toString('utf8');
        if (spec.readyPattern.test(stderr)) {
          child.stdout.pause();
          settle(ok(new ProcessStream(child, stderr.slice(-4_096))));
        }
      };
      // 'close' rather than 'exit': only then has all of the helper's complaint arrived.
      const onClose = (code: number | null, signal: NodeJS.Signals | null) => {
        const why = signal !== null ? `killed by ${signal}` : `exit status ${code ?? '?'}`;
        fail(errors.unavailable(`cannot connect to ${spec.target}: ${relayComplaint(stderr) || why}`));
      };
      const onError = (e: NodeJS.ErrnoException) => {
        fail(errors.failedPrecondition(`cannot connect to ${spec.target}: cannot run ${spec.file}: ${e.message}`));
      };
      const timer = setTimeout(
        () => fail(errors.deadlineExceeded(`connecting to ${spec.target} took over ${spec.timeoutMs} ms`)),
        spec.timeoutMs,
      );
      child.stdin.on('error', () => undefined);
      child.stderr.on('data', onStderr);
      child.on('close', onClose);
      child.on('error', onError);
    }),
  );
}

/** socat's own error line (`… E connect(…): Connection refused`), else the tail of what it said. */
export function relayComplaint(stderr: string): string {
  const errorsSaid = stderr
    .split('\n')
    .map((l) => / E (.*)$/.exec(l)?.[1])
    .filter((m): m is string => m !== undefined);
  return errorsSaid.at(-1) ?? tail(stderr, 500);
}

// socat -d -d announces this at notice level once both ends are open.
const SOCAT_READY = / N starting data transfer loop/;
// After one direction ends socat waits this long for the other; generous, so a
// request half-closed by the client still gets a slow reply in full.
const HALF_CLOSE_TIMEOUT_S = 3_600;

/**
 * Opens a TCP connection to `127.0.0.1:port` inside a network namespace. Node
 * cannot enter a namespace, so `nsenter` runs socat there and socat relays
 * between its stdio and the connection.
 */
export function connectInNamespace(netnsPath: string, port: number, timeoutMs: number): ResultAsync<Duplex, HcrError> {
  return openRelay({
    file: hostTool('nsenter'),
    args: [
      `--net=${netnsPath}`,
      '--',
      hostTool('socat'),
      '-d',
      '-d',
      '-t',
      String(HALF_CLOSE_TIMEOUT_S),
      // shut-close: when the pod side ends, close our stdout so the client sees
      // end-of-stream at once (a pipe cannot be half-shut; without it the end
      // only arrived when socat exited after the half-close timeout).
      'STDIO,shut-close',
      `TCP:127.0.0.1:${port}`,
    ],
    readyPattern: SOCAT_READY,
    timeoutMs,
    target: `127.0.0.1:${port} in ${netnsPath}`,
  });
}
