/** JSON with bigint support: bigints are stored as `{"$n":"<digits>"}`. */
export function stringify(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? { $n: v.toString() } : v));
}

/** Inverse of {@link stringify}. */
export function parse<T>(text: string): T {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      const n = o['$n'];
      if (typeof n === 'string' && Object.keys(o).length === 1) return BigInt(n);
    }
    return v;
  }) as T;
}
