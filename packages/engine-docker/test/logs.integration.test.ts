import { renameSync, rmSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ContainerRef, ImageInfo, SandboxRef } from '@hcr/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BUSYBOX,
  containerRef,
  criRecords,
  ensurePulled,
  expectNoLeftovers,
  imageInfo,
  makeEngine,
  ok,
  sandboxRef,
  waitFor,
  type TestEngine,
} from './helpers.js';

let te: TestEngine;
let busybox: ImageInfo;
let sb: SandboxRef;

beforeAll(async () => {
  ensurePulled(BUSYBOX);
  busybox = await imageInfo(BUSYBOX);
  te = await makeEngine();
  sb = sandboxRef();
  await ok(te.engine.createSandbox(sb));
});

afterEach(() => {
  expect(te.logger.lines.filter((l) => l.level === 'error')).toEqual([]);
});

afterAll(async () => {
  await ok(te.engine.removeSandbox(sb));
  await te.engine.close();
  await expectNoLeftovers(te.name);
});

async function runToExit(engine: TestEngine['engine'], c: ContainerRef): Promise<void> {
  await ok(engine.createContainer(c));
  await ok(engine.startContainer(c));
  await waitFor('container exit', async () =>
    (await ok(engine.containerStatus(c))).state === 'exited' ? true : undefined,
  );
}

/** The stdout lines of a CRI log, partial records joined. */
function stdoutLines(path: string): string[] {
  const lines: string[] = [];
  let current = '';
  for (const r of criRecords(path)) {
    if (r.stream !== 'stdout') continue;
    current += r.content;
    if (r.tag === 'F') {
      lines.push(current);
      current = '';
    }
  }
  if (current !== '') lines.push(current);
  return lines;
}

