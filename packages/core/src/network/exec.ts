import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { err, ok, type Result, ResultAsync } from 'neverthrow';
import { errors, type HcrError, toHcrError } from '../errors.js';

/** How a helper process ended: it exited, it overran its deadline, or it never started. */
export type ExecOutcome =
  | {
      readonly kind: 'exited';
      readonly code: number | null;
      readonly signal: NodeJS.Signals | null;
      readonly stdout: string;
      readonly stderr: string;
    }
  | { readonly kind: 'timeout'; readonly stdout: string; readonly stderr: string }
  | { readonly kind: 'spawnError'; readonly error: NodeJS.ErrnoException };

/** Options for {@link runProcess}. */
export interface ExecOptions {
  /** Killed with SIGKILL after this long. */
  readonly timeoutMs: number;
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  readonly env?: NodeJS.ProcessEnv;
}

// Plugin results and helper output are small; a runaway writer must not grow memory without bound.
const MAX_OUTPUT_BYTES = 4 << 20;
// A helper that forks a daemon which keeps our pipes open must not hold us past its own exit.
const PIPE_GRACE_MS = 2_000;

/**
 * Runs `file` with an argv array (never a shell) and collects its output. The
 * promise never rejects: every way the process can end is an {@link ExecOutcome}.
 */
export function runProcess(file: string, args: readonly string[], options: ExecOptions): Promise<ExecOutcome> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const errOut: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let timedOut = false;
    let settled = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let grace: NodeJS.Timeout | undefined;

    const finish = (outcome: ExecOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(grace);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve(outcome);
    };
    const texts = () => ({
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(errOut).toString('utf8'),
    });
    const done = (): void => {
      if (timedOut) finish({ kind: 'timeout', ...texts() });
      else if (exit !== null) finish({ kind: 'exited', code: exit.code, signal: exit.signal, ...texts() });
    };

    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      done();
    }, options.timeoutMs);

    child.stdout.on('data', (chunk: Buffer) => {
      if (outBytes < MAX_OUTPUT_BYTES) out.push(chunk);
      outBytes += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (errBytes < MAX_OUTPUT_BYTES) errOut.push(chunk);
      errBytes += chunk.length;
    });
    child.on('error', (error: NodeJS.ErrnoException) => finish({ kind: 'spawnError', error }));
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      grace = setTimeout(done, PIPE_GRACE_MS);
    });
    child.on('close', done);

    // A process may exit without reading its input; the resulting EPIPE is not our failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** The last `max` characters of `text`, trimmed: enough of a tool's complaint for an error message. */
export function tail(text: string, max = 2_000): string {
  const t = text.trim();
  return t.length <= max ? t : `…${t.slice(t.length - max)}`;
}

// Services often run with a PATH that lacks the sbin directories where ip(8) and friends live.
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** PATH for helpers and plugins: the caller's PATH plus the system directories it may lack. */
export function systemPath(path = process.env['PATH'] ?? ''): string {
  const dirs = path.split(delimiter).filter((d) => d !== '');
  for (const d of SYSTEM_DIRS) if (!dirs.includes(d)) dirs.push(d);
  return dirs.join(delimiter);
}

const toolCache = new Map<string, string>();

/**
 * Absolute path of a host tool (`ip`, `nsenter`, …) found on {@link systemPath};
 * falls back to the bare name so the spawn error names what is missing.
 */
export function hostTool(name: string): string {
  const cached = toolCache.get(name);
  if (cached !== undefined) return cached;
  for (const dir of systemPath().split(delimiter)) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      toolCache.set(name, candidate);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return name;
}

/**
 * Runs a host tool and returns its stdout; a failure names the tool, what it was
 * doing and what it said. A missing tool is a host precondition, not a bug.
 */
export function runTool(
  name: string,
  args: readonly string[],
  what: string,
  timeoutMs: number,
  input?: string,
): ResultAsync<string, HcrError> {
  const file = hostTool(name);
  return ResultAsync.fromPromise(
    runProcess(file, args, { timeoutMs, ...(input === undefined ? {} : { input }) }),
    (e) => toHcrError(e, what),
  ).andThen((o): Result<string, HcrError> => {
    if (o.kind === 'exited' && o.code === 0) return ok(o.stdout);
    if (o.kind === 'spawnError') {
      return err(
        o.error.code === 'ENOENT'
          ? errors.failedPrecondition(`${what}: host tool "${name}" is not installed (searched ${systemPath()})`)
          : errors.internal(`${what}: cannot run ${file}: ${o.error.message}`, o.error),
      );
    }
    if (o.kind === 'timeout')
      return err(errors.deadlineExceeded(`${what}: ${name} did not finish within ${timeoutMs} ms`));
    const why = o.signal !== null ? `killed by ${o.signal}` : `exit status ${o.code ?? '?'}`;
    return err(errors.internal(`${what}: ${name} failed (${why}): ${tail(o.stderr) || tail(o.stdout) || 'no output'}`));
  });
}
