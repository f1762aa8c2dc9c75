import { connect, type Socket } from 'node:net';
import { errors, ResultAsync, type HcrError } from '@hcr/core';

interface Waiter {
  readonly command: string;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
}

/**
 * One QMP connection: greeting and capability negotiation on connect, then
 * commands one at a time (events are skipped). Short-lived by design: HCR
 * keeps no monitor state between operations.
 */
export class QmpSession {
  private buf = '';
  private waiter: Waiter | null = null;
  private closed: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (e) => this.end(e));
    socket.on('close', () => this.end(new Error('QMP socket closed')));
  }

  /** Connects and enters command mode. */
  static async open(socketPath: string): Promise<QmpSession> {
    const socket = connect(socketPath);
    const session = new QmpSession(socket);
    // The greeting comes unasked; it is the reply to "nothing".
    await session.wait('(greeting)');
    await session.execute('qmp_capabilities');
    return session;
  }

  /** Runs one command and resolves with its `return` value. */
  execute(command: string, args: Record<string, unknown> = {}): Promise<unknown> {
    const reply = this.wait(command);
    this.socket.write(JSON.stringify({ execute: command, arguments: args }) + '\n');
    return reply;
  }

  close(): void {
    this.socket.destroy();
  }

  private wait(command: string): Promise<unknown> {
    if (this.closed !== null) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.waiter = { command, resolve, reject };
    });
  }

  private end(e: Error): void {
    this.closed ??= e;
    const w = this.waiter;
    this.waiter = null;
    // `quit` may close the socket before QEMU writes its return.
    if (w?.command === 'quit') w.resolve({});
    else w?.reject(this.closed);
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line === '') continue;
      const w = this.waiter;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.waiter = null;
        w?.reject(new Error(`QMP sent non-JSON: ${line.slice(0, 80)}`));
        continue;
      }
      if ('event' in msg || w === null) continue;
      this.waiter = null;
      if ('error' in msg)
        w.reject(new Error(`QMP ${w.command}: ${(msg['error'] as { desc?: string }).desc ?? 'error'}`));
      else w.resolve('QMP' in msg ? msg['QMP'] : msg['return']);
    }
  }
}

/**
 * Runs `fn` with a QMP session on QEMU's monitor socket, bounded by
 * `timeoutMs`; the session is closed afterwards whatever happens.
 */
export function withQmp<T>(
  socketPath: string,
  timeoutMs: number,
  what: string,
  fn: (qmp: QmpSession) => Promise<T>,
): ResultAsync<T, HcrError> {
  const run = (async () => {
    let session: QmpSession | null = null;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        session?.close();
        reject(new Error(`${what} did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    const work = (async () => {
      const s = await QmpSession.open(socketPath);
      session = s;
      if (timedOut) s.close();
      try {
        return await fn(s);
      } finally {
        s.close();
      }
    })();
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  })();
  return ResultAsync.fromPromise(run, (e) =>
    errors.unavailable(`QEMU monitor ${socketPath}: ${(e as Error).message}`, e),
  );
}

/** Runs one QMP command on QEMU's monitor socket. */
export function qmpCommand(
  socketPath: string,
  command: string,
  args: Record<string, unknown> = {},
  timeoutMs = 5_000,
): ResultAsync<unknown, HcrError> {
  return withQmp(socketPath, timeoutMs, command, (qmp) => qmp.execute(command, args));
}
