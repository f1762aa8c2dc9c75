/**
 * Registry authentication: WWW-Authenticate challenges (RFC 7235), the Docker
 * token protocol (anonymous, basic credentials, or an OAuth2 refresh token),
 * and HTTP basic auth.
 */
import { errors } from '../errors.js';
import type { RegistryAuth } from './types.js';

/** Credentials for one registry, decoded from a {@link RegistryAuth}. */
export interface Credentials {
  readonly username: string;
  readonly password: string;
  /** OAuth2 refresh token (`docker login` against an identity provider). */
  readonly identityToken: string;
  /** A bearer token to send as is. */
  readonly registryToken: string;
}

/** One parsed challenge: a scheme (lowercased) and its parameters (lowercased names). */
export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/** Decodes CRI AuthConfig: `auth` is base64 `user:password` and fills in what username/password leave empty. */
export function credentialsFrom(auth: RegistryAuth | undefined): Credentials | null {
  if (auth === undefined) return null;
  let { username, password } = auth;
  if (username === '' && password === '' && auth.auth !== '') {
    const decoded = Buffer.from(auth.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw errors.invalidArgument('auth.auth is not base64 of "username:password"', 'auth.auth');
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const creds = { username, password, identityToken: auth.identityToken, registryToken: auth.registryToken };
  return Object.values(creds).every((v) => v === '') ? null : creds;
}

/** The host (and port) a CRI `serverAddress` names: `https://index.docker.io/v1/` → `index.docker.io`. */
export function serverAddressHost(address: string): string {
  const trimmed = address.trim();
  if (trimmed === '') return '';
  try {
    return new URL(trimmed.includes('://') ? trimmed : `https://${trimmed}`).host;
  } catch {
    return trimmed;
  }
}

const token = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;

/**
 * Parses a WWW-Authenticate header value into its challenges. Handles quoted
 * strings with escapes and several challenges in one header.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: { scheme: string; params: Record<string, string> }[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < header.length && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const readToken = (): string | null => {
    token.lastIndex = i;
    const m = token.exec(header);
    if (m === null) return null;
    i = token.lastIndex;
    return m[0];
  };
  const readQuoted = (): string => {
    let s = '';
    i++; // opening quote
    while (i < header.length && header[i] !== '"') {
      if (header[i] === '\\' && i + 1 < header.length) i++;
      s += header[i];
      i++;
    }
    i++; // closing quote
    return s;
  };
  // RFC 7235 wants a token here, but registries have been seen sending unquoted URLs: take all up to ','.
  const readBare = (): string => {
    const end = header.indexOf(',', i);
    const value = header.slice(i, end < 0 ? header.length : end).trim();
    i = end < 0 ? header.length : end;
    return value;
  };
  while (i < header.length) {
    skipSpace();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const word = readToken();
    if (word === null) break;
    skipSpace();
    const current = out[out.length - 1];
    if (header[i] === '=' && current !== undefined) {
      i++;
      skipSpace();
      const value = header[i] === '"' ? readQuoted() : readBare();
      current.params[word.toLowerCase()] = value;
    } else {
      out.push({ scheme: word.toLowerCase(), params: {} });
      // A token68 (e.g. `Negotiate abc==`) is not used by registries; its parameters are read as above.
    }
  }
  return out;
}

/** The `Authorization` value for basic auth. */
export function basicAuthorization(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

/** A bearer token and when it stops being usable (ms since epoch). */
export interface BearerToken {
  readonly token: string;
  readonly expiresAt: number;
}

/**
 * Fetches a bearer token for a `Bearer` challenge (Docker token spec): with an
 * identity token by OAuth2 POST, otherwise by GET, with basic credentials when
 * there are some. `fetchImpl` performs the request (timeouts, retries).
 */
export async function fetchBearerToken(
  challenge: Challenge,
  scope: string,
  creds: Credentials | null,
  fetchImpl: (url: string, init: RequestInit) => Promise<Response>,
): Promise<BearerToken> {
  const realm = challenge.params['realm'];
  if (realm === undefined || realm === '') {
    throw errors.failedPrecondition('registry sent a Bearer challenge without a realm; cannot authenticate');
  }
  let realmUrl: URL;
  try {
    realmUrl = new URL(realm);
  } catch {
    throw errors.failedPrecondition(`registry sent an invalid token realm "${realm}"`);
  }
  const service = challenge.params['service'] ?? '';
  const scopes = [...new Set([challenge.params['scope'] ?? '', scope].filter((s) => s !== ''))];
  let res: Response;
  if (creds !== null && creds.identityToken !== '') {
    const form = new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: creds.identityToken,
      client_id: 'hcr',
    });
    if (service !== '') form.set('service', service);
    if (scopes.length > 0) form.set('scope', scopes.join(' '));
    res = await fetchImpl(realmUrl.toString(), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    });
  } else {
    if (service !== '') realmUrl.searchParams.set('service', service);
    for (const s of scopes) realmUrl.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (creds !== null && (creds.username !== '' || creds.password !== ''))
      headers['authorization'] = basicAuthorization(creds);
    res = await fetchImpl(realmUrl.toString(), { method: 'GET', headers });
  }
  const body = await res.text();
  if (res.status === 401 || res.status === 403) {
    throw errors.failedPrecondition(
      `token server ${realmUrl.origin} refused ${creds === null ? 'anonymous access' : 'the credentials'} (HTTP ${res.status}) for ${scopes.join(' ') || 'the registry'}`,
    );
  }
  if (!res.ok) {
    throw errors.unavailable(`token server ${realmUrl.origin} answered HTTP ${res.status}: ${body.slice(0, 200)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw errors.unavailable(`token server ${realmUrl.origin} sent a response that is not JSON`);
  }
  const p = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
  const tok = typeof p['token'] === 'string' && p['token'] !== '' ? p['token'] : p['access_token'];
  if (typeof tok !== 'string' || tok === '') {
    throw errors.unavailable(`token server ${realmUrl.origin} sent no token`);
  }
  // The spec's default lifetime is 60 s; renew a little early.
  const expiresIn = typeof p['expires_in'] === 'number' && p['expires_in'] > 0 ? p['expires_in'] : 60;
  return { token: tok, expiresAt: Date.now() + Math.max(expiresIn - 10, 5) * 1000 };
}
