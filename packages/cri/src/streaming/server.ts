import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { errors, silentLogger, toHcrError, type HcrError, type Logger } from '@hcr/core';
import type { StreamingBackend } from './backend.js';
import { endSocket } from './channels.js';
import {
  PORT_FORWARD_PROTOCOL,
  SPDY_REMOTE_COMMAND,
  WS_PORT_FORWARD,
  WS_REMOTE_COMMAND,
  headerTokens,
  negotiate,
} from './protocol.js';
import { RequestCache, type PortForwardRequest, type StreamingRequest } from './request-cache.js';
import { SpdySession, serveSpdyPortForward, serveSpdyRemoteCommand, type SpdyHandlerOptions } from './spdy.js';
import { serveWsPortForward, serveWsRemoteCommand } from './websocket.js';

/** Configuration of the streaming server. */
export interface StreamingServerOptions {
  /** Address to listen on; default 127.0.0.1. */
  readonly address?: string | undefined;
  /** TCP port; default 0 (an ephemeral port, reported in the URLs). */
  readonly port?: number | undefined;
  /** Host written into URLs; required when `address` is a wildcard (0.0.0.0, ::). */
  readonly advertiseAddress?: string | undefined;
  /** PEM file paths (or the PEM text itself); when given the server speaks https and URLs say so. */
  readonly tls?: { readonly cert: string; readonly key: string } | undefined;
  /** How long a URL stays valid; default 60 s, as kubelet. */
  readonly tokenTtlMs?: number | undefined;
  /** Most URLs waiting for their client at once; default 1000, as kubelet. */
  readonly maxInFlight?: number | undefined;
  /** How long an upgraded client has to open its streams; default 30 s, as kubelet. */
  readonly streamCreationTimeoutMs?: number | undefined;
  /** A connection with no traffic for this long is dropped; default 4 h, as kubelet. */
  readonly idleTimeoutMs?: number | undefined;
  readonly logger?: Logger | undefined;
}

/** Fields of a CRI ExecRequest the streaming server needs. */
export interface ExecUrlRequest {
  readonly containerId: string;
  readonly cmd: readonly string[];
  readonly tty: boolean;
  readonly stdin: boolean;
  readonly stdout: boolean;
  readonly stderr: boolean;
}

/** Fields of a CRI AttachRequest the streaming server needs. */
export interface AttachUrlRequest {
  readonly containerId: string;
  readonly tty: boolean;
  readonly stdin: boolean;
  readonly stdout: boolean;
  readonly stderr: boolean;
}

/** Fields of a CRI PortForwardRequest the streaming server needs. */
export interface PortForwardUrlRequest {
  readonly sandboxId: string;
  readonly ports: readonly number[];
}

/** How long stop() waits for running sessions to wind down after their connections were dropped. */
const STOP_GRACE_MS = 5_000;

const ROUTE = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]+)$/;

/**
 * The Kubernetes streaming server: serves the URLs CRI Exec, Attach and
 * PortForward return, over SPDY/3.1 and WebSocket, like kubelet's (and
 * containerd's) streaming server. Each URL carries a random single-use token
 * that expires; the request itself stays here.
 */
