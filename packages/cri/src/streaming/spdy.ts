import type { Duplex, Writable } from 'node:stream';
import transport, {
  type SpdyConnection,
  type SpdyFrame,
  type SpdyHeaders,
  type SpdyParser,
  type SpdyStream,
} from 'spdy-transport';
import { toHcrError, type Logger } from '@hcr/core';
import type { StreamingBackend } from './backend.js';
import {
  ChannelDuplex,
  ChannelReadable,
  ChannelWritable,
  ResizeEvents,
  Throttle,
  closeWritable,
  endSocket,
  whenClosed,
  type ChannelSink,
} from './channels.js';
import {
  ResizeDecoder,
  StreamHeader,
  encodeStatus,
  headerValue,
  type RemoteCommandDialect,
  type StreamType,
} from './protocol.js';
import { runRemoteCommand } from './remote-command.js';
import type { AttachRequest, ExecRequest, PortForwardRequest } from './request-cache.js';

/** Receive window advertised to peers that do SPDY flow control (per stream). */
const RECEIVE_WINDOW = 256 * 1024;

/** How long a finished session waits for the client to close the connection before closing it. */
const CLIENT_CLOSE_GRACE_MS = 2_000;

/** SYN_STREAM's control frame type. */
const SYN_STREAM = 0x01;

/** Timing and logging shared by the SPDY handlers. */
export interface SpdyHandlerOptions {
  /** How long the client has to open all of a request's streams. */
  readonly streamCreationTimeoutMs: number;
  readonly logger: Logger;
}

/**
 * The server side of one SPDY/3.1 connection, framed by spdy-transport and
 * adapted to the SPDY dialect Kubernetes clients speak.
 *
 * Every Kubernetes client (client-go over moby/spdystream: kubectl, crictl, the
 * API server) uses SPDY as a bare stream multiplexer, which spdy-transport —
 * written for SPDY as an HTTP transport — does not serve out of the box:
 *
 * 1. Their SYN_STREAMs carry only `streamtype`/`port`/`requestid`, no `:method`
 *    or `:path`; spdy-transport's parser rejects such a frame and kills the
 *    connection. The two headers are defaulted before the parser checks them.
 * 2. spdystream has no flow control: it never sends WINDOW_UPDATE (nor
 *    SETTINGS) and relies on TCP alone. spdy-transport would stall every stream
 *    after the initial 64 KiB window, so for such a peer the send window is
 *    refilled whenever the socket drains: backpressure is TCP's, as with
 *    kubelet. Such a peer also ignores our receive window, so the socket is
 *    paused while a backend does not keep up with what the client sends; this
 *    needs our own socket-to-parser feed, as a pipe would resume the socket.
 *    A peer that sends SETTINGS or WINDOW_UPDATE (spdy-transport itself, for
 *    one) gets standard SPDY/3.1 flow control instead.
 * 3. Replies are compressed asynchronously and spdy-transport's end() drops
 *    frames the socket has not taken yet, so closing waits for pending replies
 *    and moves every queued frame into the socket itself.
 *
 * This touches spdy-transport 3.0.0 internals (`_spdyState` of the connection
 * and streams, the parser's onSynHeadFrame/parseKVs); 3.0.0 is its last
 * release, and the streaming tests' spdystream-like client exercises each point.
 */
export class SpdySession {
  /** Settles when the underlying byte stream is closed. */
  readonly closed: Promise<void>;
  private readonly conn: SpdyConnection;
  private readonly throttle: Throttle;
  private readonly open = new Set<SpdyStream>();
  private readonly creditWaiters = new Set<() => void>();
  private readonly replies = new Set<Promise<void>>();
  private handler: ((stream: SpdyStream) => void) | null = null;
  private peerFlowControl = false;
  private throttled = false;
  private parserBusy = false;
  private shuttingDown = false;

