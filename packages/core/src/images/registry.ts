/**
 * An OCI Distribution client over Node's fetch: manifests and blobs, auth
 * challenges, retries, and containerd-style mirrors (hosts.toml in spirit).
 */
import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { errors, HcrError, isHcrError } from '../errors.js';
import type { Logger } from '../logger.js';
import {
  basicAuthorization,
  type BearerToken,
  type Challenge,
  type Credentials,
  fetchBearerToken,
  parseChallenges,
  serverAddressHost,
} from './auth.js';
import { sha256Digest } from './digest.js';
import { MANIFEST_ACCEPT, MANIFEST_MAX_BYTES } from './manifest.js';
import { DOCKER_HUB_DOMAIN, type ImageReference } from './reference.js';

/** How to reach one registry host (the key of {@link RegistryConfig}). */
export interface RegistryHostConfig {
  /** Endpoints tried in order before the host itself, e.g. `http://127.0.0.1:5000`. */
  readonly mirrors?: readonly string[];
  /** Talk plain HTTP to the host itself (loopback hosts always are). */
  readonly insecure?: boolean;
  /**
   * Regex → replacement on the repository path, applied on mirrors (first
   * matching rule wins; `$1` etc. refer to groups). The host itself always
   * sees the original path.
   */
  readonly rewrite?: Readonly<Record<string, string>>;
  /** The host's own endpoint, replacing the default (`https://<host>`, `https://registry-1.docker.io` for docker.io). */
  readonly server?: string;
}

/** Per-registry-host settings, keyed by host as references spell it (`docker.io`, `registry.k8s.io`, `host:5000`). */
export type RegistryConfig = Readonly<Record<string, RegistryHostConfig>>;

/** One place an image can be fetched from. */
export interface Endpoint {
  /** API base URL ending in `/v2`. */
  readonly base: string;
  readonly mirror: boolean;
  /** For messages: `mirror http://127.0.0.1:5000` or `registry.k8s.io`. */
  readonly label: string;
  /** The repository path on this endpoint (mirror rewrites applied). */
  repository(path: string): string;
  /** Credentials to present here, if any: never the pull's credentials on a mirror of another host. */
  credentials(creds: Credentials | null, serverAddress: string): Credentials | null;
}

/** Retry and timeout settings of a {@link RegistryClient}. */
export interface RegistryClientOptions {
  readonly config: RegistryConfig;
  readonly logger: Logger;
  /** Attempts per request on transient failures (5xx, 429, connection resets). */
  readonly attempts?: number;
  /** First backoff delay; doubled each attempt, with jitter. */
  readonly backoffMs?: number;
  /** How long to wait for response headers. */
  readonly headersTimeoutMs?: number;
  /** How long a body may stall before the transfer is aborted and retried. */
  readonly idleTimeoutMs?: number;
}

/** The pull's credentials and the registry address they were given for. */
export interface PullAuth {
  readonly creds: Credentials;
  readonly serverAddress: string;
}

/** A manifest or index as fetched. */
export interface FetchedManifest {
  readonly bytes: Buffer;
  readonly digest: string;
  readonly contentType: string;
}

/** A failure worth retrying: the wrapped error is what the caller sees when attempts run out. */
export class TransientError extends Error {
  override readonly name = 'TransientError';
  constructor(readonly error: HcrError) {
    super(error.message, { cause: error });
  }
}

const LOOPBACK_HOST = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(:\d+)?$/;

/**
 * Failures worth retrying on the same endpoint: the connection broke or
 * stalled. Anything else (refused, no such host, TLS trouble, a port fetch
 * will not use) means nobody useful answers there, and retrying would only
 * delay the next endpoint.
 */
