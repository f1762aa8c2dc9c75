import type { Duplex } from 'node:stream';
import { errors, ErrorCode, HcrError, ResultAsync, silentLogger, type Logger } from '@hcr/core';
import { CodecError, decodeBody, encodeBody } from '../protocol/codec.js';
import { encodeFrame, FrameDecoder } from '../protocol/frame.js';
import {
  ErrorCode as AgentErrorCode,
  MessageType,
  messageNames,
  replyOf,
  type GuestEventName,
  type HostNotificationName,
  type MessageName,
  type Messages,
  type RequestName,
} from '../protocol/wire.gen.js';
import type { AgentTransport } from './transport.js';

/** The reply body of request `N`. */
export type ReplyTo<N extends RequestName> = Messages[(typeof replyOf)[N]];

interface Pending {
  readonly name: RequestName;
  readonly resolve: (body: unknown) => void;
  readonly reject: (e: HcrError) => void;
  readonly timer: NodeJS.Timeout;
}

/** Default time a request may take before it fails (container setup over 9p under TCG can take seconds). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;

/**
 * Bound on a request to an agent that let an earlier one time out without a
 * word since: a hung agent (or a stopped VM) then costs each caller seconds,
 * not a full request timeout, and the first frame it sends lifts the bound.
 */
export const STALLED_REQUEST_TIMEOUT_MS = 5_000;

/**
 * The host side of the agent protocol over one connection: numbered requests
 * with timeouts, fire-and-forget notifications, and typed events. It knows
 * nothing about pods; the engine translates domain calls into these messages.
 */
export class AgentClient {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<string, Set<(body: never) => void>>();
  private readonly closeListeners = new Set<(reason: HcrError) => void>();
  private nextId = 1;
  private closedWith: HcrError | null = null;
  /** When the agent last sent anything (ms since the epoch), and how many chunks it sent so far. */
  private lastHeard = Date.now();
  private heard = 0;
  /** Set when a request timed out with nothing heard since it was sent; cleared by the next frame. */
  private stalledSince: number | null = null;
  /** False until the agent answered the connection's Hello (see onEvent). */
  private greeted = false;

  private constructor(
    private readonly stream: Duplex,
    readonly description: string,
    private readonly logger: Logger,
  ) {
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', (e) => this.shutdown(errors.unavailable(`agent connection failed: ${e.message}`, e)));
    stream.on('close', () => this.shutdown(errors.unavailable(`agent connection over ${description} closed`)));
  }

  /** Connects over `transport` (the connection is not yet greeted; send Hello first). */
  static connect(transport: AgentTransport, timeoutMs: number, logger: Logger = silentLogger) {
    return transport.connect(timeoutMs).map((s) => new AgentClient(s, transport.description, logger));
  }

  /** True once the connection is gone; every later request fails with Unavailable. */
  get closed(): boolean {
    return this.closedWith !== null;
  }

  /**
   * Since when (ms since the epoch) the agent has let a request time out
   * without sending anything; null while it answers.
   */
  get stalled(): number | null {
    return this.stalledSince;
  }

  /**
   * Sends a request and resolves with its reply; an ErrorReply becomes the
   * matching HcrError. While the agent is stalled the wait is bounded by
   * {@link STALLED_REQUEST_TIMEOUT_MS}.
   */
  request<N extends RequestName>(
    name: N,
    body: Messages[N],
    timeoutMs: number = DEFAULT_REQUEST_TIMEOUT_MS,
  ): ResultAsync<ReplyTo<N>, HcrError> {
    const run = new Promise<ReplyTo<N>>((resolve, reject) => {
      if (this.closedWith !== null) {
        reject(this.closedWith);
        return;
      }
      const id = this.nextId;
      this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
      const sentAt = Date.now();
      const heardBefore = this.heard;
      const wait = this.stalledSince === null ? timeoutMs : Math.min(timeoutMs, STALLED_REQUEST_TIMEOUT_MS);
      const timer = setTimeout(() => {
        this.pending.delete(id);
        if (this.heard === heardBefore) this.stalledSince ??= sentAt;
        const silent =
          this.stalledSince === null
            ? ''
            : `; nothing heard from it for ${Math.round((Date.now() - this.lastHeard) / 1000)} s`;
        reject(errors.deadlineExceeded(`the guest agent did not answer ${name} within ${wait} ms${silent}`));
      }, wait);
      this.pending.set(id, { name, resolve: resolve as (b: unknown) => void, reject, timer });
      this.send(name, id, body);
    });
    return ResultAsync.fromPromise(run, (e) => (e instanceof HcrError ? e : errors.internal(String(e), e)));
  }

