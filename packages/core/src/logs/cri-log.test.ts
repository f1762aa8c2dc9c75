import { mkdtempSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CriLogWriter, MAX_LOG_LINE, formatRfc3339Nano, parseCriLogLine } from './cri-log.js';

const lines = (p: string) =>
  readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => parseCriLogLine(l)!);

describe('CriLogWriter', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-log-'));

  it('writes one F record per line and keeps streams apart', () => {
    const p = join(dir, 'a', 'b.log');
    const w = new CriLogWriter(p);
    w.write('stdout', Buffer.from('hello\nwor'));
    w.write('stderr', Buffer.from('oops\n'));
    w.write('stdout', Buffer.from('ld\n'));
    w.close();
    expect(lines(p)).toMatchObject([
      { stream: 'stdout', partial: false, content: 'hello' },
      { stream: 'stderr', partial: false, content: 'oops' },
      { stream: 'stdout', partial: false, content: 'world' },
    ]);
  });

  it('splits long lines into P records and flushes an unterminated tail as P', () => {
    const p = join(dir, 'long.log');
    const w = new CriLogWriter(p);
    w.write('stdout', Buffer.alloc(MAX_LOG_LINE + 10, 'x'));
    w.write('stdout', Buffer.from('\n'));
    w.write('stdout', Buffer.from('tail'));
    w.close();
    const r = lines(p);
    expect(r.map((x) => [x.partial, x.content.length])).toEqual([
      [true, MAX_LOG_LINE],
      [false, 10],
      [true, 4],
    ]);
  });

  it('reopens after rotation', () => {
    const p = join(dir, 'rot.log');
    const w = new CriLogWriter(p);
    w.write('stdout', Buffer.from('one\n'));
    renameSync(p, p + '.1');
    w.reopen();
    w.write('stdout', Buffer.from('two\n'));
    w.close();
    expect(lines(p + '.1').map((x) => x.content)).toEqual(['one']);
    expect(lines(p).map((x) => x.content)).toEqual(['two']);
  });

  it('keeps nanosecond record times', () => {
    const p = join(dir, 'nanos.log');
    const w = new CriLogWriter(p);
    w.write('stdout', Buffer.from('x\n'), 1_767_323_045_678_901_234n);
    w.close();
    expect(lines(p)[0]!.time).toBe('2026-01-02T03:04:05.678901234Z');
  });

  it('appends corked records at uncork, in order', () => {
    const p = join(dir, 'cork.log');
    const w = new CriLogWriter(p);
    w.cork();
    w.write('stdout', Buffer.from('a\n'));
    w.write('stderr', Buffer.from('b\n'));
    expect(lines(p)).toEqual([]);
    w.uncork();
    w.cork();
    w.write('stdout', Buffer.from('c\n'));
    w.close();
    expect(lines(p).map((x) => x.content)).toEqual(['a', 'b', 'c']);
  });

  it('formats RFC3339Nano timestamps', () => {
    expect(formatRfc3339Nano(new Date('2026-01-02T03:04:05.678Z'))).toBe('2026-01-02T03:04:05.678000000Z');
    expect(formatRfc3339Nano(new Date('2026-01-02T03:04:05.001Z'))).toBe('2026-01-02T03:04:05.001000000Z');
    expect(formatRfc3339Nano(new Date('2026-01-02T03:04:06.000Z'))).toBe('2026-01-02T03:04:06.000000000Z');
    expect(formatRfc3339Nano(new Date('1969-12-31T23:59:59.500Z'))).toBe('1969-12-31T23:59:59.500000000Z');
    expect(formatRfc3339Nano(new Date('2026-01-02T03:04:05.678Z'), 1_767_323_045_678_901_234n)).toBe(
      '2026-01-02T03:04:05.678901234Z',
    );
  });
});