describe('container logs', () => {
  it('writes CRI records per stream, with RFC3339Nano times and a P record for an unterminated tail', async () => {
    const c = containerRef(sb, busybox, {
      command: ['sh', '-c', 'echo out; echo err >&2; echo "two words"; printf tail'],
    });
    await runToExit(te.engine, c);
    const records = criRecords(c.logPath);
    for (const r of records) expect(r.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    expect(records.filter((r) => r.stream === 'stdout').map((r) => [r.tag, r.content])).toEqual([
      ['F', 'out'],
      ['F', 'two words'],
      ['P', 'tail'],
    ]);
    expect(records.filter((r) => r.stream === 'stderr').map((r) => [r.tag, r.content])).toEqual([['F', 'err']]);
    await ok(te.engine.removeContainer(c));
  });

  it('has all output in the file as soon as the status says exited, for large outputs and long lines', async () => {
    // ~1.3 MiB of numbered lines (one Docker message each) plus one 40 KB line that must come back as
    // P records joined by an F.
    const N = 200_000;
    const c = containerRef(sb, busybox, {
      command: ['sh', '-c', `seq 1 ${N}; head -c 40000 /dev/zero | tr "\\0" x; echo; echo end`],
    });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    await waitFor(
      'exit',
      async () => ((await ok(te.engine.containerStatus(c))).state === 'exited' ? true : undefined),
      60_000,
    );
    const lines = stdoutLines(c.logPath);
    expect(lines).toHaveLength(N + 2);
    for (let i = 0; i < N; i++) if (lines[i] !== String(i + 1)) throw new Error(`line ${i + 1} is ${lines[i]}`);
    expect(lines[N]).toBe('x'.repeat(40_000));
    expect(lines[N + 1]).toBe('end');
    const long = criRecords(c.logPath).filter((r) => r.content.startsWith('x'));
    expect(long.map((r) => [r.tag, r.content.length])).toEqual([
      ['P', 16384],
      ['P', 16384],
      ['F', 40000 - 2 * 16384],
    ]);
    await ok(te.engine.removeContainer(c));
  });

  it('writes a TTY container output as stdout records', async () => {
    const c = containerRef(sb, busybox, { tty: true, command: ['sh', '-c', 'echo hello; echo oops >&2'] });
    await runToExit(te.engine, c);
    const records = criRecords(c.logPath);
    expect(records.map((r) => [r.stream, r.content.replace(/\r$/, '')])).toEqual([
      ['stdout', 'hello'],
      ['stdout', 'oops'],
    ]);
    await ok(te.engine.removeContainer(c));
  });

  it('reopens the log after rotation without losing or repeating lines', async () => {
    const c = containerRef(sb, busybox, {
      command: ['sh', '-c', 'i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo $i; sleep 0.02; done'],
    });
    await ok(te.engine.createContainer(c));
    await ok(te.engine.startContainer(c));
    await waitFor('some output', () => (stdoutLines(c.logPath).length >= 10 ? true : undefined));
    renameSync(c.logPath, `${c.logPath}.1`);
    await ok(te.engine.reopenContainerLog(c));
    await waitFor('exit', async () => ((await ok(te.engine.containerStatus(c))).state === 'exited' ? true : undefined));
    const rotated = stdoutLines(`${c.logPath}.1`);
    const current = stdoutLines(c.logPath);
    expect(current.length).toBeGreaterThan(0);
    expect([...rotated, ...current]).toEqual(Array.from({ length: 60 }, (_, i) => String(i + 1)));
    const again = await te.engine.reopenContainerLog(c);
    expect(again.isErr() && again.error.code).toBe('FailedPrecondition');
    await ok(te.engine.removeContainer(c));
  });
});

describe('log copying across an HCR restart', () => {
  const counter = (n: number): string[] => [
    'sh',
    '-c',
    `i=0; while [ $i -lt ${n} ]; do i=$((i+1)); echo line-$i; echo err-$i >&2; sleep 0.02; done`,
  ];
  const expected = (n: number, p: string): string[] => Array.from({ length: n }, (_, i) => `${p}-${i + 1}`);

  for (const mode of ['clean shutdown (saved cursor)', 'crash (cursor from the log tail)'] as const) {
    it(`resumes after a ${mode}: every line exactly once`, async () => {
      const first = await makeEngine({}, { name: te.name, stateDir: te.stateDir, images: te.images });
      const c = containerRef(sb, busybox, { command: counter(100) });
      await ok(first.engine.createContainer(c));
      await ok(first.engine.startContainer(c));
      await waitFor('some output', () => (stdoutLines(c.logPath).length >= 20 ? true : undefined));
      await first.engine.close();
      if (mode.startsWith('crash')) rmSync(join(te.stateDir, 'log-cursors', c.id), { force: true });
      const copiedBefore = stdoutLines(c.logPath).length;
      // The container keeps writing while no engine copies its output.
      await new Promise((r) => setTimeout(r, 600));
      expect(stdoutLines(c.logPath).length).toBe(copiedBefore);
      const second = await first.recreate();
      await waitFor('exit', async () =>
        (await ok(second.engine.containerStatus(c))).state === 'exited' ? true : undefined,
      );
      expect(stdoutLines(c.logPath)).toEqual(expected(100, 'line'));
      expect(
        criRecords(c.logPath)
          .filter((r) => r.stream === 'stderr')
          .map((r) => r.content),
      ).toEqual(expected(100, 'err'));
      await ok(second.engine.removeContainer(c));
      expect(readdirSync(join(te.stateDir, 'log-cursors'))).not.toContain(c.id);
      await second.engine.close();
    });
  }

  it('copies the output of a container that exited while no engine ran', async () => {
    const first = await makeEngine({}, { name: te.name, stateDir: te.stateDir, images: te.images });
    const c = containerRef(sb, busybox, { command: counter(30) });
    await ok(first.engine.createContainer(c));
    await ok(first.engine.startContainer(c));
    await first.engine.close();
    await new Promise((r) => setTimeout(r, 1500));
    const second = await first.recreate();
    expect((await ok(second.engine.containerStatus(c))).state).toBe('exited');
    expect(stdoutLines(c.logPath)).toEqual(expected(30, 'line'));
    await ok(second.engine.removeContainer(c));
    await second.engine.close();
  });
});