  /** Sends a message that has no reply (stdin, resizes, port data). */
  notify<N extends HostNotificationName>(name: N, body: Messages[N]): void {
    if (this.closedWith === null) this.send(name, 0, body);
  }

  /** Listens to an event; returns the unsubscribe function. */
  on<N extends GuestEventName>(name: N, listener: (body: Messages[N]) => void): () => void {
    let set = this.listeners.get(name);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(name, set);
    }
    set.add(listener as (body: never) => void);
    return () => set.delete(listener as (body: never) => void);
  }

  /** Called once when the connection ends, with the reason. */
  onClose(listener: (reason: HcrError) => void): void {
    if (this.closedWith !== null) listener(this.closedWith);
    else this.closeListeners.add(listener);
  }

  /** Closes the connection (the agent keeps running and buffers output until the next one). */
  close(): void {
    this.stream.destroy();
    this.shutdown(errors.unavailable('agent connection closed by the host'));
  }

  private send(name: MessageName, id: number, body: unknown): void {
    const payload = encodeBody(name, body as never);
    this.stream.write(encodeFrame({ type: MessageType[name], id, payload }));
  }

  private onData(chunk: Buffer): void {
    this.lastHeard = Date.now();
    this.heard++;
    this.stalledSince = null;
    const before = this.decoder.skipped;
    for (const frame of this.decoder.push(chunk)) {
      const name = messageNames.get(frame.type);
      if (name === undefined) continue;
      let body: unknown;
      try {
        body = decodeBody(name, frame.payload);
      } catch (e) {
        if (!(e instanceof CodecError)) throw e;
        this.logger.warn({ message: name, err: e.message }, 'malformed frame from the guest agent');
        continue;
      }
      if (frame.id !== 0) this.onReply(frame.id, name, body);
      else this.onEvent(name, body);
    }
    if (this.decoder.skipped > before) {
      // Expected once after a reconnect: the tail of a frame meant for the previous connection.
      this.logger.debug({ bytes: this.decoder.skipped - before }, 'skipped torn bytes from the guest agent');
    }
  }

  private onReply(id: number, name: MessageName, body: unknown): void {
    const p = this.pending.get(id);
    if (p === undefined) return; // timed out, or meant for an earlier connection
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (p.name === 'Hello') this.greeted = true;
    if (name === 'ErrorReply') {
      p.reject(agentError(p.name, body as Messages['ErrorReply']));
    } else if (name !== replyOf[p.name]) {
      p.reject(errors.internal(`the guest agent answered ${p.name} with ${name}`));
    } else {
      p.resolve(body);
    }
  }

  private onEvent(name: MessageName, body: unknown): void {
    // Container output and exits sent before the Hello reply follow the previous connection's cursor (the
    // agent had not seen that host go); the Hello rewinds it and its reply lists every exit, so they are stale.
    // Set synchronously with the reply: frames after it in the same chunk are this connection's.
    if (!this.greeted && (name === 'Output' || name === 'ContainerExited')) return;
    const set = this.listeners.get(name);
    if (set === undefined) return;
    for (const l of [...set]) {
      try {
        l(body as never);
      } catch (e) {
        this.logger.error({ event: name, err: String(e) }, 'agent event listener failed');
      }
    }
  }

  private shutdown(reason: HcrError): void {
    if (this.closedWith !== null) return;
    this.closedWith = reason;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.pending.clear();
    for (const l of this.closeListeners) l(reason);
    this.closeListeners.clear();
  }
}

/** Maps the agent's error classes onto HCR's. */
function agentError(request: RequestName, e: Messages['ErrorReply']): HcrError {
  const message = `guest agent: ${e.message}`;
  switch (e.code) {
    case AgentErrorCode.NOT_FOUND:
      return errors.notFound(message);
    case AgentErrorCode.ALREADY_EXISTS:
      return errors.alreadyExists(message);
    case AgentErrorCode.INVALID_ARGUMENT:
      return errors.invalidArgument(message);
    case AgentErrorCode.FAILED_PRECONDITION:
      return errors.failedPrecondition(message);
    case AgentErrorCode.UNSUPPORTED:
      return new HcrError(ErrorCode.Unsupported, message);
    default:
      return errors.internal(`${message} (in ${request})`);
  }
}
