// Client sides of the Kubernetes streaming protocols, for tests. They are built
// on the libraries directly (spdy-transport in client mode, the ws client) and
// share no code with the server under test.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import type { Duplex, Writable } from 'node:stream';
import transport, { type SpdyConnection, type SpdyHeaders, type SpdyStream } from 'spdy-transport';
import { WebSocket } from 'ws';
import { errors, type StreamIO, type TerminalSize } from '@hcr/core';
import type { StreamingBackend } from '../../src/streaming/index.js';

/** How the SPDY client behaves. */
export type SpdyClientMode =
  /** spdy-transport as is: request pseudo-headers, SETTINGS, SPDY/3.1 flow control. */
  | 'spdy-transport'
  /**
   * Behaves like client-go's moby/spdystream: SYN_STREAMs carry only the
   * Kubernetes headers, and there is no flow control at all (no SETTINGS, no
   * WINDOW_UPDATE, windows ignored when sending).
   */
  | 'spdystream';

/** TLS trust for https/wss URLs. */
export interface ClientTls {
  readonly ca: Buffer;
}

/** An upgraded SPDY connection. */
export interface SpdyClient {
  readonly conn: SpdyConnection;
  readonly socket: Socket;
  /** The sub-protocol the server chose. */
  readonly protocol: string;
  /** Opens a stream with `headers` and waits for the server's reply (as client-go does). */
  open(headers: SpdyHeaders): Promise<SpdyStream>;
  /** Settles when the server (or we) closed the connection. */
  readonly closed: Promise<void>;
}

/** An HTTP answer other than 101 to an upgrade request. */
export class UpgradeRefused extends Error {
  constructor(
    readonly status: number,
    readonly headers: http.IncomingHttpHeaders,
    readonly body: string,
  ) {
    super(`upgrade refused: HTTP ${status}: ${body.trim()}`);
  }
}

/** Sends the SPDY/3.1 upgrade request for `url` offering `protocols`, and starts a client session. */
export function spdyConnect(
  url: string,
  protocols: readonly string[],
  options: { mode?: SpdyClientMode; tls?: ClientTls; method?: string } = {},
): Promise<SpdyClient> {
  const target = new URL(url);
  const headers: http.OutgoingHttpHeaders = { Connection: 'Upgrade', Upgrade: 'SPDY/3.1' };
  if (protocols.length > 0) headers['X-Stream-Protocol-Version'] = [...protocols];
  return upgrade(target, headers, options.tls, options.method ?? 'POST').then(({ res, socket, head }) => {
    if (head.length > 0) socket.unshift(head);
    const conn = transport.connection.create(socket, { protocol: 'spdy', isServer: false });
    if (options.mode === 'spdystream') behaveLikeSpdystream(conn);
    conn.on('error', () => undefined);
    // spdystream has no SPDY/3.1 session window; spdy-transport enforces one from 3.1 on.
    conn.start(options.mode === 'spdystream' ? 3 : 3.1);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const open = (streamHeaders: SpdyHeaders): Promise<SpdyStream> =>
      new Promise((resolve, reject) => {
        const stream = conn.request({ method: 'POST', path: '/', headers: streamHeaders });
        stream.on('error', () => undefined);
        if (options.mode === 'spdystream') ignoreSendWindow(stream);
        stream.once('response', () => resolve(stream));
        stream.once('close', () => reject(new Error(`stream ${JSON.stringify(streamHeaders)} was refused`)));
      });
    return { conn, socket, protocol: String(res.headers['x-stream-protocol-version'] ?? ''), open, closed };
  });
}

function upgrade(
  target: URL,
  headers: http.OutgoingHttpHeaders,
  tls: ClientTls | undefined,
  method: string,
): Promise<{ res: http.IncomingMessage; socket: Socket; head: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = target.protocol === 'https:' ? https.request : http.request;
    const req = request({
      hostname: target.hostname,
      port: target.port,
      path: target.pathname + target.search,
      method,
      headers,
      agent: false,
      ...(tls === undefined ? {} : { ca: tls.ca }),
    });
    req.once('upgrade', (res, socket, head) => resolve({ res, socket, head }));
    req.once('response', (res) => {
      const body: Buffer[] = [];
      res.on('data', (c: Buffer) => body.push(c));
      res.once('end', () =>
        reject(new UpgradeRefused(res.statusCode ?? 0, res.headers, Buffer.concat(body).toString())),
      );
    });
    req.once('error', reject);
    req.end();
  });
}

