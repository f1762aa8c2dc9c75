import { match } from 'ts-pattern';
import { errors, type HcrError } from '../errors.js';

/**
 * Persisted phases of a pod sandbox.
 *
 * - `creating`: the record exists, setup (netns, CNI, engine) may be partial.
 * - `ready`: fully set up.
 * - `notready`: stopped (containers stopped, engine unit stopped, network torn down).
 * - `removing`: removal began; finishing it is always allowed.
 */
export type SandboxPhase = 'creating' | 'ready' | 'notready' | 'removing';

/** Operations whose legality depends on the sandbox phase. */
export type SandboxOp = 'stop' | 'remove' | 'createContainer' | 'portForward' | 'status';

/** What an operation should do, decided once from the transition table. */
export type Decision<P> =
  | { readonly action: 'run'; readonly to: P }
  | { readonly action: 'noop' }
  | { readonly action: 'refuse'; readonly error: HcrError };

/**
 * The sandbox transition table. CRI's idempotency rules live here and nowhere
 * else: stopping a stopped pod is a no-op, removal always converges, nothing
 * new is created in a pod that is not ready.
 */
export function decideSandbox(phase: SandboxPhase, op: SandboxOp, id: string): Decision<SandboxPhase> {
  const notReady = (what: string): Decision<SandboxPhase> => ({
    action: 'refuse',
    error: errors.failedPrecondition(`pod sandbox ${id} is ${describe(phase)}; cannot ${what}`),
  });
  return match<[SandboxPhase, SandboxOp], Decision<SandboxPhase>>([phase, op])
    .with(['creating', 'stop'], ['ready', 'stop'], () => ({ action: 'run', to: 'notready' }))
    .with(['notready', 'stop'], ['removing', 'stop'], () => ({ action: 'noop' }))
    .with(['creating', 'remove'], ['ready', 'remove'], ['notready', 'remove'], ['removing', 'remove'], () => ({
      action: 'run',
      to: 'removing',
    }))
    .with(['ready', 'createContainer'], () => ({ action: 'run', to: 'ready' }))
    .with(['creating', 'createContainer'], ['notready', 'createContainer'], ['removing', 'createContainer'], () =>
      notReady('create a container in it'),
    )
    .with(['ready', 'portForward'], () => ({ action: 'run', to: 'ready' }))
    .with(['creating', 'portForward'], ['notready', 'portForward'], ['removing', 'portForward'], () =>
      notReady('port-forward to it'),
    )
    .with([phase, 'status'], () => ({ action: 'run', to: phase }))
    .exhaustive();
}

function describe(phase: SandboxPhase): string {
  return match(phase)
    .with('creating', () => 'still being created')
    .with('ready', () => 'ready')
    .with('notready', () => 'stopped')
    .with('removing', () => 'being removed')
    .exhaustive();
}

/** The CRI state a sandbox phase reports (engine liveness may still downgrade `ready`). */
export function sandboxCriState(phase: SandboxPhase): 'ready' | 'notready' {
  return phase === 'ready' ? 'ready' : 'notready';
}
