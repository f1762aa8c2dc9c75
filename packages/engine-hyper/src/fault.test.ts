import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentFaultCmdline } from './fault.js';
import { vmDeath } from './pod.js';

describe('agentFaultCmdline', () => {
  it('adds nothing unless HCR_AGENT_FAULT is set', () => {
    expect(agentFaultCmdline(undefined)._unsafeUnwrap()).toEqual([]);
    expect(agentFaultCmdline('')._unsafeUnwrap()).toEqual([]);
  });

  it('passes abort:<request> to the agent on the kernel command line', () => {
    expect(agentFaultCmdline('abort:Exec')._unsafeUnwrap()).toEqual(['hcr.fault=abort:Exec']);
  });

  it('refuses what the agent would not act on, naming the requests', () => {
    expect(agentFaultCmdline('abort:Nope')._unsafeUnwrapErr().message).toContain('Exec');
    expect(agentFaultCmdline('crash:Exec').isErr()).toBe(true);
    expect(agentFaultCmdline('abort:Exec quiet').isErr()).toBe(true);
  });
});

describe('vmDeath', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hcr-vmdeath-'));
  const console = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('names the agent when PID 1 died', () => {
    const p = console(
      'agent.log',
      'hcr-agent: hcr.fault: aborting on Exec\n[    3.19] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n[    3.19] CPU: 0 PID: 1\n',
    );
    const d = vmDeath('pod1', p);
    expect(d.reason).toBe('GuestAgentCrashed');
    expect(d.message).toContain('guest agent of pod pod1');
    expect(d.message).toContain('Attempted to kill init! exitcode=0x0000000b');
    expect(d.message).toContain(p);
  });

  it('tells another guest panic from a VM that just went away', () => {
    expect(
      vmDeath('p', console('oom.log', 'Kernel panic - not syncing: System is deadlocked on memory\n')).reason,
    ).toBe('GuestKernelPanic');
    expect(vmDeath('p', console('killed.log', '[ 1.0] hcr-agent: host connected\n')).reason).toBe('Error');
    expect(vmDeath('p', join(dir, 'missing.log')).reason).toBe('Error');
  });
});
