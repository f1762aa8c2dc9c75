import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lastRecordTime, readCursor } from './logs.js';

const dir = mkdtempSync(join(tmpdir(), 'hcr-docker-logs-'));

describe('lastRecordTime', () => {
  it('takes the last complete record, skipping a torn final line', () => {
    const p = join(dir, 'a.log');
    writeFileSync(
      p,
      '2026-01-02T03:04:05.000000001Z stdout F one\n' +
        '2026-01-02T03:04:05.000000002Z stderr P two\n' +
        '2026-01-02T03:04:05.0000',
    );
    expect(lastRecordTime(p)).toBe(1_767_323_045_000_000_002n);
  });

  it('finds the last record behind garbage and in a long file', () => {
    const p = join(dir, 'b.log');
    const filler = '2026-01-02T03:04:05.000000001Z stdout F ' + 'x'.repeat(1000) + '\n';
    writeFileSync(p, filler.repeat(200) + '2026-01-02T03:04:06.5Z stdout F last\nnot a record\n');
    expect(lastRecordTime(p)).toBe(1_767_323_046_500_000_000n);
  });

  it('is 0 for a missing or empty log', () => {
    expect(lastRecordTime(join(dir, 'missing.log'))).toBe(0n);
    writeFileSync(join(dir, 'empty.log'), '');
    expect(lastRecordTime(join(dir, 'empty.log'))).toBe(0n);
  });
});

describe('readCursor', () => {
  it('reads a saved cursor and ignores anything else', () => {
    writeFileSync(join(dir, 'c'), '1767323045000000002\n');
    expect(readCursor(join(dir, 'c'))).toBe(1_767_323_045_000_000_002n);
    writeFileSync(join(dir, 'bad'), 'soon');
    expect(readCursor(join(dir, 'bad'))).toBe(0n);
    expect(readCursor(join(dir, 'none'))).toBe(0n);
  });
});
