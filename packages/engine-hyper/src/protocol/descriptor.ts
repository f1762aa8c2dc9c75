/** Wire type of a field in the agent protocol (see protocol/agent.json). */
export type FieldType = 'u32' | 'i32' | 'u64' | 'bool' | 'string' | 'bytes' | 'struct';

/** One field of a struct or message. */
export interface FieldDescriptor {
  /** camelCase name, the property of the TypeScript body. */
  readonly name: string;
  readonly tag: number;
  readonly type: FieldType;
  readonly repeated: boolean;
  /** Name of the nested struct when `type` is `struct`. */
  readonly struct?: string;
}

/** Field layout of a struct or message, as generated from protocol/agent.json. */
export interface StructDescriptor {
  readonly name: string;
  readonly fields: readonly FieldDescriptor[];
}
