import type { Duplex } from 'node:stream';
import type { StreamIO } from '@hcr/core';

/**
 * What the streaming server needs from the runtime (core's RuntimeService
 * implements it). Every method rejects with an HcrError when it cannot serve.
 *
 * Stream contract: the server ends `io.stdout` / `io.stderr` itself once the
 * promise settles, so a backend resolves only after everything it read from the
 * process has been written to them. When the client goes away, `io.stdin` is
 * destroyed and `io.stdout` / `io.stderr` (or the port-forward stream) are
 * destroyed with an error; the backend should then stop (kill or detach).
 */
export interface StreamingBackend {
  /** Runs `cmd` in the container with `io`; resolves with its exit code. */
  exec(containerId: string, cmd: readonly string[], io: StreamIO): Promise<{ exitCode: number }>;
  /** Attaches `io` to the container's main process; resolves when the streams end. */
  attach(containerId: string, io: StreamIO): Promise<void>;
  /** Connects `stream` to TCP `port` in the pod's network namespace; resolves when both directions are done. */
  portForward(sandboxId: string, port: number, stream: Duplex): Promise<void>;
}
