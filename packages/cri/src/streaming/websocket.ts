import { WebSocket, type RawData } from 'ws';
import { toHcrError, type Logger } from '@hcr/core';
import type { StreamingBackend } from './backend.js';
import {
  ChannelDuplex,
  ChannelReadable,
  ChannelWritable,
  LINGER_MS,
  ResizeEvents,
  Throttle,
  closeWritable,
  type ChannelSink,
} from './channels.js';
import { Channel, ResizeDecoder, encodeStatus, type RemoteCommandDialect } from './protocol.js';
import { runRemoteCommand } from './remote-command.js';
import type { AttachRequest, ExecRequest, PortForwardRequest } from './request-cache.js';

/** Receives one channel's messages. */
interface ChannelHandler {
  data(payload: Buffer): void;
  /** The client half-closed the channel (v5 close signal). */
  end(): void;
}

/**
 * Kubelet's channel framing over one WebSocket: every message starts with its
 * channel number (a byte, or an ASCII digit followed by base64 text in the
 * base64 dialects).
 */
class WsChannels {
  /** Settles when the WebSocket is closed. */
  readonly closed: Promise<void>;
  readonly throttle: Throttle;
  private readonly handlers = new Map<number, ChannelHandler>();

  constructor(
    private readonly ws: WebSocket,
    private readonly base64: boolean,
    private readonly closeSignal: boolean,
    private readonly logger: Logger,
  ) {
    this.closed = new Promise((resolve) => ws.once('close', () => resolve()));
    this.throttle = new Throttle(
      () => ws.pause(),
      () => ws.resume(),
    );
    ws.on('message', (data: RawData) => this.onMessage(data as Buffer));
    ws.on('error', (err) => logger.debug({ err: err.message }, 'streaming: WebSocket failed'));
  }

  /** Routes the client's messages on `channel` to `handler`. */
  on(channel: number, handler: ChannelHandler): void {
    this.handlers.set(channel, handler);
  }

  /** Where bytes for the client on `channel` go. */
  sink(channel: number): ChannelSink {
    return {
      write: (chunk, callback) => this.sendMessage(channel, chunk, callback),
      end: (callback) => callback(),
      abort: () => undefined,
    };
  }

  /** Sends one message on `channel`. */
  send(channel: number, payload: Buffer): Promise<void> {
    return new Promise((resolve) => this.sendMessage(channel, payload, () => resolve()));
  }

  /** Closes the WebSocket normally (clients read it as the end of every channel). */
  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      const timer = setTimeout(() => this.ws.terminate(), LINGER_MS);
      timer.unref();
      void this.closed.then(() => clearTimeout(timer));
      this.ws.close(1000);
    }
    await this.closed;
  }

  private sendMessage(channel: number, payload: Buffer, callback: (err?: Error | null) => void): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      callback(new Error('the WebSocket is closed'));
      return;
    }
    const message = this.base64
      ? String.fromCharCode(0x30 + channel) + payload.toString('base64')
      : Buffer.concat([Buffer.of(channel), payload]);
    this.ws.send(message, { binary: !this.base64 }, (err) => callback(err ?? null));
  }

  private onMessage(data: Buffer): void {
    if (data.length === 0) return;
    const first = data[0] ?? 0;
    if (this.closeSignal && first === Channel.Close) {
      const target = data[1];
      if (target !== undefined) this.handlers.get(target)?.end();
      return;
    }
    const channel = this.base64 ? first - 0x30 : first;
    const handler = this.handlers.get(channel);
    if (handler === undefined) {
      this.logger.debug({ channel }, 'streaming: ignoring message on an unused channel');
      return;
    }
    const body = data.subarray(1);
    handler.data(this.base64 ? Buffer.from(body.toString('latin1'), 'base64') : body);
  }
}

/** Serves one exec or attach over a WebSocket with kubelet's channel protocol. */
export async function serveWsRemoteCommand(
  ws: WebSocket,
  dialect: RemoteCommandDialect,
  request: ExecRequest | AttachRequest,
  backend: StreamingBackend,
  logger: Logger,
): Promise<void> {
  const channels = new WsChannels(ws, dialect.base64, dialect.closeSignal, logger);
  let stdin: ChannelReadable | null = null;
  if (request.stdin) {
    const input = new ChannelReadable(channels.throttle.source(channels));
    input.once('close', () => channels.throttle.release(channels));
    channels.on(Channel.Stdin, { data: (payload) => input.deliver(payload), end: () => input.deliverEnd() });
    stdin = input;
  }
  const stdout = request.stdout ? new ChannelWritable(channels.sink(Channel.Stdout), logger) : null;
  const stderr = request.stderr && !request.tty ? new ChannelWritable(channels.sink(Channel.Stderr), logger) : null;
  const resizes = new ResizeEvents();
  const decoder = new ResizeDecoder(
    (size) => resizes.emit(size),
    (reason) => logger.debug({ reason }, 'streaming: ignoring resize message'),
  );
  channels.on(Channel.Resize, { data: (payload) => decoder.write(payload), end: () => undefined });

  void channels.closed.then(() => {
    stdin?.destroy();
    stdout?.destroy(new Error('the client disconnected'));
    stderr?.destroy(new Error('the client disconnected'));
  });
  // Kubelet opens with an empty message on the lowest writable channel, telling
  // the client the session is established.
  await channels.send(
    stdout !== null ? Channel.Stdout : stderr !== null ? Channel.Stderr : Channel.Error,
    Buffer.alloc(0),
  );

  await runRemoteCommand(
    request,
    {
      stdin,
      stdout,
      stderr,
      resizes,
      finish: async (status) => {
        await Promise.all([closeWritable(stdout), closeWritable(stderr)]);
        const bytes = encodeStatus(status, dialect.status);
        if (bytes !== null) await channels.send(Channel.Error, bytes);
        stdin?.destroy();
        await channels.close();
      },
    },
    backend,
    logger,
  );
}

/**
 * Serves port forwarding of `ports` over a WebSocket the kubelet way: channel
 * 2i carries port i's data, 2i+1 its errors, and each starts with the port as
 * two little-endian bytes. The WebSocket closes once every forward is done.
 */
export async function serveWsPortForward(
  ws: WebSocket,
  base64: boolean,
  request: PortForwardRequest,
  ports: readonly number[],
  backend: StreamingBackend,
  logger: Logger,
): Promise<void> {
  const channels = new WsChannels(ws, base64, false, logger);
  await Promise.all(
    ports.map(async (port, i) => {
      const dataChannel = 2 * i;
      const errorChannel = 2 * i + 1;
      const key = {};
      const data = new ChannelDuplex(channels.sink(dataChannel), channels.throttle.source(key), logger);
      data.once('close', () => channels.throttle.release(key));
      channels.on(dataChannel, { data: (payload) => data.deliver(payload), end: () => data.deliverEnd() });
      void channels.closed.then(() => data.destroy(new Error('the client disconnected')));
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16LE(port);
      await channels.send(dataChannel, prefix);
      await channels.send(errorChannel, prefix);
      try {
        await backend.portForward(request.sandboxId, port, data);
      } catch (e) {
        const err = toHcrError(e);
        logger.warn({ port, code: err.code, err: err.message }, 'streaming: port forward failed');
        const message = `error forwarding port ${port} to pod sandbox ${request.sandboxId}: ${err.message}`;
        await channels.send(errorChannel, Buffer.from(message));
      }
      await closeWritable(data);
      data.destroy();
    }),
  );
  await channels.close();
}
