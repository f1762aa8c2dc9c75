/** In-process coordination: single-flight and mutual exclusion. */

/**
 * Runs at most one `fn` per key at a time; concurrent callers of the same key
 * share its promise. Used so that two pulls of images with a common layer
 * download and unpack it once.
 */
export class SingleFlight<T> {
  readonly #inflight = new Map<string, Promise<T>>();

  /** The running promise for `key`, or a new one from `fn`. */
  run(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.#inflight.get(key);
    if (running !== undefined) return running;
    const p = fn().finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }
}

/** A FIFO async mutex. */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Runs `fn` once every earlier holder is done. */
  async lock<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    try {
      await previous;
      return await fn();
    } finally {
      release();
    }
  }
}

/** One {@link Mutex} per key, dropped when nobody holds or waits for it. */
export class KeyedMutex {
  readonly #locks = new Map<string, { mutex: Mutex; users: number }>();

  /** Runs `fn` once every earlier holder of `key` is done. */
  async lock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    let entry = this.#locks.get(key);
    if (entry === undefined) {
      entry = { mutex: new Mutex(), users: 0 };
      this.#locks.set(key, entry);
    }
    entry.users++;
    try {
      return await entry.mutex.lock(fn);
    } finally {
      entry.users--;
      if (entry.users === 0) this.#locks.delete(key);
    }
  }
}

/** A multiset of keys held by running operations, so that garbage collection leaves them alone. */
export class RefCounts {
  readonly #counts = new Map<string, number>();

  /** Holds every key in `keys` until the returned function is called. */
  hold(keys: Iterable<string>): () => void {
    const held = [...keys];
    for (const k of held) this.#counts.set(k, (this.#counts.get(k) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of held) {
        const n = (this.#counts.get(k) ?? 1) - 1;
        if (n === 0) this.#counts.delete(k);
        else this.#counts.set(k, n);
      }
    };
  }

  /** True while some operation holds `key`. */
  has(key: string): boolean {
    return this.#counts.has(key);
  }
}
