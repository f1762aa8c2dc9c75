import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger, Nanos } from '@hcr/core';
import type Docker from 'dockerode';
import { Label } from './labels.js';
import { toDockerTimestamp } from './time.js';

/**
 * Container events that can change what a status request answers: state,
 * pid, exit, OOM, and the name requests look containers up by. Exec, attach
 * and resize events are left out; they change none of it.
 */
export const STATUS_EVENTS = ['start', 'restart', 'pause', 'unpause', 'die', 'oom', 'rename', 'destroy'] as const;

/** A container event from dockerd that HCR acts on. */
export interface DockerContainerEvent {
  readonly action: (typeof STATUS_EVENTS)[number];
  readonly dockerId: string;
  /** The container's labels and event attributes (`exitCode` for `die`). */
  readonly attributes: Readonly<Record<string, string>>;
  /** dockerd's time of the event (the host clock). */
  readonly timeNano: Nanos;
}

/** Callbacks of a {@link DockerEventWatcher}. */
export interface DockerEventHandlers {
  onEvent(event: DockerContainerEvent): void;
  /** The event stream is (re)connected; `gapSince` is when the previous one broke (null on the first connect). */
  onConnected(gapSince: Nanos | null): void;
  onDisconnected(error: unknown): void;
}

/**
 * Follows dockerd's event stream for this engine's containers ({@link STATUS_EVENTS}),
 * reconnecting with backoff when dockerd goes away. After a reconnect the
 * stream resumes from the last event seen, so events dockerd still holds are
 * not lost; what happened while dockerd itself was down is for the caller to
 * reconcile (it is told the gap).
 */
export class DockerEventWatcher {
  private abort: AbortController | null = null;
  private stopped = false;
  private lastTime: Nanos = 0n;
  private readonly loop: Promise<void>;

  constructor(
    private readonly docker: Docker,
    private readonly engine: string,
    private readonly handlers: DockerEventHandlers,
    private readonly logger: Logger,
  ) {
    this.loop = this.run();
  }

  /** Stops following; resolves once the stream is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    let backoff = 250;
    let gapSince: Nanos | null = null;
    let first = true;
    while (!this.stopped) {
      this.abort = new AbortController();
      try {
        const query = {
          filters: { type: ['container'], event: [...STATUS_EVENTS], label: [`${Label.engine}=${this.engine}`] },
          // A `<seconds>.<nanoseconds>` string keeps the precision the typings' number would lose.
          ...(this.lastTime > 0n ? { since: toDockerTimestamp(this.lastTime + 1n) } : {}),
          abortSignal: this.abort.signal,
        };
        const stream = (await this.docker.getEvents(
          query as unknown as Docker.GetEventsOptions,
        )) as unknown as Readable;
        this.handlers.onConnected(first ? null : gapSince);
        first = false;
        gapSince = null;
        backoff = 250;
        await this.consume(stream);
        if (this.stopped) break;
        throw new Error('dockerd closed the event stream');
      } catch (e) {
        if (this.stopped) break;
        if (gapSince === null) {
          gapSince = BigInt(Date.now()) * 1_000_000n;
          this.handlers.onDisconnected(e);
        }
        this.logger.debug({ err: String(e) }, 'docker event stream down; reconnecting');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  private async consume(stream: Readable): Promise<void> {
    let buffered = '';
    for await (const chunk of stream) {
      buffered += (chunk as Buffer).toString('utf8');
      for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line !== '') this.dispatch(line);
      }
    }
  }

  private dispatch(line: string): void {
    let raw: {
      Action?: string;
      Type?: string;
      id?: string;
      Actor?: { ID?: string; Attributes?: Record<string, string> };
    };
    try {
      raw = JSON.parse(line) as typeof raw;
    } catch {
      this.logger.warn({ line }, 'unparsable docker event');
      return;
    }
    const action = STATUS_EVENTS.find((a) => a === raw.Action);
    if (raw.Type !== 'container' || action === undefined) return;
    // timeNano exceeds 2^53, so it is read from the text rather than from the parsed number.
    const timeNano = BigInt(/"timeNano":(\d+)/.exec(line)?.[1] ?? '0');
    if (timeNano > this.lastTime) this.lastTime = timeNano;
    this.handlers.onEvent({
      action,
      dockerId: raw.Actor?.ID ?? raw.id ?? '',
      attributes: raw.Actor?.Attributes ?? {},
      timeNano,
    });
  }
}