  constructor(
    private readonly socket: Duplex,
    private readonly logger: Logger,
  ) {
    this.closed = whenClosed(socket);
    this.conn = transport.connection.create(socket, {
      protocol: 'spdy',
      isServer: true,
      windowSize: RECEIVE_WINDOW,
      autoSpdy31: true,
    });
    acceptStreamsWithoutRequestLine(this.conn._spdyState.parser);
    this.feedParserFromSocket();
    this.throttle = new Throttle(
      () => this.setThrottled(true),
      () => this.setThrottled(false),
    );
    this.conn.on('frame', (frame: SpdyFrame) => {
      if (frame.type === 'WINDOW_UPDATE' || frame.type === 'SETTINGS') this.peerDoesFlowControl();
    });
    // Parser errors (garbage from the client) and socket errors both end here; the
    // connection is unusable either way.
    this.conn.on('error', (err: Error) => {
      logger.debug({ err: err.message }, 'streaming: SPDY connection failed');
      socket.destroy();
    });
    this.conn.on('stream', (stream: SpdyStream) => this.onStream(stream));
    socket.on('drain', () => this.grantCredit());
  }

  /** Routes the client's new streams to `handler` (replacing the previous one). */
  setStreamHandler(handler: (stream: SpdyStream) => void): void {
    this.handler = handler;
  }

  /**
   * Replies to the SYN_STREAM (the client waits for this before using the stream);
   * settles once the reply is queued on the connection. The reply's header block
   * is compressed asynchronously, so until then nothing may close the connection.
   */
  accept(stream: SpdyStream): Promise<void> {
    const sent = new Promise<void>((resolve) => stream.respond(200, {}, () => resolve()));
    this.replies.add(sent);
    void sent.then(() => this.replies.delete(sent));
    return sent;
  }

  /** Rejects a stream the request has no use for. */
  refuse(stream: SpdyStream): void {
    stream.abort('REFUSED_STREAM');
  }

  /** The client's bytes on `stream`, paced by the consumer. */
  readable(stream: SpdyStream): ChannelReadable {
    const r = new ChannelReadable(this.throttle.source(stream, stream));
    stream.on('data', (chunk: Buffer) => r.deliver(chunk));
    stream.on('end', () => r.deliverEnd());
    stream.once('close', () => {
      if (!r.readableEnded) r.destroy();
    });
    r.once('close', () => this.release(stream));
    return r;
  }

  /** A Writable whose bytes go to the client on `stream`; ending it sends FIN. */
  writable(stream: SpdyStream): ChannelWritable {
    const w = new ChannelWritable(sinkOf(stream), this.logger);
    stream.once('close', () => {
      if (!w.writableFinished) w.destroy(new Error('the client closed the stream'));
    });
    return w;
  }

  /** Both directions of `stream` as one Duplex (port forwarding). */
  duplex(stream: SpdyStream): ChannelDuplex {
    const d = new ChannelDuplex(sinkOf(stream), this.throttle.source(stream, stream), this.logger);
    stream.on('data', (chunk: Buffer) => d.deliver(chunk));
    stream.on('end', () => d.deliverEnd());
    stream.once('close', () => {
      if (!d.writableFinished || !d.readableEnded) d.destroy(new Error('the client closed the stream'));
    });
    d.once('close', () => this.release(stream));
    return d;
  }

