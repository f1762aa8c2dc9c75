import { execFile } from 'node:child_process';
import { errors, ResultAsync, type HcrError } from '@hcr/core';

/** What a finished command printed. */
export interface RunOutput {
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a host program with an argv array (never a shell string) and a time
 * limit. A non-zero exit fails with the program's stderr in the message.
 */
export function run(argv: readonly string[], timeoutMs = 30_000): ResultAsync<RunOutput, HcrError> {
  const [file, ...args] = argv;
  if (file === undefined) return ResultAsync.fromPromise(Promise.reject(new Error('empty argv')), toErr(argv));
  return ResultAsync.fromPromise(
    new Promise<RunOutput>((resolve, reject) => {
      execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 << 20, encoding: 'utf8' }, (e, stdout, stderr) => {
        if (e !== null) {
          const detail = stderr.trim() || e.message;
          reject(Object.assign(new Error(`${argv.join(' ')}: ${detail}`), { cause: e }));
        } else {
          resolve({ stdout, stderr });
        }
      });
    }),
    toErr(argv),
  );
}

function toErr(argv: readonly string[]): (e: unknown) => HcrError {
  return (e) => {
    const code = (e as { cause?: NodeJS.ErrnoException }).cause?.code;
    if (code === 'ENOENT') return errors.unavailable(`${argv[0] ?? ''} is not installed on this host`, e);
    return errors.internal(e instanceof Error ? e.message : String(e), e);
  };
}
