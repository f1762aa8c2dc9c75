import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { errors, ResultAsync, type HcrError } from '@hcr/core';

/**
 * A byte channel to the guest agent. The agent protocol is the same over
 * every transport; only how the host reaches the guest differs.
 */
export interface AgentTransport {
  /** Where the channel goes, for messages. */
  readonly description: string;
  /** Opens a fresh connection, retrying until `timeoutMs` while the endpoint is not there yet. */
  connect(timeoutMs: number): ResultAsync<Duplex, HcrError>;
}

/**
 * virtio-serial through a QEMU `socket` chardev (server=on, wait=off): the
 * host end is a unix socket under the pod's runtime dir. It works wherever
 * QEMU does; vsock would need `/dev/vhost-vsock`, which not every host has.
 */
export class UnixSocketTransport implements AgentTransport {
  readonly description: string;

  constructor(readonly path: string) {
    this.description = `virtio-serial socket ${path}`;
  }

  connect(timeoutMs: number): ResultAsync<Duplex, HcrError> {
    const deadline = Date.now() + timeoutMs;
    const attempt = (): Promise<Socket> =>
      new Promise<Socket>((resolve, reject) => {
        const s = connect(this.path);
        s.once('connect', () => {
          s.removeAllListeners('error');
          // Until the client attaches its handlers; a failure also ends in 'close', which the client watches.
          s.on('error', () => undefined);
          resolve(s);
        });
        s.once('error', (e) => {
          s.destroy();
          reject(e);
        });
      });
    const loop = async (): Promise<Socket> => {
      for (;;) {
        try {
          return await attempt();
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          // QEMU may not have created the socket yet, or still hold another client.
          const transient = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
          if (!transient || Date.now() >= deadline) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    return ResultAsync.fromPromise(loop(), (e) =>
      errors.unavailable(`cannot connect to the guest agent over ${this.description}: ${(e as Error).message}`, e),
    );
  }
}