  /**
   * Ends the session once everything queued has been sent. Streams this side has
   * not finished are reset first (as kubelet does), so a client still sending
   * stdin stops. The client, which now has all it waits for, closes the
   * connection itself (client-go does at once); one that does not is cut off
   * after CLIENT_CLOSE_GRACE_MS. Closing first from here could cut off a client
   * still decoding the last frames it received. `graceful: false` skips the
   * wait, for a session that failed before anything was sent.
   */
  async shutdown({ graceful = true }: { graceful?: boolean } = {}): Promise<void> {
    if (this.shuttingDown) return this.closed;
    this.shuttingDown = true;
    await Promise.all([...this.replies]);
    for (const stream of this.open) {
      if (!stream._writableState.finished) stream.abort();
    }
    // Read (and drop) whatever the client still sends, so its close is seen.
    this.peerDoesFlowControl();
    if (graceful) {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLIENT_CLOSE_GRACE_MS);
      });
      await Promise.race([this.closed, grace]);
      clearTimeout(timer);
    }
    if (!this.socket.destroyed) {
      // spdy-transport's own end() drops frames the socket has not taken yet:
      // move every queued frame into the socket, then end it.
      const framer = this.conn._spdyState.framer;
      framer.dump();
      framer.unpipe(this.socket);
      for (let chunk = framer.read(); chunk !== null; chunk = framer.read()) this.socket.write(chunk);
      endSocket(this.socket);
    }
    await this.closed;
  }

  /** Nobody reads `stream` any more: stop holding the client back, drop what it still sends. */
  private release(stream: SpdyStream): void {
    this.throttle.release(stream);
    stream.resume();
  }

  private onStream(stream: SpdyStream): void {
    // Without a listener, a stream's error (RST from the client, socket loss) would crash the server.
    stream.on('error', (err: Error) =>
      this.logger.debug({ stream: stream.id, err: err.message }, 'streaming: stream reset'),
    );
    this.open.add(stream);
    stream.once('close', () => this.open.delete(stream));
    this.refillFromSocket(stream);
    if (this.shuttingDown || this.handler === null) this.refuse(stream);
    else this.handler(stream);
  }

  /** For a peer without flow control, the window is refilled whenever the socket can take more. */
  private refillFromSocket(stream: SpdyStream): void {
    const send = stream._spdyState.window.send;
    const grant = (): void => {
      const delta = send.getDelta();
      if (delta > 0) send.update(delta);
    };
    send.on('drain', () => {
      if (this.peerFlowControl) return;
      if ((this.socket as Writable).writableNeedDrain) this.creditWaiters.add(grant);
      else grant();
    });
    stream.once('close', () => this.creditWaiters.delete(grant));
  }

  private grantCredit(): void {
    const waiters = [...this.creditWaiters];
    this.creditWaiters.clear();
    for (const grant of waiters) grant();
  }

  private peerDoesFlowControl(): void {
    if (this.peerFlowControl) return;
    this.peerFlowControl = true;
    this.grantCredit();
    this.updateFlow();
  }

  /**
   * Replaces spdy-transport's `socket.pipe(parser)`: a pipe resumes its source
   * whenever the destination drains, which would undo the throttle's pause.
   * Here the socket flows only while the parser keeps up and no channel is congested.
   */
  private feedParserFromSocket(): void {
    const parser = this.conn._spdyState.parser;
    this.socket.unpipe(parser as unknown as Writable);
    this.socket.on('data', (chunk: Buffer) => {
      if (parser.write(chunk)) return;
      this.parserBusy = true;
      this.updateFlow();
      parser.once('drain', () => {
        this.parserBusy = false;
        this.updateFlow();
      });
    });
    this.socket.once('end', () => parser.end());
    this.socket.resume();
  }

  private setThrottled(throttled: boolean): void {
    this.throttled = throttled;
    this.updateFlow();
  }

  private updateFlow(): void {
    // A peer with flow control is held back by its windows; pausing its socket
    // could also hold back the WINDOW_UPDATEs our own sending waits for.
    const hold = this.parserBusy || (this.throttled && !this.peerFlowControl);
    if (hold) this.socket.pause();
    else this.socket.resume();
  }
}

/**
 * Lets the parser accept a SYN_STREAM without `:method`/`:path` by defaulting
 * them, for this connection only (see SpdySession). The header parse runs
 * synchronously inside onSynHeadFrame, so the override is in place exactly then.
 */
function acceptStreamsWithoutRequestLine(parser: SpdyParser): void {
  const onSynHeadFrame = parser.onSynHeadFrame;
  const parseKVs = parser.parseKVs;
  const withRequestLine: SpdyParser['parseKVs'] = function (this: SpdyParser, body, callback) {
    parseKVs.call(this, body, (err, headers) => {
      if (err === null && headers !== undefined) {
        headers[':method'] ??= 'POST';
        headers[':path'] ??= '/';
      }
      callback(err, headers);
    });
  };
  parser.onSynHeadFrame = function (this: SpdyParser, type, flags, body, callback) {
    if (type !== SYN_STREAM) return onSynHeadFrame.call(this, type, flags, body, callback);
    this.parseKVs = withRequestLine;
    try {
      onSynHeadFrame.call(this, type, flags, body, callback);
    } finally {
      this.parseKVs = parseKVs;
    }
  };
}

function sinkOf(stream: SpdyStream): ChannelSink {
  return {
    write: (chunk, callback) => {
      stream.write(chunk, (err) => callback(err ?? null));
    },
    end: (callback) => {
      if (stream._writableState.finished || stream._spdyState.aborted) return callback();
      const done = (): void => {
        stream.off('finish', done).off('close', done).off('error', done);
        callback();
      };
      stream.on('finish', done).on('close', done).on('error', done);
      stream.end();
    },
    abort: () => stream.abort(),
  };
}

