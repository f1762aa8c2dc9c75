import type { Nanos } from '@hcr/core';

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Parses an RFC 3339 time with up to nanosecond precision (Docker's
 * `StartedAt`, log and event timestamps) into Unix nanoseconds. Go's zero
 * time (`0001-01-01T00:00:00Z`, "never") and anything unparsable give 0.
 */
export function parseRfc3339Nano(text: string): Nanos {
  const m = RFC3339.exec(text);
  if (m === null) return 0n;
  const [, y, mo, d, h, mi, s, frac = '', zone] = m;
  if (y === '0001') return 0n;
  const ms = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s}${zone === 'Z' ? 'Z' : zone}`);
  if (Number.isNaN(ms)) return 0n;
  return BigInt(ms) * 1_000_000n + BigInt(frac.padEnd(9, '0'));
}

/** Formats Unix nanoseconds as Docker's `since`/`until` query value (`<seconds>.<nanoseconds>`). */
export function toDockerTimestamp(nanos: Nanos): string {
  const n = nanos < 0n ? 0n : nanos;
  return `${n / 1_000_000_000n}.${(n % 1_000_000_000n).toString().padStart(9, '0')}`;
}
