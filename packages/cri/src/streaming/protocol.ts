import { StringDecoder } from 'node:string_decoder';
import { match } from 'ts-pattern';
import type { ErrorCode, HcrError, TerminalSize } from '@hcr/core';

// Wire constants of the Kubernetes streaming protocols, as kubelet and
// client-go define them (k8s.io/apimachinery/pkg/util/remotecommand,
// k8s.io/api/core/v1 stream headers, pkg/kubelet/cri/streaming).

/** Remote-command sub-protocol names. */
export const RemoteCommandProtocol = {
  V5: 'v5.channel.k8s.io',
  V4: 'v4.channel.k8s.io',
  V3: 'v3.channel.k8s.io',
  V2: 'v2.channel.k8s.io',
  V1: 'channel.k8s.io',
} as const;

/** Port-forward sub-protocol name (SPDY `X-Stream-Protocol-Version`). */
export const PORT_FORWARD_PROTOCOL = 'portforward.k8s.io';

/** SPDY stream headers (lower case, as SPDY carries them). */
export const StreamHeader = {
  StreamType: 'streamtype',
  Port: 'port',
  RequestId: 'requestid',
} as const;

/** Values of the `streamType` header. */
export type StreamType = 'error' | 'stdin' | 'stdout' | 'stderr' | 'resize' | 'data';

/** WebSocket channel numbers of remote command (the first three match POSIX file descriptors). */
export const Channel = { Stdin: 0, Stdout: 1, Stderr: 2, Error: 3, Resize: 4, Close: 255 } as const;

/** How a negotiated remote-command dialect behaves. */
export interface RemoteCommandDialect {
  /** v4+: the error channel carries a JSON metav1.Status; before: a plain message, only on failure. */
  readonly status: 'json' | 'text';
  /** v3+: a resize stream exists when a TTY is requested. */
  readonly resize: boolean;
  /** WebSocket only: messages are `'0'+channel` then base64 text instead of binary. */
  readonly base64: boolean;
  /** v5 WebSocket: the client may half-close a channel with `[255, channel]`. */
  readonly closeSignal: boolean;
}

/** SPDY remote-command protocols HCR serves, in kubelet's order of preference. */
export const SPDY_REMOTE_COMMAND: ReadonlyMap<string, RemoteCommandDialect> = new Map([
  [RemoteCommandProtocol.V4, { status: 'json', resize: true, base64: false, closeSignal: false }],
  [RemoteCommandProtocol.V3, { status: 'text', resize: true, base64: false, closeSignal: false }],
  [RemoteCommandProtocol.V2, { status: 'text', resize: false, base64: false, closeSignal: false }],
  [RemoteCommandProtocol.V1, { status: 'text', resize: false, base64: false, closeSignal: false }],
]);

/**
 * WebSocket remote-command protocols. The empty name is a client that offered no
 * sub-protocol, which kubelet serves as binary `channel.k8s.io`. Kubelet opens the
 * resize channel for every WebSocket dialect.
 */
export const WS_REMOTE_COMMAND: ReadonlyMap<string, RemoteCommandDialect> = new Map([
  [RemoteCommandProtocol.V5, { status: 'json', resize: true, base64: false, closeSignal: true }],
  [RemoteCommandProtocol.V4, { status: 'json', resize: true, base64: false, closeSignal: false }],
  ['v4.base64.channel.k8s.io', { status: 'json', resize: true, base64: true, closeSignal: false }],
  [RemoteCommandProtocol.V1, { status: 'text', resize: true, base64: false, closeSignal: false }],
  ['base64.channel.k8s.io', { status: 'text', resize: true, base64: true, closeSignal: false }],
  ['', { status: 'text', resize: true, base64: false, closeSignal: false }],
]);

/**
 * WebSocket port-forward protocols, mapped to whether they are base64: kubelet's
 * channel pairs (data 2i, error 2i+1, each opened by the port as two
 * little-endian bytes). kubectl's `SPDY/3.1+portforward.k8s.io` tunnel is not
 * among them: only the API server receives it, and it speaks plain SPDY to the
 * runtime; a client offering it gets 403 and falls back to SPDY.
 */
export const WS_PORT_FORWARD: ReadonlyMap<string, boolean> = new Map([
  [RemoteCommandProtocol.V4, false],
  ['v4.base64.channel.k8s.io', true],
  [PORT_FORWARD_PROTOCOL, false],
  ['', false],
]);

/** Splits repeated and comma-separated header values into a list of tokens. */
export function headerTokens(value: string | readonly string[] | undefined): string[] {
  const values = value === undefined ? [] : typeof value === 'string' ? [value] : value;
  return values.flatMap((v) => v.split(',')).flatMap((v) => (v.trim() === '' ? [] : [v.trim()]));
}

