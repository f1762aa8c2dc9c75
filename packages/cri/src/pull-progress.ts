import type { PullProgress } from '@hcr/core';

/** One change of a pull, as `hcr.v1.PullProgress/Watch` streams it. */
export interface PullEventView {
  readonly ref: string;
  readonly phase: PullProgress['phase'] | 'failed';
  readonly layer: string;
  readonly done: number;
  readonly total: number;
  readonly error: string;
}

type Listener = (e: PullEventView) => void;

/** A pull under way: the last event per layer, so a late watcher sees where it stands. */
interface Pull {
  readonly layers: Map<string, PullEventView>;
  /** When each layer's last byte count was passed on. */
  readonly sentAt: Map<string, number>;
  last: PullEventView;
}

/** Byte counts of one layer are passed on at most this often (the end of a layer always is). */
const BYTES_INTERVAL_MS = 100;

/**
 * Pull progress by image reference, between the PullImage handler (which
 * publishes what the image service reports) and `Watch` streams (which
 * subscribe by reference, before or during the pull). Nothing is kept once a
 * pull ends, so it holds memory only for pulls under way.
 */
export class PullProgressHub {
  private readonly pulls = new Map<string, Pull>();
  private readonly listeners = new Map<string, Set<Listener>>();

  /** Records an event of the pull of `ref` (fully qualified) and passes it on. */
  publish(e: PullEventView): void {
    const ended = e.phase === 'done' || e.phase === 'failed';
    if (ended) this.pulls.delete(e.ref);
    else {
      let pull = this.pulls.get(e.ref);
      if (pull === undefined || e.phase === 'resolving') {
        pull = { layers: new Map(), sentAt: new Map(), last: e };
        this.pulls.set(e.ref, pull);
      }
      if (e.layer !== '') pull.layers.set(e.layer, e);
      pull.last = e;
      if (e.phase === 'downloading' && e.done < e.total) {
        const now = Date.now();
        if (now - (pull.sentAt.get(e.layer) ?? 0) < BYTES_INTERVAL_MS) return;
        pull.sentAt.set(e.layer, now);
      }
    }
    for (const l of this.listeners.get(e.ref) ?? []) l(e);
  }

  /**
   * Calls `listener` with the state of the pull of `ref` under way (one event
   * per layer seen, then the latest), then with each new event. Returns the
   * unsubscribe function.
   */
  watch(ref: string, listener: Listener): () => void {
    const pull = this.pulls.get(ref);
    if (pull !== undefined) {
      for (const e of pull.layers.values()) listener(e);
      if (pull.last.layer === '') listener(pull.last);
    }
    let set = this.listeners.get(ref);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(ref, set);
    }
    set.add(listener);
    return () => {
      const s = this.listeners.get(ref);
      s?.delete(listener);
      if (s?.size === 0) this.listeners.delete(ref);
    };
  }

  /** Pulls under way (for tests and debugging). */
  get active(): number {
    return this.pulls.size;
  }
}
