import { open } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { createConnection, type Socket } from 'node:net';

/**
 * A minimal QMP (QEMU Machine Protocol) client: newline-delimited JSON over
 * the VM's unix socket. Only what the engine uses: the greeting, capability
 * negotiation and one command at a time.
 */
export class QmpClient {
  private buffer = '';
  private readonly waiters: ((msg: Record<string, unknown>) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let nl = this.buffer.indexOf('\n'); nl !== -1; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line === '') continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        // Asynchronous events are not replies; nothing here waits for them.
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
  }

  /** Connects, reads the greeting and leaves capability negotiation mode; rejects after `timeoutMs`. */
  static async connect(path: string, timeoutMs: number): Promise<QmpClient> {
    // A unix socket path must fit sun_path (108 bytes) and container dirs are
    // deeper than that; the directory's /proc/self/fd alias is always short.
    const dir = await open(dirname(path), 'r');
    let socket: Socket;
    try {
      socket = createConnection(`/proc/self/fd/${dir.fd}/${basename(path)}`);
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
    } finally {
      await dir.close();
    }
    const timer = setTimeout(
      () => socket.destroy(new Error(`QMP on ${path} did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      const client = new QmpClient(socket);
      const hello = await client.next();
      if (!('QMP' in hello)) throw new Error(`unexpected QMP greeting: ${JSON.stringify(hello)}`);
      await client.execute('qmp_capabilities');
      return client;
    } catch (e) {
      socket.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs `command`; resolves with its `return` value, rejects with QMP's error description. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = this.next();
    this.socket.write(
      JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args }) + '\n',
    );
    const msg = await reply;
    if ('error' in msg) {
      const e = msg['error'] as { desc?: string };
      throw new Error(`QMP ${command}: ${e.desc ?? JSON.stringify(e)}`);
    }
    return msg['return'];
  }

  /** Closes the connection. */
  close(): void {
    this.socket.destroy();
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const onClose = () => reject(new Error('QMP connection closed'));
      this.socket.once('close', onClose);
      this.socket.once('error', reject);
      this.waiters.push((msg) => {
        this.socket.off('close', onClose);
        this.socket.off('error', reject);
        resolve(msg);
      });
    });
  }
}

/** Runs one QMP command on the socket at `path` and disconnects. */
export async function qmpCommand(path: string, command: string, timeoutMs = 3000): Promise<unknown> {
  const client = await QmpClient.connect(path, timeoutMs);
  try {
    return await client.execute(command);
  } finally {
    client.close();
  }
}