/** The internals touched to make spdy-transport's client act like spdystream (see SpdyClientMode). */
interface ClientFramer {
  settingsFrame(options: unknown, callback?: (err: Error | null) => void): void;
  windowUpdateFrame(frame: unknown, callback?: (err: Error | null) => void): void;
  headersToDict(
    headers: SpdyHeaders,
    preprocess: ((headers: SpdyHeaders) => void) | null,
    callback: (err: Error | null, chunks?: unknown) => void,
  ): void;
}

function behaveLikeSpdystream(conn: SpdyConnection): void {
  const framer = conn._spdyState.framer as unknown as ClientFramer;
  framer.settingsFrame = (_options, callback) => callback?.(null);
  framer.windowUpdateFrame = (_frame, callback) => callback?.(null);
  const headersToDict = framer.headersToDict;
  framer.headersToDict = function (this: ClientFramer, headers, preprocess, callback) {
    headersToDict.call(
      this,
      headers,
      (all) => {
        preprocess?.(all);
        for (const name of Object.keys(all)) if (name.startsWith(':')) delete all[name];
      },
      callback,
    );
  };
}

function ignoreSendWindow(stream: SpdyStream): void {
  const send = stream._spdyState.window.send;
  send.on('drain', () => send.update(send.getDelta()));
}

/** Everything a stream carried until the server ended or reset it. */
export function readAll(stream: SpdyStream): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const done = (): void => resolve(Buffer.concat(chunks));
    stream.once('end', done);
    stream.once('close', done);
  });
}

/** What a remote-command client saw. */
export interface RemoteCommandResult {
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  /** Raw bytes of the error channel. */
  readonly error: Buffer;
}

/** A running exec/attach over SPDY, streams opened in client-go's order. */
export interface SpdyRemoteCommand {
  readonly client: SpdyClient;
  readonly stdin: SpdyStream | null;
  /** Sends a terminal size on the resize stream. */
  resize(width: number, height: number): void;
  /** Resolves when stdout, stderr and the error stream have ended. */
  readonly result: Promise<RemoteCommandResult>;
  /** Calls `listener` with every stdout chunk as it arrives. */
  onStdout(listener: (chunk: Buffer) => void): void;
}

/** Opens the streams of an exec or attach the way client-go does (error, stdin, stdout, stderr, resize). */
export async function spdyRemoteCommand(
  url: string,
  streams: { stdin: boolean; stdout: boolean; stderr: boolean; resize: boolean },
  options: { protocols?: readonly string[]; mode?: SpdyClientMode; tls?: ClientTls } = {},
): Promise<SpdyRemoteCommand> {
  const client = await spdyConnect(url, options.protocols ?? ['v4.channel.k8s.io'], options);
  const open = async (type: string, wanted: boolean): Promise<SpdyStream | null> =>
    wanted ? client.open({ streamtype: type }) : null;
  const error = await open('error', true);
  if (error === null) throw new Error('unreachable');
  const stdin = await open('stdin', streams.stdin);
  const stdout = await open('stdout', streams.stdout);
  const stderr = await open('stderr', streams.stderr);
  const resize = await open('resize', streams.resize);
  const empty = Promise.resolve(Buffer.alloc(0));
  const result = Promise.all([
    stdout === null ? empty : readAll(stdout),
    stderr === null ? empty : readAll(stderr),
    readAll(error),
  ]).then(([out, err, status]) => {
    // Done, as client-go: close the connection.
    client.socket.end();
    return { stdout: out, stderr: err, error: status };
  });
  return {
    client,
    stdin,
    resize: (width, height) => {
      if (resize === null) throw new Error('no resize stream');
      resize.write(Buffer.from(`${JSON.stringify({ Width: width, Height: height })}\n`));
    },
    result,
    onStdout: (listener) => stdout?.on('data', listener),
  };
}

/** Parses a v4 error-channel payload. */
export function parseStatus(error: Buffer): {
  status: string;
  reason?: string;
  message?: string;
  code?: number;
  details?: { causes?: { reason?: string; message?: string }[] };
} {
  return JSON.parse(error.toString()) as ReturnType<typeof parseStatus>;
}

/** The exit code a v4 client derives from the status (client-go's errorDecoderV4). */
export function exitCodeOf(error: Buffer): number {
  const status = parseStatus(error);
  if (status.status === 'Success') return 0;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  if (status.reason !== 'NonZeroExitCode' || cause?.message === undefined) {
    throw new Error(`not an exit status: ${error.toString()}`);
  }
  return Number(cause.message);
}

/** A message received on a WebSocket channel. */
export interface ChannelMessage {
  readonly channel: number;
  readonly payload: Buffer;
}

/** A kubelet-style channel WebSocket client. */
export class WsChannelClient {
  /** Messages in arrival order. */
  readonly messages: ChannelMessage[] = [];
  /** Settles with the close code when the connection closes. */
  readonly closed: Promise<number>;

