import type { ConfigField, ConfigSchema } from './plugin.js';

type FieldValue<F extends ConfigField> = F['type'] extends 'string'
  ? string
  : F['type'] extends 'number'
    ? number
    : F['type'] extends 'boolean'
      ? boolean
      : readonly string[];

/** The config object a list of fields describes, keyed by field key. */
export type ConfigOf<Fields extends readonly ConfigField[]> = {
  readonly [F in Fields[number] as F['key']]: FieldValue<F>;
};

/**
 * Builds a {@link ConfigSchema} from documented fields: unknown keys and wrong
 * types are refused with a message naming the key; missing keys take defaults.
 */
export function fieldSchema<const Fields extends readonly ConfigField[]>(
  fields: Fields,
): ConfigSchema<ConfigOf<Fields>> {
  return {
    fields,
    parse(raw) {
      const table = raw ?? {};
      if (typeof table !== 'object' || Array.isArray(table)) {
        return { ok: false, error: 'engine config must be a table' };
      }
      const input = table as Record<string, unknown>;
      const known = new Set(fields.map((f) => f.key));
      for (const key of Object.keys(input)) {
        if (!known.has(key)) {
          return { ok: false, error: `unknown key "${key}" (known: ${[...known].join(', ') || 'none'})` };
        }
      }
      const out: Record<string, unknown> = {};
      for (const f of fields) {
        const v = input[f.key];
        if (v === undefined) {
          out[f.key] = f.default;
          continue;
        }
        const ok =
          f.type === 'string[]'
            ? Array.isArray(v) && v.every((x) => typeof x === 'string')
            : typeof v === f.type && (f.type !== 'number' || Number.isFinite(v));
        if (!ok) return { ok: false, error: `key "${f.key}" must be a ${f.type}, got ${JSON.stringify(v)}` };
        out[f.key] = v;
      }
      return { ok: true, value: out as ConfigOf<Fields> };
    },
  };
}