/** The first protocol the client offered that the server supports (the client's order wins, as in kubelet). */
export function negotiate(offered: readonly string[], supported: Iterable<string>): string | undefined {
  const server = new Set(supported);
  return offered.find((p) => server.has(p));
}

/** First value of a SPDY header. */
export function headerValue(headers: Readonly<Record<string, string | string[] | undefined>>, name: string): string {
  const v = headers[name];
  return (Array.isArray(v) ? v[0] : v) ?? '';
}

/** A Kubernetes `metav1.Status`, the shape the error channel carries from v4 on. */
export interface KubeStatus {
  readonly metadata: Record<string, never>;
  readonly status: 'Success' | 'Failure';
  readonly message?: string;
  readonly reason?: string;
  readonly details?: { readonly causes: readonly { readonly reason?: string; readonly message: string }[] };
  readonly code?: number;
}

/** The status of a command that ended well (or an attach that ended). */
export function successStatus(): KubeStatus {
  return { metadata: {}, status: 'Success' };
}

/** The status clients turn into their own exit code: reason `NonZeroExitCode`, cause `ExitCode`. */
export function exitCodeStatus(exitCode: number): KubeStatus {
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: exit status ${exitCode}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] },
  };
}

/** The status reporting that the runtime could not run or attach (the client prints `message`). */
export function errorStatus(error: HcrError, what: string): KubeStatus {
  const [code, reason] = httpClass(error.code);
  const message = `${what}: ${error.message}`;
  return { metadata: {}, status: 'Failure', message, reason, details: { causes: [{ message }] }, code };
}

function httpClass(code: ErrorCode): readonly [number, string] {
  return match(code)
    .with('NotFound', () => [404, 'NotFound'] as const)
    .with('AlreadyExists', () => [409, 'AlreadyExists'] as const)
    .with('InvalidArgument', () => [400, 'BadRequest'] as const)
    .with('FailedPrecondition', () => [409, 'Conflict'] as const)
    .with('Unsupported', () => [400, 'BadRequest'] as const)
    .with('Unavailable', () => [503, 'ServiceUnavailable'] as const)
    .with('DeadlineExceeded', () => [504, 'Timeout'] as const)
    .with('ResourceExhausted', () => [429, 'TooManyRequests'] as const)
    .with('Internal', () => [500, 'InternalError'] as const)
    .exhaustive();
}

/**
 * Bytes to write on the error channel, or null for nothing: before v4 kubelet
 * writes only a failure's message, and success is an empty, closed channel.
 */
export function encodeStatus(status: KubeStatus, format: RemoteCommandDialect['status']): Buffer | null {
  if (format === 'json') return Buffer.from(JSON.stringify(status));
  return status.status === 'Success' ? null : Buffer.from(status.message ?? 'unknown error');
}

/** Largest pending resize text kept while waiting for the end of a JSON object. */
const MAX_RESIZE_TEXT = 4096;

/**
 * Turns the resize stream (JSON objects `{"Width":w,"Height":h}`, one after the
 * other, split anywhere by the transport) into terminal sizes.
 */
export class ResizeDecoder {
  private readonly text = new StringDecoder('utf8');
  private pending = '';

  constructor(
    private readonly onSize: (size: TerminalSize) => void,
    private readonly onInvalid: (reason: string) => void,
  ) {}

  /** Feeds the next bytes of the stream. */
  write(chunk: Buffer): void {
    this.pending += this.text.write(chunk);
    for (;;) {
      this.pending = this.pending.trimStart();
      const end = objectEnd(this.pending);
      if (end === 'invalid')
        return this.reject(`expected a JSON object, got ${JSON.stringify(this.pending.slice(0, 40))}`);
      if (end === 'incomplete') {
        if (this.pending.length > MAX_RESIZE_TEXT) this.reject('resize message larger than 4 KiB');
        return;
      }
      const object = this.pending.slice(0, end);
      this.pending = this.pending.slice(end);
      this.decode(object);
    }
  }

  private decode(object: string): void {
    let value: unknown;
    try {
      value = JSON.parse(object);
    } catch (e) {
      this.onInvalid(`invalid JSON: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    const size = value as { Width?: unknown; Height?: unknown };
    if (!isDimension(size.Width) || !isDimension(size.Height)) {
      this.onInvalid(`not a terminal size: ${object}`);
      return;
    }
    this.onSize({ width: size.Width, height: size.Height });
  }

  private reject(reason: string): void {
    this.pending = '';
    this.onInvalid(reason);
  }
}

function isDimension(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffff;
}

/** Index just past the first complete top-level JSON object of `s`. */
function objectEnd(s: string): number | 'incomplete' | 'invalid' {
  if (s === '') return 'incomplete';
  if (s[0] !== '{') return 'invalid';
  let depth = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return 'incomplete';
}
