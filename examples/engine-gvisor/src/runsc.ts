import { spawn, type StdioOptions } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { errors, type HcrError } from '@hcr/core';

/** How every runsc command of one engine is invoked. */
export interface RunscOptions {
  readonly binary: string;
  /** State directory (`--root`). */
  readonly root: string;
  readonly platform: string;
  /** `sandbox` (gVisor's own network stack in the pod's namespace) for pods, `none` for the probe. */
  readonly network: 'sandbox' | 'none';
  /** Debug log directory, or '' for none. */
  readonly debugLogDir: string;
  /** Bound on one command. */
  readonly timeoutMs: number;
}

/** OCI status of a container as runsc reports it. */
export type RunscStatus = 'creating' | 'created' | 'running' | 'stopped' | 'paused';

/** One container of `runsc state` / `runsc list --format json`. */
export interface RunscContainer {
  readonly id: string;
  readonly status: RunscStatus;
  /** Host PID of the sandbox process (the same for every container of a sandbox), -1 once stopped. */
  readonly pid: number;
  readonly bundle: string;
  readonly annotations: Readonly<Record<string, string>>;
}

/** What a finished runsc command left. */
export interface RunscOutcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Usage counters from `runsc events --stats` (the subset the engine reports). */
export interface RunscStats {
  /** Nanoseconds of CPU the container's processes used. */
  readonly cpuNanos: bigint;
  /** Bytes of memory in use by the whole sandbox: gVisor accounts memory per sandbox, not per container. */
  readonly sandboxMemoryBytes: number;
  readonly pids: number;
}

/**
 * The runsc command line, one method per subcommand the engine uses. Every
 * call passes the same global flags (runsc re-reads them on each command, and
 * a `start` with a different `--network` than its `create` fails), runs
 * bounded, and turns runsc's one-line error into an {@link HcrError} of the
 * right class.
 */
export class Runsc {
  /** Set once `runsc start` was seen to need {@link ROOT_NETNS_WORKAROUND}; later sandboxes use it at once. */
  private maskNetSysctls = false;

  constructor(private readonly opts: RunscOptions) {}

  /** Whether sandboxes are started with the /proc/sys/net mask (see {@link startSandbox}). */
  get masksNetSysctls(): boolean {
    return this.maskNetSysctls;
  }

  /** The global flags in front of every subcommand. */
  globalArgs(): string[] {
    return [
      `--root=${this.opts.root}`,
      `--platform=${this.opts.platform}`,
      `--network=${this.opts.network}`,
      ...(this.opts.debugLogDir === '' ? [] : ['--debug', `--debug-log=${this.opts.debugLogDir.replace(/\/?$/, '/')}`]),
    ];
  }

  /** runsc's state directory. */
  get root(): string {
    return this.opts.root;
  }

  /** The binary, for spawning long-running subcommands (`exec`, `wait`) directly. */
  get binary(): string {
    return this.opts.binary;
  }

