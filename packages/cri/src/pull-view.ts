import type { PullEventView } from './pull-progress.js';

/** What `hcr pull` knows of a pull, folded from its progress events. */
export interface PullView {
  readonly layers: Map<string, { done: number; total: number; phase: PullEventView['phase'] }>;
  phase: PullEventView['phase'] | 'waiting';
}

/** An empty view, before the first event. */
export function newPullView(): PullView {
  return { layers: new Map(), phase: 'waiting' };
}

/**
 * Folds one event into the view; returns a line worth printing on its own
 * (a layer finished downloading or unpacking) for logs and non-terminals.
 */
export function applyPullEvent(view: PullView, e: PullEventView): string | null {
  view.phase = e.phase;
  if (e.layer === '') return null;
  const before = view.layers.get(e.layer);
  const total = e.total > 0 ? e.total : (before?.total ?? 0);
  const done = e.phase === 'downloading' ? e.done : (before?.done ?? total);
  view.layers.set(e.layer, { done, total, phase: e.phase });
  const short = shortDigest(e.layer);
  if (e.phase === 'downloading' && e.total > 0 && e.done >= e.total && before?.done !== e.done)
    return `${short}: downloaded ${bytes(e.total)}`;
  if (e.phase === 'unpacking' && before?.phase !== 'unpacking') return `${short}: unpacking ${bytes(total)}`;
  return null;
}

/** One terminal line: a bar over all layers' bytes, the layer count and the elapsed time. */
export function renderPullLine(view: PullView, image: string, elapsedMs: number, width = 24): string {
  let done = 0;
  let total = 0;
  let complete = 0;
  for (const l of view.layers.values()) {
    done += Math.min(l.done, l.total);
    total += l.total;
    if (l.total > 0 && l.done >= l.total) complete++;
  }
  const secs = `${(elapsedMs / 1000).toFixed(1)}s`;
  if (total === 0) return `${view.phase === 'waiting' ? 'pulling' : view.phase} ${image} ${secs}`;
  const frac = Math.min(1, done / total);
  const filled = Math.round(frac * width);
  const bar = `[${'='.repeat(Math.max(0, filled - 1))}${filled > 0 ? (filled === width ? '=' : '>') : ''}${' '.repeat(width - filled)}]`;
  return (
    `${image} ${bar} ${Math.floor(frac * 100)
      .toString()
      .padStart(3)}% ${bytes(done)} / ${bytes(total)}` +
    `  layers ${complete}/${view.layers.size}  ${view.phase}  ${secs}`
  );
}

/** `sha256:0123456789ab`: enough of a digest to tell layers apart. */
function shortDigest(d: string): string {
  return d.slice(0, 'sha256:'.length + 12);
}

/** A byte count for people: B, KB, MB, GB (powers of 1000, as registries show sizes). */
export function bytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1000;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}