  private constructor(
    readonly ws: WebSocket,
    private readonly base64: boolean,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (data.length === 0) return;
      if (isBinary === base64) throw new Error(`unexpected ${isBinary ? 'binary' : 'text'} message`);
      const first = data[0] ?? 0;
      const channel = base64 ? first - 0x30 : first;
      const body = data.subarray(1);
      this.messages.push({ channel, payload: base64 ? Buffer.from(body.toString(), 'base64') : Buffer.from(body) });
    });
    ws.on('error', () => undefined);
    this.closed = new Promise((resolve) => ws.once('close', (code: number) => resolve(code)));
  }

  /** Connects to `url` (http/https) offering `protocols`; rejects with UpgradeRefused on an HTTP answer. */
  static connect(
    url: string,
    protocols: readonly string[],
    options: { tls?: ClientTls } = {},
  ): Promise<WsChannelClient> {
    const wsUrl = url.replace(/^http/, 'ws');
    const ws = new WebSocket(wsUrl, [...protocols], options.tls === undefined ? {} : { ca: options.tls.ca });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new WsChannelClient(ws, ws.protocol.includes('base64'))));
      ws.once('unexpected-response', (_req, res) => {
        const body: Buffer[] = [];
        res.on('data', (c: Buffer) => body.push(c));
        res.once('end', () =>
          reject(new UpgradeRefused(res.statusCode ?? 0, res.headers, Buffer.concat(body).toString())),
        );
      });
      ws.once('error', reject);
    });
  }

  /** Sends `payload` on `channel`. */
  send(channel: number, payload: Buffer | string): void {
    const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
    if (this.base64) this.ws.send(String.fromCharCode(0x30 + channel) + bytes.toString('base64'));
    else this.ws.send(Buffer.concat([Buffer.of(channel), bytes]));
  }

  /** v5: half-closes `channel`. */
  closeChannel(channel: number): void {
    this.ws.send(Buffer.of(255, channel));
  }

  /** All bytes received on `channel`, concatenated. */
  channel(channel: number): Buffer {
    return Buffer.concat(this.messages.filter((m) => m.channel === channel).map((m) => m.payload));
  }
}

/** One forwarded connection over SPDY: sends `request`, half-closes, returns what came back. */
export async function spdyForward(
  client: SpdyClient,
  port: number,
  requestId: string,
  request: Buffer | string,
): Promise<{ data: Buffer; error: string }> {
  const headers = { port: String(port), requestid: requestId };
  const error = await client.open({ ...headers, streamtype: 'error' });
  error.end();
  const errorText = readAll(error);
  const data = await client.open({ ...headers, streamtype: 'data' });
  const received = readAll(data);
  data.write(typeof request === 'string' ? Buffer.from(request) : request);
  data.end();
  return { data: await received, error: (await errorText).toString() };
}

/** SHA-256 of `data`, hex. */
export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------
// The other end: a StreamingBackend that runs real host processes and connects
// to real loopback ports, so the server is tested against real pipes, exit
// codes, terminals and sockets.

/** Python program giving a command a real pseudo-terminal; fd 3 carries "rows cols" resize lines. */
const PTY_HELPER = `
import os, select, struct, subprocess, sys, fcntl, termios
master, slave = os.openpty()
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
os.close(slave)
fds, pending = [master, 0, 3], b''
def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]
while True:
    ready = select.select(fds, [], [])[0]
    if 3 in ready:
        data = os.read(3, 1024)
        if not data:
            fds.remove(3)
        pending += data
        while b'\\n' in pending:
            line, pending = pending.split(b'\\n', 1)
            rows, cols = (int(v) for v in line.split())
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
        continue
    if 0 in ready:
        data = os.read(0, 65536)
        if data:
            write_all(master, data)
        else:
            fds.remove(0)
    if master in ready:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        write_all(1, data)
sys.exit(child.wait())
`;

/** One call the backend received. */
export type BackendCall =
  | { readonly op: 'exec'; readonly containerId: string; readonly cmd: readonly string[]; readonly tty: boolean }
  | { readonly op: 'attach'; readonly containerId: string; readonly tty: boolean }
  | { readonly op: 'portForward'; readonly sandboxId: string; readonly port: number };

/** Runs `exec` as host processes, `attach` against processes started with `startContainer`, forwards to loopback. */
export class ProcessBackend implements StreamingBackend {
  readonly calls: BackendCall[] = [];
  /** Terminal sizes received, in order. */
  readonly resizes: TerminalSize[] = [];
  /** Fires 'resize' for every size received and 'exit' with each child process's pid. */
  readonly events = new EventEmitter();
  private readonly children = new Set<ChildProcess>();
  private readonly containers = new Map<string, ChildProcess>();