export class StreamingServer {
  private readonly logger: Logger;
  private readonly cache: RequestCache;
  private readonly handlerOptions: SpdyHandlerOptions;
  private readonly idleTimeoutMs: number;
  private readonly wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (_offered, req) => this.wsProtocols.get(req) ?? false,
  });
  private readonly wsProtocols = new WeakMap<http.IncomingMessage, string>();
  private readonly upgraded = new Set<Duplex>();
  private readonly sessions = new Set<Promise<void>>();
  private server: http.Server | null = null;
  private base: string | null = null;

  constructor(
    private readonly options: StreamingServerOptions,
    private readonly backend: StreamingBackend,
  ) {
    this.logger = (options.logger ?? silentLogger).child({ component: 'streaming' });
    const tokenTtlMs = options.tokenTtlMs ?? 60_000;
    const maxInFlight = options.maxInFlight ?? 1000;
    if (!(tokenTtlMs > 0)) throw errors.invalidArgument(`tokenTtlMs must be positive, got ${tokenTtlMs}`, 'tokenTtlMs');
    if (!(maxInFlight > 0))
      throw errors.invalidArgument(`maxInFlight must be positive, got ${maxInFlight}`, 'maxInFlight');
    this.cache = new RequestCache(tokenTtlMs, maxInFlight);
    this.handlerOptions = { streamCreationTimeoutMs: options.streamCreationTimeoutMs ?? 30_000, logger: this.logger };
    this.idleTimeoutMs = options.idleTimeoutMs ?? 4 * 60 * 60_000;
    const address = this.address();
    if (isWildcard(address) && options.advertiseAddress === undefined) {
      throw errors.invalidArgument(
        `the streaming server listens on ${address}; set advertiseAddress to the host clients should connect to`,
        'advertiseAddress',
      );
    }
  }

  /** Listens; rejects with an HcrError when the address is taken or the TLS files are unusable. */
  async start(): Promise<void> {
    if (this.server !== null) throw errors.failedPrecondition('the streaming server is already started');
    const server = await this.createServer();
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.onRequest(req, res));
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    const address = this.address();
    const port = this.options.port ?? 0;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, address, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((e: unknown) => {
      throw errors.unavailable(`the streaming server cannot listen on ${hostPort(address, port)}: ${message(e)}`, e);
    });
    server.on('error', (err) => this.logger.error({ err: err.message }, 'streaming: server error'));
    this.server = server;
    const bound = (server.address() as AddressInfo).port;
    const scheme = this.options.tls === undefined ? 'http' : 'https';
    this.base = `${scheme}://${hostPort(this.options.advertiseAddress ?? address, bound)}`;
    this.logger.info({ url: this.base }, 'streaming: server listening');
  }

  /** Drops every connection (their backends see their streams fail) and stops listening. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.server = null;
    this.base = null;
    this.cache.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    for (const socket of this.upgraded) socket.destroy();
    for (const ws of this.wss.clients) ws.terminate();
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), STOP_GRACE_MS);
    });
    const settled = await Promise.race([Promise.allSettled([...this.sessions]).then(() => true), grace]);
    clearTimeout(timer);
    if (!settled) {
      this.logger.warn(
        { sessions: this.sessions.size },
        'streaming: backends still running after their clients were dropped',
      );
    }
    await closed;
  }

  /** Sessions being served right now (for metrics and leak checks). */
  get activeSessions(): number {
    return this.sessions.size;
  }

  /** The URL for CRI ExecResponse.url; throws an HcrError (InvalidArgument, ResourceExhausted, FailedPrecondition). */
  execUrl(req: ExecUrlRequest): string {
    checkRemoteCommand(req.containerId, req);
    if (req.cmd.length === 0) throw errors.invalidArgument('cmd is required', 'cmd');
    return this.issue({
      kind: 'exec',
      containerId: req.containerId,
      cmd: [...req.cmd],
      tty: req.tty,
      stdin: req.stdin,
      stdout: req.stdout,
      stderr: req.stderr,
    });
  }

  /** The URL for CRI AttachResponse.url; throws like execUrl. */
  attachUrl(req: AttachUrlRequest): string {
    checkRemoteCommand(req.containerId, req);
    return this.issue({
      kind: 'attach',
      containerId: req.containerId,
      tty: req.tty,
      stdin: req.stdin,
      stdout: req.stdout,
      stderr: req.stderr,
    });
  }

  /** The URL for CRI PortForwardResponse.url; throws like execUrl. */
  portForwardUrl(req: PortForwardUrlRequest): string {
    if (req.sandboxId === '') throw errors.invalidArgument('pod_sandbox_id is required', 'pod_sandbox_id');
    for (const port of req.ports) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw errors.invalidArgument(`port ${port} is out of range 1-65535`, 'port');
      }
    }
    return this.issue({ kind: 'portforward', sandboxId: req.sandboxId, ports: [...req.ports] });
  }

  private issue(request: StreamingRequest): string {
    if (this.base === null) throw errors.failedPrecondition('the streaming server is not started');
    return `${this.base}/${request.kind}/${this.cache.insert(request)}`;
  }

  private address(): string {
    return this.options.address ?? '127.0.0.1';
  }

  private async createServer(): Promise<http.Server> {
    const tls = this.options.tls;
    if (tls === undefined) return http.createServer();
    let cert: Buffer;
    let key: Buffer;
    try {
      [cert, key] = await Promise.all([pem(tls.cert), pem(tls.key)]);
    } catch (e) {
      throw errors.invalidArgument(`cannot read the streaming TLS certificate or key: ${message(e)}`, 'tls');
    }
    try {
      return https.createServer({ cert, key });
    } catch (e) {
      throw errors.invalidArgument(`the streaming TLS certificate or key is not usable: ${message(e)}`, 'tls');
    }
  }

  /** Finds the request a URL's token stands for, consuming the token (even when the upgrade then fails, as kubelet). */
  private claim(req: http.IncomingMessage): { request: StreamingRequest; url: URL } | Rejection {
    const url = new URL(req.url ?? '/', 'http://streaming.invalid');
    const route = ROUTE.exec(url.pathname);
    if (route === null)
      return { status: 404, message: 'not found: streaming URLs are /exec/, /attach/ or /portforward/<token>' };
    if (req.method !== 'GET' && req.method !== 'POST')
      return { status: 405, message: `method ${req.method} not allowed` };
    const request = this.cache.consume(route[2] ?? '');
    if (request === undefined || request.kind !== route[1]) {
      return {
        status: 404,
        message: 'not found: this streaming URL is unknown, already used or expired; ask the runtime for a new one',
      };
    }
    return { request, url };
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const claim = this.claim(req);
    const { status, message: text } =
      'status' in claim
        ? claim
        : { status: 400, message: 'this URL needs a connection upgrade: Upgrade: SPDY/3.1 or Upgrade: websocket' };
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
    res.end(`${text}\n`);
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', (err) => this.logger.debug({ err: err.message }, 'streaming: connection failed'));
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
    if (this.server === null) return void socket.destroy();
    (socket as Socket).setNoDelay(true);
    this.dropWhenIdle(socket);

    const claim = this.claim(req);
    if ('status' in claim) return reject(socket, claim);
    const upgrade = headerTokens(req.headers.upgrade).map((p) => p.toLowerCase());
    if (upgrade.includes('websocket')) return this.upgradeWebSocket(req, socket, head, claim.request, claim.url);
    if (upgrade.includes('spdy/3.1')) return this.upgradeSpdy(req, socket, head, claim.request);
    reject(socket, {
      status: 400,
      message: `unable to upgrade: unsupported protocol ${JSON.stringify(req.headers.upgrade ?? '')}; use SPDY/3.1 or websocket`,
    });
  }

  private upgradeSpdy(req: http.IncomingMessage, socket: Duplex, head: Buffer, request: StreamingRequest): void {
    const offered = headerTokens(req.headers['x-stream-protocol-version']);
    const supported = request.kind === 'portforward' ? [PORT_FORWARD_PROTOCOL] : [...SPDY_REMOTE_COMMAND.keys()];
    if (offered.length === 0) {
      return reject(socket, { status: 400, message: 'unable to upgrade: X-Stream-Protocol-Version is required' });
    }
    const protocol = negotiate(offered, supported);
    if (protocol === undefined) {
      return reject(socket, {
        status: 403,
        message: `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server accepts [${supported.join(' ')}]`,
        headers: supported.map((p) => `X-Accepted-Stream-Protocol-Versions: ${p}`),
      });
    }
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n' +
        `X-Stream-Protocol-Version: ${protocol}\r\n\r\n`,
    );
    if (head.length > 0) socket.unshift(head);
    const logger = this.sessionLogger(request, 'spdy', protocol);
    const session = new SpdySession(socket, logger);
    const options = { ...this.handlerOptions, logger };
    if (request.kind === 'portforward') {
      this.track(serveSpdyPortForward(session, request, this.backend, options), logger);
    } else {
      const dialect = SPDY_REMOTE_COMMAND.get(protocol);
      if (dialect === undefined) throw new Error(`unreachable: negotiated ${protocol} has no dialect`);
      this.track(serveSpdyRemoteCommand(session, dialect, request, this.backend, options), logger);
    }
  }

  private upgradeWebSocket(
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    request: StreamingRequest,
    url: URL,
  ): void {
    const offered = headerTokens(req.headers['sec-websocket-protocol']);
    const table: ReadonlyMap<string, unknown> = request.kind === 'portforward' ? WS_PORT_FORWARD : WS_REMOTE_COMMAND;
    const protocol =
      offered.length === 0
        ? ''
        : negotiate(
            offered,
            [...table.keys()].filter((p) => p !== ''),
          );
    if (protocol === undefined) {
      return reject(socket, {
        status: 403,
        message: `unable to upgrade: requested protocol(s) [${offered.join(' ')}] are not supported; supported: [${[...table.keys()].filter((p) => p !== '').join(' ')}]`,
      });
    }
    let ports: readonly number[] = [];
    if (request.kind === 'portforward') {
      const parsed = wsPorts(request, url);
      if ('status' in parsed) return reject(socket, parsed);
      ports = parsed.ports;
    }
    this.wsProtocols.set(req, protocol);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      // ws clears the socket's timeout while taking it over.
      this.dropWhenIdle(socket);
      this.serveWebSocket(ws, request, protocol, ports);
    });
  }

  private dropWhenIdle(socket: Duplex): void {
    (socket as Socket).setTimeout(this.idleTimeoutMs, () => {
      this.logger.info({ idleMs: this.idleTimeoutMs }, 'streaming: dropping an idle connection');
      socket.destroy();
    });
  }

  private serveWebSocket(ws: WebSocket, request: StreamingRequest, protocol: string, ports: readonly number[]): void {
    const logger = this.sessionLogger(request, 'websocket', protocol || '(none)');
    if (request.kind !== 'portforward') {
      const dialect = WS_REMOTE_COMMAND.get(protocol);
      if (dialect === undefined) throw new Error(`unreachable: negotiated ${protocol} has no dialect`);
      this.track(serveWsRemoteCommand(ws, dialect, request, this.backend, logger), logger);
      return;
    }
    const base64 = WS_PORT_FORWARD.get(protocol);
    if (base64 === undefined) throw new Error(`unreachable: negotiated ${protocol} has no dialect`);
    this.track(serveWsPortForward(ws, base64, request, ports, this.backend, logger), logger);
  }

  private sessionLogger(request: StreamingRequest, transport: string, protocol: string): Logger {
    const target =
      request.kind === 'portforward' ? { sandboxId: request.sandboxId } : { containerId: request.containerId };
    const logger = this.logger.child({ op: request.kind, transport, protocol, ...target });
    logger.debug({}, 'streaming: session started');
    return logger;
  }

  private track(session: Promise<void>, logger: Logger): void {
    const tracked = session.then(
      () => logger.debug({}, 'streaming: session ended'),
      (e: unknown) => {
        const err: HcrError = toHcrError(e);
        logger.error({ code: err.code, err: err.message }, 'streaming: session failed');
      },
    );
    this.sessions.add(tracked);
    void tracked.finally(() => this.sessions.delete(tracked));
  }
}

