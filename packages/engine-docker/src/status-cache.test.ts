import type { EngineContainerStatus } from '@hcr/core';
import { describe, expect, it } from 'vitest';
import { ContainerStatusCache, CREATED_STATUS } from './status-cache.js';

const running: EngineContainerStatus = { ...CREATED_STATUS, state: 'running', pid: 42, startedAt: 1_000n };
const exited: EngineContainerStatus = {
  ...running,
  state: 'exited',
  pid: 0,
  finishedAt: 2_000n,
  exitCode: 137,
  reason: 'Error',
};

/** A cache on a clock the test moves by hand. */
function cacheAt(start = 100n) {
  const clock = { now: start };
  const cache = new ContainerStatusCache(() => clock.now);
  cache.connected();
  return { cache, clock };
}

describe('ContainerStatusCache', () => {
  it('answers from a fill until an event about the container comes', () => {
    const { cache, clock } = cacheAt();
    const t = cache.begin('c1')!;
    clock.now = 110n;
    cache.fill(t, running);
    expect(cache.get('c1')).toBe(running);
    expect(cache.get('c2')).toBeUndefined();
    cache.observe('c2', 120n);
    expect(cache.get('c1')).toBe(running);
    cache.observe('c1', 120n);
    expect(cache.get('c1')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('keeps an entry when the event is older than the question behind it (a replay, or a late delivery)', () => {
    const { cache } = cacheAt(500n);
    const t = cache.begin('c1')!;
    cache.fill(t, running);
    cache.observe('c1', 499n);
    expect(cache.get('c1')).toBe(running);
    // Same instant: the event may have come after the question was sent, so it wins.
    cache.observe('c1', 500n);
    expect(cache.get('c1')).toBeUndefined();
  });

  it('drops an answer that an event overtook while the inspect was in flight', () => {
    const { cache, clock } = cacheAt();
    const t = cache.begin('c1')!;
    cache.observe('c1', 105n); // the container died while dockerd was answering
    clock.now = 110n;
    cache.fill(t, running);
    expect(cache.get('c1')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('keeps an answer to a question sent after the event, whatever order they arrive in', () => {
    const { cache, clock } = cacheAt(200n);
    const older = cache.begin('c1')!;
    clock.now = 300n;
    const newer = cache.begin('c1')!;
    cache.observe('c1', 250n);
    cache.fill(older, running); // voided by the event
    expect(cache.get('c1')).toBeUndefined();
    cache.fill(newer, exited);
    expect(cache.get('c1')).toBe(exited);
  });

  it('never lets an older answer replace a newer one', () => {
    const { cache, clock } = cacheAt(200n);
    const older = cache.begin('c1')!;
    clock.now = 300n;
    const newer = cache.begin('c1')!;
    cache.fill(newer, exited);
    cache.fill(older, running);
    expect(cache.get('c1')).toBe(exited);
  });

  it('drops entries and fills in flight when the engine changes the container itself', () => {
    const { cache } = cacheAt();
    cache.fill(cache.begin('c1')!, CREATED_STATUS);
    const inFlight = cache.begin('c1')!; // a status request racing the start
    cache.invalidate('c1'); // start returned
    cache.fill(inFlight, CREATED_STATUS);
    expect(cache.get('c1')).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('serves nothing while the event stream is down, and starts over when it is back', () => {
    const { cache, clock } = cacheAt();
    cache.fill(cache.begin('c1')!, running);
    const inFlight = cache.begin('c2')!;
    cache.disconnected();
    expect(cache.live).toBe(false);
    expect(cache.get('c1')).toBeUndefined();
    expect(cache.begin('c1')).toBeNull();
    cache.fill(inFlight, running);
    expect(cache.size).toBe(0);

    // Exits while it was down are not replayed by a restarted dockerd: nothing from before is kept.
    cache.connected();
    cache.fill(inFlight, running);
    expect(cache.get('c1')).toBeUndefined();
    expect(cache.get('c2')).toBeUndefined();
    clock.now = 200n;
    cache.fill(cache.begin('c1')!, exited);
    expect(cache.get('c1')).toBe(exited);
  });

  it('serves nothing before the event stream first connects', () => {
    const cache = new ContainerStatusCache(() => 1n);
    expect(cache.begin('c1')).toBeNull();
    expect(cache.get('c1')).toBeUndefined();
  });

  it('holds nothing for failed or finished questions', () => {
    const { cache } = cacheAt();
    const a = cache.begin('c1')!;
    const b = cache.begin('c1')!;
    cache.abandon(a);
    expect(cache.size).toBe(1);
    cache.abandon(b);
    expect(cache.size).toBe(0);
    cache.fill(cache.begin('c2')!, running);
    cache.invalidate('c2');
    expect(cache.size).toBe(0);
  });
});