/** Stream types a remote-command client may open. */
const REMOTE_COMMAND_STREAMS: ReadonlySet<string> = new Set<StreamType>([
  'error',
  'stdin',
  'stdout',
  'stderr',
  'resize',
]);

/** Serves one exec or attach over an upgraded SPDY connection. */
export async function serveSpdyRemoteCommand(
  session: SpdySession,
  dialect: RemoteCommandDialect,
  request: ExecRequest | AttachRequest,
  backend: StreamingBackend,
  options: SpdyHandlerOptions,
): Promise<void> {
  const { logger } = options;
  const expected: StreamType[] = ['error'];
  if (request.stdin) expected.push('stdin');
  if (request.stdout) expected.push('stdout');
  if (request.stderr && !request.tty) expected.push('stderr');
  if (request.tty && dialect.resize) expected.push('resize');

  const streams = await collectStreams(session, expected, options);
  if (streams === null) {
    await session.shutdown({ graceful: false });
    return;
  }
  session.setStreamHandler((stream) => session.refuse(stream));

  const pick = (type: StreamType, wanted: boolean): SpdyStream | null => {
    const stream = streams.get(type);
    if (stream === undefined) return null;
    if (wanted) return stream;
    // Opened although the request did not ask for it: keep the client unblocked, ignore the bytes.
    stream.resume();
    return null;
  };
  const stdinStream = pick('stdin', request.stdin);
  const stdoutStream = pick('stdout', request.stdout);
  const stderrStream = pick('stderr', request.stderr && !request.tty);
  const resizeStream = pick('resize', request.tty);
  const errorStream = streams.get('error');
  if (errorStream === undefined) throw new Error('unreachable: the error stream is always expected');

  const stdin = stdinStream === null ? null : session.readable(stdinStream);
  const stdout = stdoutStream === null ? null : session.writable(stdoutStream);
  const stderr = stderrStream === null ? null : session.writable(stderrStream);
  const resizes = new ResizeEvents();
  if (resizeStream !== null) {
    const decoder = new ResizeDecoder(
      (size) => resizes.emit(size),
      (reason) => logger.debug({ reason }, 'streaming: ignoring resize message'),
    );
    resizeStream.on('data', (chunk: Buffer) => decoder.write(chunk));
  }

  void session.closed.then(() => {
    stdin?.destroy();
    stdout?.destroy(new Error('the client disconnected'));
    stderr?.destroy(new Error('the client disconnected'));
  });

  await runRemoteCommand(
    request,
    {
      stdin,
      stdout,
      stderr,
      resizes,
      finish: async (status) => {
        await Promise.all([closeWritable(stdout), closeWritable(stderr)]);
        const errorOut = session.writable(errorStream);
        const bytes = encodeStatus(status, dialect.status);
        if (bytes !== null) errorOut.write(bytes);
        await closeWritable(errorOut);
        stdin?.destroy();
        await session.shutdown();
      },
    },
    backend,
    logger,
  );
}

/**
 * Accepts the client's streams until every expected type is there. Returns null
 * (after logging why) when the client gives up or takes too long, as kubelet does.
 */
function collectStreams(
  session: SpdySession,
  expected: readonly StreamType[],
  options: SpdyHandlerOptions,
): Promise<Map<StreamType, SpdyStream> | null> {
  const streams = new Map<StreamType, SpdyStream>();
  const replied = new Set<StreamType>();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      const missing = expected.filter((t) => !streams.has(t));
      options.logger.warn(
        { missing },
        `streaming: the client did not open its streams within ${options.streamCreationTimeoutMs} ms; closing`,
      );
      resolve(null);
    }, options.streamCreationTimeoutMs);
    void session.closed.then(() => {
      clearTimeout(timer);
      resolve(null);
    });
    session.setStreamHandler((stream) => {
      const type = headerValue(stream.headers, StreamHeader.StreamType);
      if (!REMOTE_COMMAND_STREAMS.has(type) || streams.has(type as StreamType)) {
        options.logger.debug({ type }, 'streaming: refusing unknown or duplicate stream');
        session.refuse(stream);
        return;
      }
      streams.set(type as StreamType, stream);
      // Like kubelet, start only once every reply is on its way: a command that
      // ends at once must not close the connection before the client has them.
      void session.accept(stream).then(() => {
        replied.add(type as StreamType);
        if (expected.every((t) => replied.has(t))) {
          clearTimeout(timer);
          resolve(streams);
        }
      });
    });
  });
}

