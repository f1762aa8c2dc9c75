import { describe, expect, it } from 'vitest';
import { parseRfc3339Nano, toDockerTimestamp } from './time.js';

describe('parseRfc3339Nano', () => {
  it('keeps nanoseconds', () => {
    expect(parseRfc3339Nano('2026-01-02T03:04:05.678901234Z')).toBe(1_767_323_045_678_901_234n);
  });
  it('parses consecutive fixed-width Docker times across seconds', () => {
    expect(parseRfc3339Nano('2026-01-02T03:04:05.000000001Z')).toBe(1_767_323_045_000_000_001n);
    expect(parseRfc3339Nano('2026-01-02T03:04:05.999999999Z')).toBe(1_767_323_045_999_999_999n);
    expect(parseRfc3339Nano('2026-01-02T03:04:06.000000000Z')).toBe(1_767_323_046_000_000_000n);
    expect(parseRfc3339Nano('2026-01-02T03:04:05.000000001Z')).toBe(1_767_323_045_000_000_001n);
    expect(parseRfc3339Nano('0001-01-01T00:00:00.000000000Z')).toBe(0n);
    expect(parseRfc3339Nano('2026-01-02T03:04:0x.000000001Z')).toBe(0n);
  });

  it('accepts trimmed fractions and no fraction', () => {
    expect(parseRfc3339Nano('2026-01-02T03:04:05.5Z')).toBe(1_767_323_045_500_000_000n);
    expect(parseRfc3339Nano('2026-01-02T03:04:05Z')).toBe(1_767_323_045_000_000_000n);
  });
  it('applies zone offsets', () => {
    expect(parseRfc3339Nano('2026-01-02T05:04:05.000000001+02:00')).toBe(1_767_323_045_000_000_001n);
  });
  it("maps Go's zero time and garbage to 0", () => {
    expect(parseRfc3339Nano('0001-01-01T00:00:00Z')).toBe(0n);
    expect(parseRfc3339Nano('yesterday')).toBe(0n);
    expect(parseRfc3339Nano('')).toBe(0n);
  });
});

describe('toDockerTimestamp', () => {
  it('formats seconds.nanoseconds', () => {
    expect(toDockerTimestamp(1_767_323_045_000_000_001n)).toBe('1767323045.000000001');
    expect(toDockerTimestamp(0n)).toBe('0.000000000');
  });
});