  /** Runs `runsc <global flags> <args>` and resolves with whatever it did; rejects only if it cannot run at all. */
  run(
    args: readonly string[],
    options: {
      stdio?: StdioOptions;
      timeoutMs?: number;
      detached?: boolean;
      cwd?: string;
      wrap?: readonly string[];
    } = {},
  ): Promise<RunscOutcome> {
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs;
    const argv = [...(options.wrap ?? []), this.opts.binary, ...this.globalArgs(), ...args];
    return new Promise<RunscOutcome>((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), {
        stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
        detached: options.detached ?? false,
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        if (stderr.length < 64 * 1024) stderr += d;
      });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(errors.deadlineExceeded(`runsc ${args[0] ?? ''} did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      child.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          e.code === 'ENOENT'
            ? errors.failedPrecondition(`runsc not found at ${this.opts.binary} (Debian package runsc)`)
            : errors.unavailable(`cannot run ${this.opts.binary}: ${e.message}`, e),
        );
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  }

  /** Runs a subcommand that must succeed; its error message becomes the HcrError's. */
  async must(args: readonly string[], what: string): Promise<string> {
    const r = await this.run(args);
    if (r.code !== 0) throw runscError(what, r.stderr, r);
    return r.stdout;
  }

  /** `runsc state`; null when runsc has no such container. */
  async state(id: string): Promise<RunscContainer | null> {
    const r = await this.run(['state', id]);
    if (r.code !== 0) {
      if (isNotFound(r.stderr)) return null;
      throw runscError(`state of ${id}`, r.stderr, r);
    }
    return parseContainer(JSON.parse(r.stdout) as unknown);
  }

  /** `runsc list`: every container under the root. */
  async list(): Promise<RunscContainer[]> {
    const out = await this.must(['list', '--format=json'], 'list containers');
    const parsed = JSON.parse(out.trim() === '' ? 'null' : out) as unknown;
    return Array.isArray(parsed) ? parsed.map(parseContainer) : [];
  }

  /**
   * `runsc create`. The sandbox and gofer processes it starts inherit its
   * stdout and stderr and live as long as the container, so those go to a
   * file (`logFile`) rather than a pipe that would never close; a failure's
   * message is read back from it.
   */
  async create(id: string, bundle: string, logFile: string): Promise<void> {
    const fd = openSync(logFile, 'w', 0o600);
    let r: RunscOutcome;
    try {
      // Detached: the sandbox must not share HCR's process group, or a ^C to HCR would kill every pod.
      r = await this.run(['create', `--bundle=${bundle}`, id], { stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    if (r.code !== 0) throw runscError(`create ${id}`, await readFile(logFile, 'utf8').catch(() => ''), r);
  }

  /**
   * `runsc start`. For an application container runsc hands its own stdio to
   * the container's first process, so the caller passes the log FIFOs here;
   * runsc's own error message then lands in the container's stderr, which
   * the caller's log pump captures.
   */
  async start(id: string, stdio: StdioOptions): Promise<RunscOutcome> {
    return this.run(['start', id], { stdio, detached: true });
  }

  /**
   * `runsc start` of a sandbox, which is when runsc moves the pod's
   * interfaces from its network namespace into gVisor's network stack.
   *
   * runsc before 2023 first checks that the namespace is not the host's by
   * testing whether /proc/sys/net/core/rmem_default exists — a file only the
   * initial namespace had until Linux 6.x namespaced it — so on a current
   * kernel it refuses every pod ("cannot run with network enabled in root
   * network namespace"). When it does, the start is repeated with that check
   * blinded: in a private mount namespace, with an empty tmpfs over
   * /proc/sys/net for the runsc start process alone (the sandbox itself is
   * already running and is not affected). Newer runsc never gets here.
   */
  async startSandbox(id: string): Promise<void> {
    if (!this.maskNetSysctls) {
      const r = await this.run(['start', id], { detached: true });
      if (r.code === 0) return;
      if (!ROOT_NETNS_BUG.test(r.stderr)) throw runscError(`start sandbox ${id}`, r.stderr, r);
      this.maskNetSysctls = true;
    }
    const r = await this.run(['start', id], { detached: true, wrap: ROOT_NETNS_WORKAROUND });
    if (r.code !== 0) throw runscError(`start sandbox ${id}`, r.stderr, r);
  }

  /** `runsc kill`; resolves false when there was nothing to signal (stopped or absent). */
  async kill(id: string, signal: string, options: { all?: boolean; pid?: number } = {}): Promise<boolean> {
    const r = await this.run([
      'kill',
      ...(options.all === true ? ['--all'] : []),
      ...(options.pid === undefined ? [] : [`--pid=${options.pid}`]),
      id,
      signal,
    ]);
    if (r.code === 0) return true;
    if (isNotFound(r.stderr) || /no such process|not running|is stopped|not started|cannot signal/i.test(r.stderr)) {
      return false;
    }
    throw runscError(`signal ${signal} to ${id}`, r.stderr, r);
  }

  /**
   * Removes a container's runsc state, killing it first if it runs; absent
   * containers are fine. `--force` asks the sandbox to stop the container,
   * which fails once the sandbox itself is gone (a stopped pod), so a stopped
   * container is deleted without it.
   */
  async delete(id: string): Promise<void> {
    const state = await this.state(id);
    if (state === null) return;
    const r = await this.run(state.status === 'stopped' ? ['delete', id] : ['delete', '--force', id]);
    if (r.code === 0 || isNotFound(r.stderr)) return;
    // It may have stopped (or its sandbox died) between the two commands.
    const again = await this.state(id);
    if (again === null) return;
    if (again.status === 'stopped' && state.status !== 'stopped') {
      const retry = await this.run(['delete', id]);
      if (retry.code === 0 || isNotFound(retry.stderr)) return;
      throw runscError(`delete ${id}`, retry.stderr, retry);
    }
    throw runscError(`delete ${id}`, r.stderr, r);
  }

  /** `runsc events --stats`. */
  async stats(id: string): Promise<RunscStats> {
    const out = await this.must(['events', '--stats', id], `stats of ${id}`);
    return parseStats(out);
  }

  /** `runsc --version`'s first line. */
  async version(timeoutMs: number): Promise<string> {
    const r = await this.run(['--version'], { timeoutMs });
    if (r.code !== 0) throw runscError('version', r.stderr, r);
    return r.stdout.split('\n')[0]?.trim() ?? '';
  }

  /** `runsc help platforms`: the platforms this runsc was built with. */
  async platforms(timeoutMs: number): Promise<string[]> {
    const r = await this.run(['help', 'platforms'], { timeoutMs });
    return r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^[a-z0-9_-]+$/.test(l));
  }
}

/** runsc's refusal that {@link Runsc.startSandbox} works around. */
const ROOT_NETNS_BUG = /cannot run with network enabled in root network namespace/;

/**
 * The command runsc start is wrapped in when runsc mistakes the pod's network
 * namespace for the host's: a private mount namespace where /proc/sys/net is
 * an empty, read-only tmpfs. The runsc command line follows as `"$@"`, so no
 * argument is ever parsed by the shell.
 */
const ROOT_NETNS_WORKAROUND: readonly string[] = [
  'unshare',
  '--mount',
  '--propagation=private',
  '--',
  'sh',
  '-c',
  'mount -t tmpfs -o ro,size=4k,mode=0555 hcr-gvisor-netmask /proc/sys/net && exec "$@"',
  'sh',
];

/** True when runsc's message says the container does not exist. */
export function isNotFound(stderr: string): boolean {
  return /loading container[^:]*: (file does not exist|no such file or directory)|container .* does not exist|no container with id/i.test(
    stderr,
  );
}

/** runsc's last non-empty stderr line without glog prefixes: the message a person needs. */
export function runscMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.replace(/^[IWEFD]\d{4} [\d:.]+\s+\d+ \S+\] /, '').trim())
    .filter((l) => l !== '');
  const fatal = [...lines].reverse().find((l) => l.startsWith('FATAL ERROR: '));
  return (fatal ?? lines[lines.length - 1] ?? '').replace(/^FATAL ERROR: /, '');
}

/** The HcrError for a failed runsc command. */
export function runscError(what: string, stderr: string, r: Pick<RunscOutcome, 'code' | 'signal'>): HcrError {
  const message = runscMessage(stderr) || `exit ${r.code ?? r.signal ?? '?'} without a message`;
  if (isNotFound(stderr)) return errors.notFound(`runsc ${what}: ${message}`);
  return errors.internal(`runsc ${what}: ${message}`);
}

function parseContainer(raw: unknown): RunscContainer {
  const o = (raw ?? {}) as Record<string, unknown>;
  return {
    id: String(o['id'] ?? ''),
    status: String(o['status'] ?? 'stopped') as RunscStatus,
    pid: typeof o['pid'] === 'number' ? o['pid'] : -1,
    bundle: String(o['bundle'] ?? ''),
    annotations: (o['annotations'] ?? {}) as Record<string, string>,
  };
}

/** Parses one `runsc events --stats` line: `{"type":"stats","data":{"cpu":…,"memory":…,"pids":…}}`. */
export function parseStats(out: string): RunscStats {
  const line = out.split('\n').find((l) => l.trim().startsWith('{'));
  if (line === undefined) throw errors.internal(`runsc events --stats printed no stats: ${out.slice(0, 200)}`);
  const data = ((JSON.parse(line) as Record<string, unknown>)['data'] ?? {}) as {
    cpu?: { usage?: { total?: number } };
    memory?: { usage?: { usage?: number } };
    pids?: { current?: number };
  };
  return {
    cpuNanos: BigInt(Math.round(data.cpu?.usage?.total ?? 0)),
    sandboxMemoryBytes: data.memory?.usage?.usage ?? 0,
    pids: data.pids?.current ?? 0,
  };
}
