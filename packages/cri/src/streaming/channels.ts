import { Duplex, Readable, Writable } from 'node:stream';
import type { Socket } from 'node:net';
import type { Logger, TerminalSize } from '@hcr/core';

// Transport-neutral stream plumbing: what the backend sees is always a plain
// Node stream; SPDY and WebSocket differ only in the small sink/source hooks.

/** Where a channel's outgoing bytes go. */
export interface ChannelSink {
  /** Sends one chunk; `callback` runs once the transport took it, which is what paces the producer. */
  write(chunk: Buffer, callback: (err?: Error | null) => void): void;
  /** Half-closes the channel (SPDY FIN); WebSocket channels have no half-close and call back at once. */
  end(callback: () => void): void;
  /** Drops the channel at once (RST); the session is failing or the client left. */
  abort(): void;
}

/** Flow control towards the client for a channel's incoming bytes. */
export interface ChannelSource {
  pause(): void;
  resume(): void;
}

/** What the client sent on one channel, as a Readable the backend consumes at its own pace. */
export class ChannelReadable extends Readable {
  constructor(private readonly source: ChannelSource) {
    super();
  }

  /** Hands over bytes from the client; pauses the client once the consumer falls behind. */
  deliver(chunk: Buffer): void {
    if (this.destroyed || this.readableEnded) return;
    if (!this.push(chunk)) this.source.pause();
  }

  /** The client closed its side (SPDY FIN, WebSocket v5 close signal). */
  deliverEnd(): void {
    if (!this.destroyed) this.push(null);
  }

  override _read(): void {
    this.source.resume();
  }
}

/**
 * A channel towards the client, as a Writable the backend writes to. An `error`
 * listener is always attached: a client that vanishes must fail the backend's
 * writes, not crash the server because a backend forgot a listener.
 */
export class ChannelWritable extends Writable {
  constructor(
    private readonly sink: ChannelSink,
    logger: Logger,
  ) {
    super();
    this.on('error', (err) => logger.debug({ err: err.message }, 'streaming: write towards client failed'));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.sink.write(chunk, callback);
  }

  override _final(callback: () => void): void {
    this.sink.end(callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.writableFinished) this.sink.abort();
    callback(err);
  }
}

/** Both directions of one forwarded connection, as the Duplex a port-forward backend pipes. */
export class ChannelDuplex extends Duplex {
  constructor(
    private readonly sink: ChannelSink,
    private readonly source: ChannelSource,
    logger: Logger,
  ) {
    super({ allowHalfOpen: true });
    this.on('error', (err) => logger.debug({ err: err.message }, 'streaming: forwarded stream failed'));
  }

  /** Hands over bytes from the client; pauses the client once the consumer falls behind. */
  deliver(chunk: Buffer): void {
    if (this.destroyed || this.readableEnded) return;
    if (!this.push(chunk)) this.source.pause();
  }

  /** The client closed its sending side. */
  deliverEnd(): void {
    if (!this.destroyed) this.push(null);
  }

  override _read(): void {
    this.source.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.sink.write(chunk, callback);
  }

  override _final(callback: () => void): void {
    this.sink.end(callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.writableFinished) this.sink.abort();
    callback(err);
  }
}

/**
 * Pauses a whole transport while any of its channels is congested: the client
 * then meets TCP backpressure, as it would against kubelet.
 */
export class Throttle {
  private readonly congested = new Set<object>();

  constructor(
    private readonly pauseTransport: () => void,
    private readonly resumeTransport: () => void,
  ) {}

  /** A ChannelSource for `key` that reports its congestion here. */
  source(key: object, also?: ChannelSource): ChannelSource {
    return {
      pause: () => {
        also?.pause();
        if (this.congested.size === 0) this.pauseTransport();
        this.congested.add(key);
      },
      resume: () => {
        also?.resume();
        if (this.congested.delete(key) && this.congested.size === 0) this.resumeTransport();
      },
    };
  }

  /** Forgets `key` (its channel is gone). */
  release(key: object): void {
    if (this.congested.delete(key) && this.congested.size === 0) this.resumeTransport();
  }
}

/**
 * Terminal resizes for the backend. The latest size is replayed to a listener
 * registered late, since clients send the initial size before the backend has
 * had a chance to subscribe.
 */
export class ResizeEvents {
  private readonly listeners: ((size: TerminalSize) => void)[] = [];
  private last: TerminalSize | null = null;

  /** Delivers a size from the client. */
  emit(size: TerminalSize): void {
    this.last = size;
    for (const listener of this.listeners) listener(size);
  }

  /** StreamIO.onResize. */
  readonly onResize = (listener: (size: TerminalSize) => void): void => {
    this.listeners.push(listener);
    if (this.last !== null) listener(this.last);
  };
}

/** Ends `w` and waits until it finished or failed; never rejects. */
export function closeWritable(w: Writable | null): Promise<void> {
  if (w === null || w.writableFinished || w.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      w.off('finish', done).off('close', done).off('error', done);
      resolve();
    };
    w.on('finish', done).on('close', done).on('error', done);
    w.end();
  });
}

/** How long a socket may take to close after we ended it before it is destroyed. */
export const LINGER_MS = 5_000;

/** Writes `data` (if any), ends the socket, and destroys it should the peer not close in time. */
export function endSocket(socket: Socket | Duplex, data?: string): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  if (data === undefined) socket.end();
  else socket.end(data);
}

/** A promise that settles when the stream is closed (by either side). */
export function whenClosed(stream: Socket | Duplex): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}