/** Serves port forwarding over an upgraded SPDY connection until the client closes it. */
export async function serveSpdyPortForward(
  session: SpdySession,
  request: PortForwardRequest,
  backend: StreamingBackend,
  options: SpdyHandlerOptions,
): Promise<void> {
  const { logger } = options;
  const pending = new Map<string, PendingPair>();
  const forwards = new Set<Promise<void>>();

  session.setStreamHandler((stream) => {
    const headers = stream.headers;
    const type = headerValue(headers, StreamHeader.StreamType);
    const port = parsePort(headerValue(headers, StreamHeader.Port));
    if ((type !== 'data' && type !== 'error') || port === null) {
      logger.debug({ type, port: headerValue(headers, StreamHeader.Port) }, 'streaming: refusing port-forward stream');
      session.refuse(stream);
      return;
    }
    const requestId = portForwardRequestId(headers, type, stream.id);
    let pair = pending.get(requestId);
    if (pair?.[type] !== undefined) {
      session.refuse(stream);
      return;
    }
    void session.accept(stream);
    if (pair === undefined) {
      const timer = setTimeout(() => {
        pending.delete(requestId);
        const message = `timed out waiting for the data and error streams of request ${requestId}`;
        logger.warn({ requestId }, `streaming: ${message}`);
        void failPair(session, newPair, message);
      }, options.streamCreationTimeoutMs);
      const newPair: PendingPair = { timer };
      pair = newPair;
      pending.set(requestId, pair);
    }
    pair[type] = stream;
    if (pair.data !== undefined && pair.error !== undefined) {
      clearTimeout(pair.timer);
      pending.delete(requestId);
      // The data stream's port counts, as in kubelet.
      const dataPort = parsePort(headerValue(pair.data.headers, StreamHeader.Port)) ?? port;
      const forward = forwardPair(session, request, dataPort, pair.data, pair.error, backend, logger);
      forwards.add(forward);
      void forward.finally(() => forwards.delete(forward));
    }
  });

  await session.closed;
  for (const pair of pending.values()) clearTimeout(pair.timer);
  await Promise.allSettled(forwards);
}

interface PendingPair {
  readonly timer: NodeJS.Timeout;
  data?: SpdyStream;
  error?: SpdyStream;
}

/** Kubelet's fallback for old clients without `requestID`: derive it from the stream ids. */
function portForwardRequestId(headers: SpdyHeaders, type: 'data' | 'error', id: number): string {
  const explicit = headerValue(headers, StreamHeader.RequestId);
  if (explicit !== '') return explicit;
  return String(type === 'error' ? id : id - 2);
}

function parsePort(text: string): number | null {
  if (!/^[0-9]{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : null;
}

async function forwardPair(
  session: SpdySession,
  request: PortForwardRequest,
  port: number,
  dataStream: SpdyStream,
  errorStream: SpdyStream,
  backend: StreamingBackend,
  logger: Logger,
): Promise<void> {
  const errorOut = session.writable(errorStream);
  const data = session.duplex(dataStream);
  if (request.ports.length > 0 && !request.ports.includes(port)) {
    errorOut.write(`port ${port} was not requested for forwarding (requested: ${request.ports.join(', ')})`);
  } else {
    try {
      await backend.portForward(request.sandboxId, port, data);
    } catch (e) {
      const err = toHcrError(e);
      logger.warn({ port, code: err.code, err: err.message }, 'streaming: port forward failed');
      errorOut.write(`error forwarding port ${port} to pod sandbox ${request.sandboxId}: ${err.message}`);
    }
  }
  await closeWritable(data);
  data.destroy();
  await closeWritable(errorOut);
}

async function failPair(session: SpdySession, pair: PendingPair, message: string): Promise<void> {
  if (pair.error !== undefined) {
    const errorOut = session.writable(pair.error);
    errorOut.write(message);
    await closeWritable(errorOut);
  }
  if (pair.data !== undefined) pair.data.abort();
}
