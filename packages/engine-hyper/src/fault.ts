import { err, errors, ok, type HcrError, type Result } from '@hcr/core';
import { replyOf } from './protocol/wire.gen.js';

/**
 * Test-only crash injection for pod VMs, the guest side of core's
 * `HCR_FAULT`: `HCR_AGENT_FAULT=abort:<Request>` (e.g. `abort:Exec`) in
 * HCR's environment puts `hcr.fault=abort:<Request>` on the kernel command
 * line of every pod VM (and VM template) this engine starts, and the guest
 * agent, PID 1 of the VM, aborts when it receives that request. Unset in
 * production, where the command line carries nothing of it.
 */
export function agentFaultCmdline(value: string | undefined): Result<readonly string[], HcrError> {
  if (value === undefined || value === '') return ok([]);
  const m = /^abort:([A-Za-z]+)$/.exec(value);
  if (m === null || !Object.hasOwn(replyOf, m[1] ?? '')) {
    return err(
      errors.invalidArgument(
        `HCR_AGENT_FAULT must be abort:<request> with one of ${Object.keys(replyOf).join(', ')}; got "${value}"`,
        'HCR_AGENT_FAULT',
      ),
    );
  }
  return ok([`hcr.fault=${value}`]);
}
