import { describe, expect, it } from 'vitest';
import { PullProgressHub, type PullEventView } from '../src/pull-progress.js';
import { applyPullEvent, bytes, newPullView, renderPullLine } from '../src/pull-view.js';

const REF = '127.0.0.1:5000/app:1';
const ev = (phase: PullEventView['phase'], layer = '', done = 0, total = 0): PullEventView => ({
  ref: REF,
  phase,
  layer,
  done,
  total,
  error: '',
});

describe('pull progress hub', () => {
  it('gives a late watcher the state of the pull under way, then each change, and forgets ended pulls', () => {
    const hub = new PullProgressHub();
    hub.publish(ev('resolving'));
    hub.publish(ev('downloading', 'sha256:a', 10, 10));
    hub.publish(ev('downloading', 'sha256:b', 5, 20));
    const seen: PullEventView[] = [];
    const stop = hub.watch(REF, (e) => seen.push(e));
    expect(seen.map((e) => [e.layer, e.done])).toEqual([
      ['sha256:a', 10],
      ['sha256:b', 5],
    ]);
    hub.publish(ev('downloading', 'sha256:b', 20, 20));
    hub.publish(ev('done', '', 30, 30));
    expect(seen.map((e) => e.phase).slice(2)).toEqual(['downloading', 'done']);
    expect(hub.active).toBe(0);
    stop();
    hub.publish(ev('resolving'));
    expect(seen).toHaveLength(4);
  });

  it('passes byte counts of a layer on at most every 100 ms, but always its end', () => {
    const hub = new PullProgressHub();
    const seen: number[] = [];
    hub.watch(REF, (e) => seen.push(e.done));
    hub.publish(ev('resolving'));
    for (let i = 1; i <= 50; i++) hub.publish(ev('downloading', 'sha256:a', i, 50));
    expect(seen[0]).toBe(0);
    expect(seen.at(-1)).toBe(50);
    expect(seen.length).toBeLessThan(5);
  });

  it('keeps watchers of other images apart', () => {
    const hub = new PullProgressHub();
    const seen: string[] = [];
    hub.watch('docker.io/library/other:latest', (e) => seen.push(e.ref));
    hub.publish(ev('resolving'));
    expect(seen).toEqual([]);
  });
});

describe('hcr pull view', () => {
  it('draws one bar over all layers and prints a line per finished layer', () => {
    const view = newPullView();
    expect(renderPullLine(view, 'app', 0)).toBe('pulling app 0.0s');
    expect(applyPullEvent(view, ev('resolving'))).toBeNull();
    expect(applyPullEvent(view, ev('downloading', 'sha256:0123456789abcdef', 500_000, 1_000_000))).toBeNull();
    expect(applyPullEvent(view, ev('downloading', 'sha256:fedcba9876543210', 0, 1_000_000))).toBeNull();
    expect(renderPullLine(view, 'app', 1500, 10)).toBe(
      'app [==>       ]  25% 500.0 KB / 2.0 MB  layers 0/2  downloading  1.5s',
    );
    expect(applyPullEvent(view, ev('downloading', 'sha256:0123456789abcdef', 1_000_000, 1_000_000))).toBe(
      'sha256:0123456789ab: downloaded 1.0 MB',
    );
    expect(applyPullEvent(view, ev('unpacking', 'sha256:0123456789abcdef', 0, 1_000_000))).toBe(
      'sha256:0123456789ab: unpacking 1.0 MB',
    );
    applyPullEvent(view, ev('downloading', 'sha256:fedcba9876543210', 1_000_000, 1_000_000));
    expect(renderPullLine(view, 'app', 2000, 10)).toBe(
      'app [==========] 100% 2.0 MB / 2.0 MB  layers 2/2  downloading  2.0s',
    );
  });

  it('writes sizes as registries do', () => {
    expect([bytes(999), bytes(1000), bytes(2_500_000), bytes(3_000_000_000)]).toEqual([
      '999 B',
      '1.0 KB',
      '2.5 MB',
      '3.0 GB',
    ]);
  });
});
