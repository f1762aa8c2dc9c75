import type { EngineContainerStatus, Nanos } from '@hcr/core';

/** A fill in progress: taken before asking dockerd, handed back with what dockerd said. */
export interface FillTicket {
  readonly containerId: string;
  /** Host time the question to dockerd was about to be sent. */
  readonly since: Nanos;
}

interface Entry {
  readonly status: EngineContainerStatus;
  /** Host time of the question the status answers; events from this time on may have changed it. */
  readonly since: Nanos;
}

interface Slot {
  entry: Entry | null;
  readonly pending: Set<FillTicket>;
}

/**
 * Whole milliseconds of the host clock, in nanoseconds. dockerd is reached
 * over a local unix socket, so its event times are on this clock; rounding
 * down keeps the comparison on the safe side: an event that happened after a
 * question was sent is never taken as older.
 */
export function hostNanos(): Nanos {
  return BigInt(Date.now()) * 1_000_000n;
}

/**
 * Container statuses kept current by dockerd's event stream, so a status
 * request needs no inspect. An entry answers only while the stream is up and
 * no event about the container has come since the inspect behind it was
 * sent; events, the engine's own changes (start, stop, remove) and a broken
 * stream drop entries, and the next request inspects again. Fills race with
 * events by time: an answer to a question sent before an event is not kept.
 */
export class ContainerStatusCache {
  readonly #slots = new Map<string, Slot>();
  #live = false;

  constructor(private readonly now: () => Nanos = hostNanos) {}

  /** Whether statuses are served from the cache (the event stream is up). */
  get live(): boolean {
    return this.#live;
  }

  /** Containers with an entry or a fill in progress (bounded by the containers HCR has). */
  get size(): number {
    return this.#slots.size;
  }

  /** The event stream is (re)connected: from now on events keep entries current. */
  connected(): void {
    // Events while it was down are lost (a restarted dockerd has none to replay): start over.
    this.#slots.clear();
    this.#live = true;
  }

  /** The event stream broke: nothing can be trusted, every request inspects until it is back. */
  disconnected(): void {
    this.#live = false;
    this.#slots.clear();
  }

  /** The status to answer with, or undefined when dockerd must be asked. */
  get(containerId: string): EngineContainerStatus | undefined {
    if (!this.#live) return undefined;
    return this.#slots.get(containerId)?.entry?.status;
  }

  /** Call right before asking dockerd; null when the answer would not be kept (stream down). */
  begin(containerId: string): FillTicket | null {
    if (!this.#live) return null;
    const ticket: FillTicket = { containerId, since: this.now() };
    this.#slot(containerId).pending.add(ticket);
    return ticket;
  }

  /** Keeps what dockerd answered, unless an event or a change came since the question was sent. */
  fill(ticket: FillTicket, status: EngineContainerStatus): void {
    const slot = this.#slots.get(ticket.containerId);
    if (slot === undefined || !slot.pending.delete(ticket)) return;
    if (slot.entry === null || slot.entry.since <= ticket.since) slot.entry = { status, since: ticket.since };
  }

  /** The question failed (or the container is gone): nothing to keep. */
  abandon(ticket: FillTicket): void {
    const slot = this.#slots.get(ticket.containerId);
    if (slot === undefined) return;
    slot.pending.delete(ticket);
    this.#prune(ticket.containerId, slot);
  }

  /** dockerd reported an event about the container at `time` (its clock, the host's). */
  observe(containerId: string, time: Nanos): void {
    const slot = this.#slots.get(containerId);
    if (slot === undefined) return;
    if (slot.entry !== null && slot.entry.since <= time) slot.entry = null;
    for (const t of slot.pending) if (t.since <= time) slot.pending.delete(t);
    this.#prune(containerId, slot);
  }

  /** The engine changed or removed the container itself: drop its entry and any fill in progress. */
  invalidate(containerId: string): void {
    this.#slots.delete(containerId);
  }

  #slot(containerId: string): Slot {
    let slot = this.#slots.get(containerId);
    if (slot === undefined) {
      slot = { entry: null, pending: new Set() };
      this.#slots.set(containerId, slot);
    }
    return slot;
  }

  #prune(containerId: string, slot: Slot): void {
    if (slot.entry === null && slot.pending.size === 0) this.#slots.delete(containerId);
  }
}

/** The status of a container dockerd has just created (what an inspect of it shows). */
export const CREATED_STATUS: EngineContainerStatus = {
  state: 'created',
  pid: 0,
  startedAt: 0n,
  finishedAt: 0n,
  exitCode: 0,
  reason: '',
  message: '',
};
