import type { Readable, Writable } from 'node:stream';
import { toHcrError, type Logger, type StreamIO } from '@hcr/core';
import type { ResizeEvents } from './channels.js';
import { errorStatus, exitCodeStatus, successStatus, type KubeStatus } from './protocol.js';
import type { AttachRequest, ExecRequest } from './request-cache.js';
import type { StreamingBackend } from './backend.js';

/** The client's side of one exec or attach, whatever the transport. */
export interface RemoteCommandSession {
  readonly stdin: Readable | null;
  readonly stdout: Writable | null;
  readonly stderr: Writable | null;
  readonly resizes: ResizeEvents;
  /**
   * Ends stdout and stderr once flushed, reports `status` on the error channel in
   * the negotiated format, and closes the connection. Never rejects.
   */
  finish(status: KubeStatus): Promise<void>;
}

/** Runs the request on the backend with the session's streams, then reports how it ended. */
export async function runRemoteCommand(
  request: ExecRequest | AttachRequest,
  session: RemoteCommandSession,
  backend: StreamingBackend,
  logger: Logger,
): Promise<void> {
  const io: StreamIO = {
    stdin: session.stdin,
    stdout: session.stdout,
    stderr: session.stderr,
    tty: request.tty,
    onResize: session.resizes.onResize,
  };
  let status: KubeStatus;
  try {
    if (request.kind === 'exec') {
      const { exitCode } = await backend.exec(request.containerId, request.cmd, io);
      status = exitCode === 0 ? successStatus() : exitCodeStatus(exitCode);
      logger.debug({ exitCode }, 'streaming: exec ended');
    } else {
      await backend.attach(request.containerId, io);
      status = successStatus();
      logger.debug({}, 'streaming: attach ended');
    }
  } catch (e) {
    const err = toHcrError(e);
    logger.warn({ code: err.code, err: err.message }, `streaming: ${request.kind} failed`);
    status = errorStatus(
      err,
      request.kind === 'exec' ? 'error executing command in container' : 'error attaching to container',
    );
  }
  await session.finish(status);
}
