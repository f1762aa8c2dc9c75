import type { Nanos } from '@hcr/core';

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/;

// Log messages arrive many per second: remember the last second's value.
let cachedPrefix = '';
let cachedSecondNanos = 0n;

/**
 * Parses an RFC 3339 time with up to nanosecond precision (Docker's
 * `StartedAt`, log and event timestamps) into Unix nanoseconds. Go's zero
 * time (`0001-01-01T00:00:00Z`, "never") and anything unparsable give 0.
 */
export function parseRfc3339Nano(text: string): Nanos {
  // Fast path for Docker's fixed UTC form `2006-01-02T15:04:05.000000000Z`.
  if (text.length === 30 && text.charCodeAt(29) === 90 /* Z */ && text.charCodeAt(19) === 46 /* . */) {
    const prefix = text.slice(0, 19);
    const frac = text.slice(20, 29);
    if (/^\d{9}$/.test(frac)) {
      if (prefix !== cachedPrefix) {
        const ms = Date.parse(`${prefix}Z`);
        if (Number.isNaN(ms) || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/.test(prefix)) return parseGeneral(text);
        if (prefix.startsWith('0001-')) return 0n;
        cachedPrefix = prefix;
        cachedSecondNanos = BigInt(ms) * 1_000_000n;
      }
      return cachedSecondNanos + BigInt(frac);
    }
  }
  return parseGeneral(text);
}

function parseGeneral(text: string): Nanos {
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
