/**
 * The prose of docs/benchmarks.md that numbers cannot carry: why a goal is
 * not met, what each fast path does, and how the figures were taken. Kept
 * next to the generator so the document is regenerated, never hand-edited.
 */

/** Why a goal of issue 9 is not met (or could not be evaluated); shown only for goals not met. */
export const TARGET_NOTES = {
  dockerVsContainerd: '',
  hyperVsRaw: '',
  hyperTemplating: '',
  unikernelVsRaw: '',
  version: '',
  listContainers: '',
  rss: '',
} as const;

/** The fast paths of issue 9, their state, and what they change. */
export const FAST_PATHS: readonly { readonly name: string; readonly status: string; readonly detail: string }[] = [];

/** How the numbers are taken. */
export const METHOD_NOTES = '';
