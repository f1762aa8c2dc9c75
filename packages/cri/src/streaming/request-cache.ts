import { randomBytes } from 'node:crypto';
import { errors } from '@hcr/core';

/** An Exec request as CRI handed it over, waiting for its client. */
export interface ExecRequest {
  readonly kind: 'exec';
  readonly containerId: string;
  readonly cmd: readonly string[];
  readonly tty: boolean;
  readonly stdin: boolean;
  readonly stdout: boolean;
  readonly stderr: boolean;
}

/** An Attach request as CRI handed it over, waiting for its client. */
export interface AttachRequest {
  readonly kind: 'attach';
  readonly containerId: string;
  readonly tty: boolean;
  readonly stdin: boolean;
  readonly stdout: boolean;
  readonly stderr: boolean;
}

/** A PortForward request as CRI handed it over, waiting for its client. */
export interface PortForwardRequest {
  readonly kind: 'portforward';
  readonly sandboxId: string;
  /** The ports CRI asked for; empty means any (kubelet sends none for SPDY clients). */
  readonly ports: readonly number[];
}

/** Any request a streaming URL stands for. */
export type StreamingRequest = ExecRequest | AttachRequest | PortForwardRequest;

/** Random bytes per token: 256 bits, so guessing is hopeless within a token's lifetime. */
const TOKEN_BYTES = 32;

/**
 * Requests waiting for their streaming client, keyed by a random single-use token
 * (kubelet's request cache). The URL carries only the token, so no request field
 * can be altered by whoever holds the URL.
 */
export class RequestCache {
  // Insertion order is expiry order (one TTL for all), so expired entries are always at the front.
  private readonly entries = new Map<string, { readonly request: StreamingRequest; readonly expiresAt: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxInFlight: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Number of requests still waiting (expired ones included until the next insert). */
  get size(): number {
    return this.entries.size;
  }

  /** Stores `request` and returns its token; throws ResourceExhausted when too many are waiting. */
  insert(request: StreamingRequest): string {
    this.dropExpired();
    if (this.entries.size >= this.maxInFlight) {
      throw errors.resourceExhausted(
        `too many streaming requests in flight (${this.maxInFlight} waiting for their client); retry once some are used or expire`,
      );
    }
    let token = randomBytes(TOKEN_BYTES).toString('base64url');
    while (this.entries.has(token)) token = randomBytes(TOKEN_BYTES).toString('base64url');
    this.entries.set(token, { request, expiresAt: this.now() + this.ttlMs });
    return token;
  }

  /** Removes and returns the request of `token`; undefined when unknown, used or expired. */
  consume(token: string): StreamingRequest | undefined {
    const entry = this.entries.get(token);
    if (entry === undefined) return undefined;
    this.entries.delete(token);
    return this.now() < entry.expiresAt ? entry.request : undefined;
  }

  /** Forgets every waiting request (server stop). */
  clear(): void {
    this.entries.clear();
  }

  private dropExpired(): void {
    const now = this.now();
    for (const [token, entry] of this.entries) {
      if (now < entry.expiresAt) return;
      this.entries.delete(token);
    }
  }
}
