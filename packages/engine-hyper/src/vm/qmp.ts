import { connect } from 'node:net';
import { errors, ResultAsync, type HcrError } from '@hcr/core';

/**
 * Runs one QMP command on QEMU's monitor socket: read the greeting, enter
 * command mode, send the command, wait for its return (events are skipped).
 * A QMP session per command keeps HCR free of long-lived monitor state.
 */
export function qmpCommand(
  socketPath: string,
  command: string,
  args: Record<string, unknown> = {},
  timeoutMs = 5_000,
): ResultAsync<unknown, HcrError> {
  const run = new Promise<unknown>((resolve, reject) => {
    const s = connect(socketPath);
    let buf = '';
    let step = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer to ${command} within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (e: Error | null, v?: unknown) => {
      clearTimeout(timer);
      s.destroy();
      if (e !== null) reject(e);
      else resolve(v);
    };
    s.setEncoding('utf8');
    s.on('error', (e) => done(e));
    // `quit` may close the socket before QEMU writes its return.
    s.on('close', () => (command === 'quit' && step === 2 ? done(null, {}) : done(new Error('QMP socket closed'))));
    s.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === '') continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          done(new Error(`QMP sent non-JSON: ${line.slice(0, 80)}`));
          return;
        }
        if ('event' in msg) continue;
        if ('error' in msg) {
          const e = msg['error'] as { desc?: string };
          done(new Error(`QMP ${step === 1 ? 'qmp_capabilities' : command}: ${e.desc ?? 'error'}`));
          return;
        }
        if (step === 0 && 'QMP' in msg) {
          step = 1;
          s.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
        } else if (step === 1 && 'return' in msg) {
          step = 2;
          s.write(JSON.stringify({ execute: command, arguments: args }) + '\n');
        } else if (step === 2 && 'return' in msg) {
          done(null, msg['return']);
        }
      }
    });
  });
  return ResultAsync.fromPromise(run, (e) =>
    errors.unavailable(`QEMU monitor ${socketPath}: ${(e as Error).message}`, e),
  );
}
