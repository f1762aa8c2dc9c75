import { describe, expect, it } from 'vitest';
import {
  containerCriState,
  containerOps,
  containerPhases,
  decideContainer,
  decideSandbox,
  type ContainerOp,
  type ContainerPhase,
  type SandboxOp,
  type SandboxPhase,
} from '../src/index.js';

const sandboxPhases: SandboxPhase[] = ['creating', 'ready', 'notready', 'removing'];
const sandboxOps: SandboxOp[] = ['stop', 'remove', 'createContainer', 'portForward', 'status'];

// The full tables, written out independently of the implementation: [phase, op] → outcome.
const sandboxTable: Record<SandboxPhase, Record<SandboxOp, string>> = {
  creating: {
    stop: 'run:notready',
    remove: 'run:removing',
    createContainer: 'refuse',
    portForward: 'refuse',
    status: 'run:creating',
  },
  ready: {
    stop: 'run:notready',
    remove: 'run:removing',
    createContainer: 'run:ready',
    portForward: 'run:ready',
    status: 'run:ready',
  },
  notready: {
    stop: 'noop',
    remove: 'run:removing',
    createContainer: 'refuse',
    portForward: 'refuse',
    status: 'run:notready',
  },
  removing: {
    stop: 'noop',
    remove: 'run:removing',
    createContainer: 'refuse',
    portForward: 'refuse',
    status: 'run:removing',
  },
};

const containerTable: Record<ContainerPhase, Record<ContainerOp, string>> = {
  creating: {
    start: 'refuse',
    stop: 'noop',
    remove: 'run:removing',
    exec: 'refuse',
    attach: 'refuse',
    updateResources: 'refuse',
    reopenLog: 'refuse',
    exited: 'noop',
  },
  created: {
    start: 'run:running',
    stop: 'noop',
    remove: 'run:removing',
    exec: 'refuse',
    attach: 'refuse',
    updateResources: 'run:created',
    reopenLog: 'refuse',
    exited: 'noop',
  },
  running: {
    start: 'refuse',
    stop: 'run:exited',
    remove: 'stopThenRun:removing',
    exec: 'run:running',
    attach: 'run:running',
    updateResources: 'run:running',
    reopenLog: 'run:running',
    exited: 'run:exited',
  },
  exited: {
    start: 'refuse',
    stop: 'noop',
    remove: 'run:removing',
    exec: 'refuse',
    attach: 'refuse',
    updateResources: 'refuse',
    reopenLog: 'refuse',
    exited: 'noop',
  },
  removing: {
    start: 'refuse',
    stop: 'noop',
    remove: 'run:removing',
    exec: 'refuse',
    attach: 'refuse',
    updateResources: 'refuse',
    reopenLog: 'refuse',
    exited: 'noop',
  },
};

function outcome(d: { action: string; to?: string }): string {
  return d.action === 'run' || d.action === 'stopThenRun' ? `${d.action}:${d.to}` : d.action;
}

describe('sandbox transition table', () => {
  for (const phase of sandboxPhases) {
    for (const op of sandboxOps) {
      it(`${phase} + ${op} → ${sandboxTable[phase][op]}`, () => {
        const d = decideSandbox(phase, op, 'pod1');
        expect(outcome(d)).toBe(sandboxTable[phase][op]);
        if (d.action === 'refuse') {
          expect(d.error.code).toBe('FailedPrecondition');
          expect(d.error.message).toContain('pod1');
        }
      });
    }
  }
});

describe('container transition table', () => {
  for (const phase of containerPhases) {
    for (const op of containerOps) {
      it(`${phase} + ${op} → ${containerTable[phase][op]}`, () => {
        const d = decideContainer(phase, op, 'c1');
        expect(outcome(d)).toBe(containerTable[phase][op]);
        if (d.action === 'refuse') {
          expect(d.error.code).toBe('FailedPrecondition');
          expect(d.error.message).toContain('c1');
        }
      });
    }
  }

  it('maps phases to CRI states', () => {
    expect(containerPhases.map(containerCriState)).toEqual(['unknown', 'created', 'running', 'exited', 'exited']);
  });

  it('explains why a start is refused', () => {
    const d = decideContainer('exited', 'start', 'c1');
    expect(d.action === 'refuse' && d.error.message).toMatch(/create a new container/);
  });
});