const TRANSIENT = new Set([
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** An error for a request HCR gave up waiting on; it counts as transient. */
function timeoutError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ETIMEDOUT' });
}

function errnoOf(e: unknown): string {
  for (let cur: unknown = e, depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    if ((cur as { name?: unknown }).name === 'TimeoutError') return 'ETIMEDOUT';
    cur = (cur as { cause?: unknown }).cause;
  }
  return '';
}

function describe(e: unknown): string {
  const code = errnoOf(e);
  const cause = (e as { cause?: unknown }).cause;
  const msg = cause instanceof Error ? cause.message : e instanceof Error ? e.message : String(e);
  return code !== '' && !msg.includes(code) ? `${msg} (${code})` : msg;
}

/** Turns a thrown fetch failure into an HCR error, transient or not. */
function networkError(e: unknown, where: string): HcrError | TransientError {
  if (e instanceof TransientError || isHcrError(e)) return e;
  const code = errnoOf(e);
  const err = errors.unavailable(`${where}: ${describe(e)}`, e);
  return TRANSIENT.has(code) ? new TransientError(err) : err;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Validates a {@link RegistryConfig}, so that a typo fails at start-up rather than at the first pull. */
export function validateRegistryConfig(config: RegistryConfig): void {
  for (const [host, hc] of Object.entries(config)) {
    for (const m of hc.mirrors ?? []) endpointUrl(m, host, `registries."${host}".mirrors`);
    if (hc.server !== undefined) endpointUrl(hc.server, host, `registries."${host}".server`);
    for (const pattern of Object.keys(hc.rewrite ?? {})) {
      try {
        new RegExp(pattern);
      } catch (e) {
        throw errors.invalidArgument(
          `registries."${host}".rewrite: "${pattern}" is not a regular expression: ${e instanceof Error ? e.message : String(e)}`,
          `registries.${host}.rewrite`,
        );
      }
    }
  }
}

/** Parses an endpoint (`http://h:5000`, `https://h/prefix`, or a bare `h:5000`) into an API base ending in `/v2`. */
function endpointUrl(raw: string, host: string, field: string, insecure = false): string {
  const withScheme = raw.includes('://') ? raw : `${insecure || LOOPBACK_HOST.test(raw) ? 'http' : 'https'}://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw errors.invalidArgument(`${field}: "${raw}" is not a URL`, field);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw errors.invalidArgument(`${field}: "${raw}" must be an http or https URL (for ${host})`, field);
  }
  const path = url.pathname.replace(/\/+$/, '');
  return `${url.origin}${path.endsWith('/v2') ? path : `${path}/v2`}`;
}

/** An OCI Distribution client. One per image service; it caches tokens across pulls. */
export class RegistryClient {
  readonly #config: RegistryConfig;
  readonly #logger: Logger;
  readonly #attempts: number;
  readonly #backoffMs: number;
  readonly #headersTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  /** Authorization header values by endpoint base, scope and credential identity. */
  readonly #authCache = new Map<string, BearerToken>();

  constructor(options: RegistryClientOptions) {
    validateRegistryConfig(options.config);
    this.#config = options.config;
    this.#logger = options.logger;
    this.#attempts = options.attempts ?? 4;
    this.#backoffMs = options.backoffMs ?? 250;
    this.#headersTimeoutMs = options.headersTimeoutMs ?? 30_000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  }

  /** Where to look for `domain`'s images, in order: its mirrors, then the host itself. */
  endpoints(domain: string): Endpoint[] {
    const hc = this.#config[domain] ?? {};
    const rules = Object.entries(hc.rewrite ?? {}).map(([re, replacement]) => ({ re: new RegExp(re), replacement }));
    const rewrite = (path: string) => {
      const rule = rules.find((r) => r.re.test(path));
      return rule === undefined ? path : path.replace(rule.re, rule.replacement);
    };
    const mirrors = (hc.mirrors ?? []).map((m): Endpoint => {
      const base = endpointUrl(m, domain, `registries."${domain}".mirrors`);
      const mirrorHost = new URL(base).host;
      return {
        base,
        mirror: true,
        label: `mirror ${base.replace(/\/v2$/, '')}`,
        repository: rewrite,
        credentials: (creds, serverAddress) =>
          creds !== null && serverAddressHost(serverAddress) === mirrorHost ? creds : null,
      };
    });
    const defaultServer = domain === DOCKER_HUB_DOMAIN ? 'https://registry-1.docker.io' : domain;
    const base = endpointUrl(hc.server ?? defaultServer, domain, `registries."${domain}".server`, hc.insecure === true);
    const upstream: Endpoint = {
      base,
      mirror: false,
      label: hc.server === undefined ? domain : `${domain} (${base.replace(/\/v2$/, '')})`,
      repository: (path) => path,
      credentials: (creds) => creds,
    };
    return [...mirrors, upstream];
  }

  /** Fetches the manifest or index `reference` (a tag or a digest) of `ref`'s repository from `ep`. */
  async fetchManifest(
    ep: Endpoint,
    ref: ImageReference,
    reference: string,
    auth: PullAuth | null,
  ): Promise<FetchedManifest> {
    const repo = ep.repository(ref.path);
    const url = `${ep.base}/${repo}/manifests/${reference}`;
    const what = `manifest ${repo}:${reference} on ${ep.label}`;
    return this.#retrying(what, async () => {
      const { res, done } = await this.#request(ep, url, repo, auth, { accept: MANIFEST_ACCEPT }, what);
      try {
        const length = Number(res.headers.get('content-length') ?? '0');
        if (length > MANIFEST_MAX_BYTES) {
          throw errors.failedPrecondition(
            `${what} is ${length} bytes, more than the ${MANIFEST_MAX_BYTES} HCR accepts`,
          );
        }
        const bytes = await readLimited(res, MANIFEST_MAX_BYTES, what);
        const digest = sha256Digest(bytes);
        const header = res.headers.get('docker-content-digest');
        if (header !== null && header.startsWith('sha256:') && header !== digest) {
          throw errors.failedPrecondition(
            `${what}: registry says its digest is ${header} but the content hashes to ${digest}`,
          );
        }
        if (reference.startsWith('sha256:') && reference !== digest) {
          throw errors.failedPrecondition(`${what}: content hashes to ${digest}, not the requested digest`);
        }
        return { bytes, digest, contentType: res.headers.get('content-type') ?? '' };
      } catch (e) {
        throw networkError(e, what);
      } finally {
        done();
      }
    });
  }

  /**
   * Downloads blob `digest` of `ref`'s repository from `ep` into `sink`,
   * which must verify it (the content store hashes while writing). A transfer
   * that breaks or stalls fails the stream with a {@link TransientError}, and
   * the whole download is retried.
   */
  async downloadBlob<T>(
    ep: Endpoint,
    ref: ImageReference,
    digest: string,
    auth: PullAuth | null,
    sink: (body: Readable) => Promise<T>,
  ): Promise<T> {
    const repo = ep.repository(ref.path);
    const url = `${ep.base}/${repo}/blobs/${digest}`;
    const what = `blob ${digest} of ${repo} on ${ep.label}`;
    return this.#retrying(what, async () => sink(await this.#openBlob(url, ep, repo, auth, what)));
  }

  async #openBlob(url: string, ep: Endpoint, repo: string, auth: PullAuth | null, what: string): Promise<Readable> {
    const { res, done, abort } = await this.#request(ep, url, repo, auth, {}, what);
    if (res.body === null) {
      done();
      throw new TransientError(errors.unavailable(`${what}: response has no body`));
    }
    const idleMs = this.#idleTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => abort(timeoutError(`no data for ${idleMs / 1000} s`)), idleMs);
    };
    arm();
    const body = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
    const watch = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        arm();
        cb(null, chunk);
      },
      flush(cb) {
        clearTimeout(timer);
        done();
        cb();
      },
    });
    body.on('error', (e) => {
      clearTimeout(timer);
      done();
      const failure = networkError(e, what);
      watch.destroy(failure instanceof TransientError ? failure : new TransientError(failure));
    });
    // The consumer may not be reading yet when the transfer breaks; it sees the error when it does.
    watch.on('error', () => undefined);
    watch.on('close', () => {
      clearTimeout(timer);
      if (!body.destroyed) body.destroy();
    });
    return body.pipe(watch);
  }

  /** Runs `fn`, retrying {@link TransientError}s with exponential backoff, and unwraps the last one. */
  async #retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof TransientError)) throw e;
        if (attempt >= this.#attempts) {
          throw new HcrError(e.error.code, `${e.error.message} (gave up after ${attempt} attempts)`, {
            cause: e.error,
          });
        }
        const delay = this.#backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() / 2);
        this.#logger.warn(
          { what, attempt, error: e.message, retryInMs: Math.round(delay) },
          'registry request failed; retrying',
        );
        await sleep(delay);
      }
    }
  }

  /**
   * One GET with authentication: sends a cached Authorization when there is
   * one, answers a 401 challenge once, and maps failures to error classes.
   * The caller must call `done` once it has consumed the body.
   */
  async #request(
    ep: Endpoint,
    url: string,
    repo: string,
    auth: PullAuth | null,
    opts: { accept?: string },
    what: string,
  ): Promise<{ res: Response; done: () => void; abort: (reason: Error) => void }> {
    const creds = ep.credentials(auth?.creds ?? null, auth?.serverAddress ?? '');
    const scope = `repository:${repo}:pull`;
    const cacheKey = `${ep.base}\n${scope}\n${credsIdentity(creds)}`;
    for (let challenged = false; ; challenged = true) {
      const headers: Record<string, string> = { 'user-agent': 'hcr' };
      if (opts.accept !== undefined) headers['accept'] = opts.accept;
      const cached = this.#authCache.get(cacheKey);
      if (cached !== undefined && cached.expiresAt > Date.now()) headers['authorization'] = cached.token;
      else if (creds !== null && creds.registryToken !== '') headers['authorization'] = `Bearer ${creds.registryToken}`;

      const controller = new AbortController();
      const timer = setTimeout(
        () => controller.abort(timeoutError(`no response within ${this.#headersTimeoutMs / 1000} s`)),
        this.#headersTimeoutMs,
      );
      let res: Response;
      try {
        res = await fetch(url, { headers, signal: controller.signal, redirect: 'follow' });
      } catch (e) {
        throw networkError(controller.signal.aborted ? controller.signal.reason : e, what);
      } finally {
        clearTimeout(timer);
      }
      const done = () => {
        // A body left unread would hold its connection; cancelling a consumed body is a no-op.
        res.body?.cancel().catch(() => undefined);
      };
      if (res.ok) return { res, done, abort: (reason) => controller.abort(reason) };

      const body = await res.text().catch(() => '');
      if (res.status === 401 && !challenged) {
        const challenge = parseChallenges(res.headers.get('www-authenticate') ?? '').find(
          (c) => c.scheme === 'bearer' || c.scheme === 'basic',
        );
        if (challenge !== undefined) {
          const authorization = await this.#answer(challenge, scope, creds, what);
          if (authorization !== null) {
            const now = Date.now();
            for (const [k, t] of this.#authCache) if (t.expiresAt <= now) this.#authCache.delete(k);
            this.#authCache.set(cacheKey, authorization);
            continue;
          }
        }
      }
      throw statusError(res.status, body, what, creds !== null, res.headers.get('retry-after'));
    }
  }

  /** The Authorization header that answers `challenge`, or null when there is nothing to answer with. */
  async #answer(
    challenge: Challenge,
    scope: string,
    creds: Credentials | null,
    what: string,
  ): Promise<BearerToken | null> {
    if (challenge.scheme === 'basic') {
      if (creds === null || (creds.username === '' && creds.password === '')) return null;
      return { token: basicAuthorization(creds), expiresAt: Number.MAX_SAFE_INTEGER };
    }
    const tokenFetch = async (url: string, init: RequestInit): Promise<Response> => {
      try {
        return await fetch(url, {
          ...init,
          headers: { ...init.headers, 'user-agent': 'hcr' },
          signal: AbortSignal.timeout(this.#headersTimeoutMs),
        });
      } catch (e) {
        throw networkError(e, `token server for ${what}`);
      }
    };
    const t = await fetchBearerToken(challenge, scope, creds, tokenFetch);
    return { token: `Bearer ${t.token}`, expiresAt: t.expiresAt };
  }
}

function credsIdentity(creds: Credentials | null): string {
  if (creds === null) return 'anonymous';
  return sha256Digest(`${creds.username}\n${creds.password}\n${creds.identityToken}\n${creds.registryToken}`);
}

/** Reads a response body, refusing more than `limit` bytes. */
async function readLimited(res: Response, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  if (res.body === null) return Buffer.alloc(0);
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength;
    if (total > limit) throw errors.failedPrecondition(`${what} is larger than the ${limit} bytes HCR accepts`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/** The registry's own error codes and messages from an error body, for the message. */
function registryErrors(body: string): string {
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: string; message?: string }[] };
    const list = (parsed.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': ')).filter(Boolean);
    return list.length > 0 ? ` (${list.join('; ')})` : '';
  } catch {
    return '';
  }
}

function statusError(
  status: number,
  body: string,
  what: string,
  hadCredentials: boolean,
  retryAfter: string | null,
): HcrError | TransientError {
  const detail = registryErrors(body);
  if (status === 404) return errors.notFound(`${what} not found${detail}`);
  if (status === 401 || status === 403) {
    return hadCredentials
      ? errors.failedPrecondition(`${what}: access denied with the given credentials (HTTP ${status})${detail}`)
      : errors.notFound(
          `${what}: access denied (HTTP ${status}); the repository does not exist or needs credentials${detail}`,
        );
  }
  if (status === 429 || status >= 500) {
    const after = retryAfter === null ? '' : `, retry after ${retryAfter}`;
    return new TransientError(errors.unavailable(`${what}: registry answered HTTP ${status}${after}${detail}`));
  }
  return errors.failedPrecondition(`${what}: registry answered HTTP ${status}${detail}`);
}
