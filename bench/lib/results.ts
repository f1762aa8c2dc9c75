import type { DensityResult } from '../suites/density.js';
import type { DockerPauseStart, RawBoot } from '../suites/limits.js';
import type { OverheadResult } from '../suites/overhead.js';
import type { PodStartResult } from '../suites/podstart.js';
import type { CommitInfo, MachineInfo } from './machine.js';

/** Version of the result file layout; bump when a field changes meaning. */
export const RESULT_SCHEMA = 1;

/** Whether a target could be measured, and why not. */
export interface TargetInfo {
  readonly available: boolean;
  readonly reason?: string;
  readonly description: string;
}

/** The whole machine-readable outcome of one `pnpm bench` run (`bench/results/*.json`). */
export interface BenchResults {
  readonly schema: number;
  /** Free text naming the run (e.g. "before fast paths"). */
  readonly label: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationSeconds: number;
  readonly machine: MachineInfo;
  readonly loadAtEnd: number;
  readonly commit: CommitInfo;
  /** The commit the `*-before` targets ran (`--before`), for fast-path comparisons in the same run. */
  readonly before?: { readonly ref: string; readonly sha: string; readonly subject: string };
  readonly options: Readonly<Record<string, unknown>>;
  readonly targets: Readonly<Record<string, TargetInfo>>;
  readonly podStart?: Readonly<Record<string, PodStartResult>>;
  readonly limits?: { readonly hyper?: RawBoot; readonly unikernel?: RawBoot; readonly dockerPause?: DockerPauseStart };
  readonly overhead?: Readonly<Record<string, OverheadResult>>;
  readonly density?: Readonly<Record<string, DensityResult>>;
  /** Parts that failed as a whole, with the error. */
  readonly failures: readonly { readonly part: string; readonly error: string }[];
}