interface Rejection {
  readonly status: number;
  readonly message: string;
  /** Extra raw header lines. */
  readonly headers?: readonly string[];
}

/** Answers an upgrade request with a plain HTTP error and closes the connection. */
function reject(socket: Duplex, rejection: Rejection): void {
  const body = `${rejection.message}\n`;
  const lines = [
    `HTTP/1.1 ${rejection.status} ${http.STATUS_CODES[rejection.status] ?? 'Error'}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...(rejection.headers ?? []),
  ];
  endSocket(socket, `${lines.join('\r\n')}\r\n\r\n${body}`);
}

function checkRemoteCommand(
  containerId: string,
  req: { readonly tty: boolean; readonly stdin: boolean; readonly stdout: boolean; readonly stderr: boolean },
): void {
  if (containerId === '') throw errors.invalidArgument('container_id is required', 'container_id');
  if (!req.stdin && !req.stdout && !req.stderr) {
    throw errors.invalidArgument('one of stdin, stdout, or stderr must be set');
  }
  if (req.tty && req.stderr) {
    throw errors.invalidArgument('tty and stderr cannot both be set (a TTY merges stderr into stdout)', 'stderr');
  }
}

/**
 * Ports of a kubelet-style WebSocket port forward: those of the CRI request, or,
 * when it named none, the `port` query parameters (as kubelet's V4 options).
 */
function wsPorts(request: PortForwardRequest, url: URL): { ports: readonly number[] } | Rejection {
  if (request.ports.length > 0) return { ports: request.ports };
  const ports: number[] = [];
  for (const text of url.searchParams.getAll('port').flatMap((v) => v.split(','))) {
    const port = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
    if (!(port >= 1 && port <= 65535))
      return { status: 400, message: `unable to parse ${JSON.stringify(text)} as a port` };
    ports.push(port);
  }
  if (ports.length === 0) return { status: 400, message: 'query parameter "port" is required' };
  return { ports };
}

/** PEM text given inline, or read from the file it names. */
async function pem(value: string): Promise<Buffer> {
  return value.trimStart().startsWith('-----BEGIN ') ? Buffer.from(value) : readFile(value);
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::' || address === '';
}

function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