  /** Starts a long-running "container" whose stdio `attach` connects to. */
  startContainer(containerId: string, cmd: readonly string[]): ChildProcess {
    const child = this.spawn(cmd, false);
    this.containers.set(containerId, child);
    return child;
  }

  /** Processes still running. */
  running(): ChildProcess[] {
    return [...this.children];
  }

  /** Kills whatever is left (test cleanup) and waits for it. */
  async killAll(): Promise<void> {
    await Promise.all(
      [...this.children].map(async (child) => {
        child.kill('SIGKILL');
        if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
      }),
    );
  }

  async exec(containerId: string, cmd: readonly string[], io: StreamIO): Promise<{ exitCode: number }> {
    this.calls.push({ op: 'exec', containerId, cmd: [...cmd], tty: io.tty });
    if (containerId === 'missing') throw errors.notFound(`container "${containerId}" not found`);
    const child = this.spawn(cmd, io.tty);
    if (io.tty) {
      io.onResize((size) => {
        this.resizes.push(size);
        (child.stdio[3] as Writable).write(`${size.height} ${size.width}\n`);
        this.events.emit('resize', size);
      });
    }
    this.connect(child, io, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    return { exitCode: code ?? 128 + (signal === null ? 0 : osConstants.signals[signal]) };
  }

  async attach(containerId: string, io: StreamIO): Promise<void> {
    this.calls.push({ op: 'attach', containerId, tty: io.tty });
    const child = this.containers.get(containerId);
    if (child === undefined) throw errors.notFound(`container "${containerId}" not found`);
    // A client that goes away detaches; the container keeps running.
    await new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      this.connect(child, io, () => {
        if (io.stdin !== null && child.stdin !== null) io.stdin.unpipe(child.stdin);
        if (io.stdout !== null) child.stdout?.unpipe(io.stdout);
        if (io.stderr !== null) child.stderr?.unpipe(io.stderr);
        resolve();
      });
    });
  }

  async portForward(sandboxId: string, port: number, stream: Duplex): Promise<void> {
    this.calls.push({ op: 'portForward', sandboxId, port });
    const socket = connect({ host: '127.0.0.1', port });
    try {
      await once(socket, 'connect');
    } catch (e) {
      throw errors.unavailable(`cannot connect to port ${port}: ${(e as Error).message}`, e);
    }
    socket.on('error', () => socket.destroy());
    stream.on('error', () => socket.destroy());
    stream.pipe(socket);
    socket.pipe(stream);
    await once(socket, 'close');
  }

  private spawn(cmd: readonly string[], tty: boolean): ChildProcess {
    const [file, ...args] = tty ? ['python3', '-c', PTY_HELPER, ...cmd] : cmd;
    if (file === undefined) throw errors.invalidArgument('empty command');
    const child = spawn(file, args, { stdio: tty ? ['pipe', 'pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe'] });
    this.children.add(child);
    child.once('exit', () => {
      this.children.delete(child);
      this.events.emit('exit', child.pid);
    });
    for (const s of child.stdio) s?.on('error', () => undefined);
    return child;
  }

  /** Wires `io` to the process; `gone` runs when the client goes away (its output stream closes early). */
  private connect(child: ChildProcess, io: StreamIO, gone: () => void): void {
    const { stdin, stdout, stderr } = child;
    if (stdin === null || stdout === null || stderr === null) throw new Error('child without pipes');
    if (io.stdin === null) stdin.end();
    else io.stdin.pipe(stdin);
    if (io.stdout === null) stdout.resume();
    else stdout.pipe(io.stdout, { end: false });
    if (io.stderr === null) stderr.resume();
    else stderr.pipe(io.stderr, { end: false });
    io.stdout?.once('close', gone);
    io.stderr?.once('close', gone);
  }
}

/** A loopback HTTP server to forward to; answers every request with its path. */
export async function startHttpTarget(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`hello from ${req.url ?? ''}\n`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Polls `predicate` until it holds; fails after `timeoutMs`. */
export async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A self-signed certificate for 127.0.0.1 (openssl), written to `dir`. */
export async function selfSignedCert(dir: string): Promise<{ cert: string; key: string; ca: Buffer }> {
  const cert = `${dir}/tls.crt`;
  const key = `${dir}/tls.key`;
  const openssl = spawn(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1'],
      ...['-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert],
    ],
    { stdio: 'ignore' },
  );
  const [code] = (await once(openssl, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`openssl failed with ${code}`);
  return { cert, key, ca: await readFile(cert) };
}
