/**
 * What the engine keeps on disk under its runtime dir so that a restarted
 * HCR finds its VMs and containers again (and removes orphans by id alone).
 * Every file is written to a temporary name and renamed into place.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Accel } from './vm/driver.js';
import type { Process } from './protocol/wire.gen.js';
import { NO_SECCOMP } from './seccomp.js';

/** A pod VM. */
export interface SandboxRecord {
  readonly id: string;
  /** core's directory for the sandbox. */
  readonly runtimeDir: string;
  /** The VM's pidfile, sockets and console log. */
  readonly vmDir: string;
  /** The 9p share root (pod files, container root filesystems and mounts). */
  readonly shareDir: string;
  readonly netnsPath: string | null;
  /** The pod's CNI interface in the namespace, joined to the TAP. */
  readonly ifname: string;
  readonly accel: Accel;
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** The template the VM was started from; absent or '' for a booted VM. */
  readonly template?: string;
  /** The MAC QEMU gave the guest NIC; the agent swaps it for the pod interface's when the network is wired. */
  readonly nicMac?: string;
  /** True once the TAP is joined to the CNI interface and the agent has set up the pod (SetupPod). */
  readonly wired?: boolean;
}

/** A container and what it takes to run execs in it and write its log. */
export interface ContainerRecord {
  readonly id: string;
  readonly sandboxId: string;
  readonly logPath: string;
  readonly stdin: boolean;
  readonly stdinOnce: boolean;
  readonly tty: boolean;
  /** The main process; execs run with its environment, user and capabilities. */
  readonly process: Process;
}

/** Where the log of a container has been written up to (see logs.ts). */
export interface LogCursorRecord {
  readonly written: string;
  readonly lineStart: { readonly stdout: string | null; readonly stderr: string | null };
}

// Wire types carry u64 fields as bigint (seccomp argument values), which JSON has no form for.
const BIGINT = '$bigint';
const toJson = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? { [BIGINT]: v.toString() } : v);
const fromJson = (_: string, v: unknown): unknown =>
  typeof v === 'object' && v !== null && typeof (v as Record<string, unknown>)[BIGINT] === 'string'
    ? BigInt((v as Record<string, string>)[BIGINT] ?? '0')
    : v;

function writeAtomic(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, toJson), { mode: 0o600 });
  renameSync(tmp, path);
}

function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8'), fromJson) as T;
  } catch {
    return null;
  }
}

/** The engine's records, rooted at its runtime dir. */
export class EngineState {
  constructor(private readonly root: string) {}

  private sandboxPath(id: string): string {
    return join(this.root, 'sandboxes', `${id}.json`);
  }

  /** Directory of a container's files (record, log cursor). */
  containerDir(id: string): string {
    return join(this.root, 'containers', id);
  }

  putSandbox(r: SandboxRecord): void {
    writeAtomic(this.sandboxPath(r.id), r);
  }

  getSandbox(id: string): SandboxRecord | null {
    return readJson<SandboxRecord>(this.sandboxPath(id));
  }

  deleteSandbox(id: string): void {
    rmSync(this.sandboxPath(id), { force: true });
  }

  listSandboxes(): SandboxRecord[] {
    return this.list('sandboxes')
      .filter((f) => f.endsWith('.json'))
      .map((f) => this.getSandbox(f.slice(0, -'.json'.length)))
      .filter((r): r is SandboxRecord => r !== null);
  }

  putContainer(r: ContainerRecord): void {
    writeAtomic(join(this.containerDir(r.id), 'record.json'), r);
  }

  getContainer(id: string): ContainerRecord | null {
    const r = readJson<ContainerRecord>(join(this.containerDir(id), 'record.json'));
    // Records written before processes carried a seccomp filter.
    return r === null || r.process.seccomp !== undefined ? r : { ...r, process: { ...r.process, seccomp: NO_SECCOMP } };
  }

  /** Removes the container's record and log cursor. */
  deleteContainer(id: string): void {
    rmSync(this.containerDir(id), { recursive: true, force: true });
  }

  listContainers(sandboxId?: string): ContainerRecord[] {
    return this.list('containers')
      .map((id) => this.getContainer(id))
      .filter((r): r is ContainerRecord => r !== null && (sandboxId === undefined || r.sandboxId === sandboxId));
  }

  /** Saves a log cursor; a container already removed keeps no files (a late writer must not bring them back). */
  putLogCursor(id: string, c: LogCursorRecord): void {
    if (!existsSync(join(this.containerDir(id), 'record.json'))) return;
    writeAtomic(join(this.containerDir(id), 'log-cursor.json'), c);
  }

  getLogCursor(id: string): LogCursorRecord | null {
    return readJson<LogCursorRecord>(join(this.containerDir(id), 'log-cursor.json'));
  }

  private list(sub: string): string[] {
    try {
      return readdirSync(join(this.root, sub));
    } catch {
      return [];
    }
  }
}
