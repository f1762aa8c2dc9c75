import { match } from 'ts-pattern';
import { errors } from '../errors.js';
import type { ContainerState } from '../types.js';
import type { Decision } from './sandbox.js';

/**
 * Persisted phases of a container.
 *
 * - `creating`: record written, engine object may be partial (hidden from lists).
 * - `created`, `running`, `exited`: as CRI.
 * - `removing`: removal began; finishing it is always allowed.
 */
export type ContainerPhase = 'creating' | 'created' | 'running' | 'exited' | 'removing';

/** Operations whose legality depends on the container phase. */
export type ContainerOp = 'start' | 'stop' | 'remove' | 'exec' | 'attach' | 'updateResources' | 'reopenLog' | 'exited';

/** Removing a running container stops it first (CRI: "must be forcibly removed"). */
export type ContainerDecision =
  Decision<ContainerPhase> | { readonly action: 'stopThenRun'; readonly to: ContainerPhase };

/**
 * The container transition table: start only from `created`; stop of a
 * non-running container is a no-op; remove always converges (stopping a
 * running container first); exec/attach/reopen-log need a running container.
 */
export function decideContainer(phase: ContainerPhase, op: ContainerOp, id: string): ContainerDecision {
  const refuse = (why: string): ContainerDecision => ({
    action: 'refuse',
    error: errors.failedPrecondition(`container ${id} ${why}`),
  });
  const notRunning = (what: string) => refuse(`is ${phase}, not running; cannot ${what}`);
  return match<[ContainerPhase, ContainerOp], ContainerDecision>([phase, op])
    .with(['created', 'start'], () => ({ action: 'run', to: 'running' }))
    .with(['running', 'start'], () => refuse('is already running'))
    .with(['exited', 'start'], () => refuse('has already run and exited; create a new container'))
    .with(['creating', 'start'], () => refuse('is still being created'))
    .with(['removing', 'start'], () => refuse('is being removed'))
    .with(['running', 'stop'], () => ({ action: 'run', to: 'exited' }))
    .with(['created', 'stop'], ['exited', 'stop'], ['creating', 'stop'], ['removing', 'stop'], () => ({
      action: 'noop',
    }))
    .with(['running', 'remove'], () => ({ action: 'stopThenRun', to: 'removing' }))
    .with(['created', 'remove'], ['exited', 'remove'], ['creating', 'remove'], ['removing', 'remove'], () => ({
      action: 'run',
      to: 'removing',
    }))
    .with(['running', 'exec'], () => ({ action: 'run', to: 'running' }))
    .with(['running', 'attach'], () => ({ action: 'run', to: 'running' }))
    .with(['running', 'reopenLog'], () => ({ action: 'run', to: 'running' }))
    .with(['created', 'exec'], ['exited', 'exec'], ['creating', 'exec'], ['removing', 'exec'], () =>
      notRunning('exec in it'),
    )
    .with(['created', 'attach'], ['exited', 'attach'], ['creating', 'attach'], ['removing', 'attach'], () =>
      notRunning('attach to it'),
    )
    .with(['created', 'reopenLog'], ['exited', 'reopenLog'], ['creating', 'reopenLog'], ['removing', 'reopenLog'], () =>
      notRunning('reopen its log'),
    )
    .with(['created', 'updateResources'], ['running', 'updateResources'], () => ({ action: 'run', to: phase }))
    .with(['exited', 'updateResources'], ['creating', 'updateResources'], ['removing', 'updateResources'], () =>
      refuse(`is ${phase}; resources can only be updated on a created or running container`),
    )
    .with(['running', 'exited'], () => ({ action: 'run', to: 'exited' }))
    .with(['created', 'exited'], ['exited', 'exited'], ['creating', 'exited'], ['removing', 'exited'], () => ({
      action: 'noop',
    }))
    .exhaustive();
}

/** The CRI state for a phase. */
export function containerCriState(phase: ContainerPhase): ContainerState {
  return match(phase)
    .with('creating', () => 'unknown' as const)
    .with('created', () => 'created' as const)
    .with('running', () => 'running' as const)
    .with('exited', 'removing', () => 'exited' as const)
    .exhaustive();
}

/** Phases, for exhaustive tests. */
export const containerPhases: readonly ContainerPhase[] = ['creating', 'created', 'running', 'exited', 'removing'];
/** Operations, for exhaustive tests. */
export const containerOps: readonly ContainerOp[] = [
  'start',
  'stop',
  'remove',
  'exec',
  'attach',
  'updateResources',
  'reopenLog',
  'exited',
];
