/**
 * VM templates (the Kata Containers "VM factory" idea): a VM of one size is
 * booted once to an idle, greeted agent with no pod state (no share mounted,
 * no NIC configured), paused, and saved — its RAM lives in a file (shared
 * mapping) and its device state goes through QEMU's migration stream with
 * `x-ignore-shared`, so the state file is small. A pod VM of that size then
 * starts with the same machine and devices, maps the RAM file privately
 * (copy-on-write) and loads the device state instead of booting a kernel;
 * the agent learns the pod's identity afterwards (entropy at Hello, MAC at
 * SetupPod).
 *
 * Layout under the engine's state dir: `templates/<key>/{memory,state,
 * manifest.json}`. A template is built in `templates/.<key>.tmp-<random>`
 * and renamed into place only when complete and synced, so a crash leaves no
 * half-written template. A template dir is never written again once in
 * place, only removed: VMs map its RAM file, and changing the file under
 * a private mapping would change their memory.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { errors, type HcrError, type Logger, type ResultAsync } from '@hcr/core';
import { AgentClient } from './agent/client.js';
import { PROTOCOL_VERSION } from './protocol/wire.gen.js';
import type { Accel, VmDriver, VmHandle } from './vm/driver.js';

/** Bumped when the layout or the way a template VM is made changes. */
const TEMPLATE_FORMAT = 1;

/**
 * The MAC of every template's NIC, hence of every clone's until the agent
 * gives it the pod's (locally administered, "hcr").
 */
export const TEMPLATE_MAC = '02:68:63:72:00:01';

/** The agent feature a template VM's agent must announce (Hello.entropy, Interface.guest_mac). */
export const CLONE_FEATURE = 'clone';

/** What makes two VMs interchangeable: a template serves only pods of its exact shape. */
export interface TemplateShape {
  readonly vcpus: number;
  readonly memoryMiB: number;
  readonly accel: Accel;
}

/** A template ready to start VMs from. */
export interface VmTemplate {
  readonly key: string;
  readonly dir: string;
  /** The RAM image; mapped privately by every VM started from it. */
  readonly memoryPath: string;
  /** QEMU's device state (migration stream without RAM). */
  readonly statePath: string;
  /** The MAC the clone's NIC carries until the agent sets the pod's. */
  readonly mac: string;
}

/** What the store needs from the engine. */
export interface TemplateDeps {
  readonly driver: VmDriver;
  readonly logger: Logger;
  readonly kernel: string;
  readonly initrd: string;
  /** The mount tag and TAP name of pod VMs: a clone's devices must match the template's. */
  readonly shareTag: string;
  readonly tapName: string;
  /** Extra kernel command-line words of pod VMs; a clone runs the kernel its template booted. */
  readonly cmdline: readonly string[];
  readonly bootTimeoutMs: number;
  /** The VMM's version line, part of every template's identity. */
  readonly vmmVersion: () => Promise<string>;
}

interface Manifest {
  readonly format: number;
  readonly key: string;
  /** Hash of everything but the shape: templates of another base are stale. */
  readonly base: string;
  readonly inputs: Record<string, unknown>;
  readonly stateSha256: string;
  readonly memoryBytes: number;
  readonly createdAt: string;
}

/** A file's identity without reading it: a rebuilt kernel or initramfs gets a new one. */
function fileId(path: string): string {
  try {
    const real = realpathSync(path);
    const st = statSync(real);
    return `${real}:${st.size}:${st.mtimeMs}:${st.ino}`;
  } catch {
    return `${path}:missing`;
  }
}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function unwrap<T>(r: ResultAsync<T, HcrError>): Promise<T> {
  const v = await r;
  if (v.isErr()) throw v.error;
  return v.value;
}

/**
 * The engine's templates: finds a valid one for a shape, builds it when
 * missing (one build per shape at a time; pods of that shape wait for it),
 * and drops one that turned out broken. Never fails a pod: every problem
 * ends in `null`, a warning, and a normal boot by the caller.
 */
export class TemplateStore {
  private readonly building = new Map<string, Promise<VmTemplate | null>>();
  /** Keys whose build failed, with the time: not retried for a while (a build costs a whole boot). */
  private readonly failed = new Map<string, number>();
  /** VMs of builds in progress, killed by close(). */
  private readonly buildVms = new Set<VmHandle>();
  private baseHash: Promise<{ base: string; inputs: Record<string, unknown> }> | null = null;
  private closed = false;
  private readonly log: Logger;

  /**
   * @param root persistent dir of the templates (under the engine's state dir)
   * @param runRoot volatile dir for the sockets of template VMs being built (short, for sun_path)
   */
  constructor(
    readonly root: string,
    private readonly runRoot: string,
    private readonly deps: TemplateDeps,
    private readonly retryAfterMs = 5 * 60_000,
  ) {
    this.log = deps.logger.child({ component: 'vm-template' });
  }

  /**
   * Removes what an interrupted build left (temporary dirs, a template VM
   * still running) and templates of another kernel, initramfs or VMM.
   */
  async prune(): Promise<void> {
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
    for (const dir of this.list(this.runRoot)) {
      const vmDir = join(this.runRoot, dir);
      const handle = await unwrap(this.deps.driver.reconnect(vmDir)).catch(() => null);
      if (handle !== null) await unwrap(this.deps.driver.kill(handle)).catch(() => undefined);
      rmSync(vmDir, { recursive: true, force: true });
    }
    const { base } = await this.base();
    for (const name of this.list(this.root)) {
      const dir = join(this.root, name);
      const manifest = name.startsWith('.') ? null : this.readManifest(dir);
      if (manifest === null || manifest.base !== base || manifest.format !== TEMPLATE_FORMAT) {
        this.log.info({ template: name }, 'removing a stale or unfinished VM template');
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }

  /** The key of a shape's template under the current kernel, initramfs and VMM. */
  async keyOf(shape: TemplateShape): Promise<string> {
    const { base } = await this.base();
    return sha256(JSON.stringify({ base, vcpus: shape.vcpus, memoryMiB: shape.memoryMiB, accel: shape.accel })).slice(
      0,
      24,
    );
  }

  /**
   * A valid template of `shape`, built first if there is none (waiting for
   * a build already running); null when none can be had now.
   */
  async get(shape: TemplateShape): Promise<VmTemplate | null> {
    if (this.closed) return null;
    const key = await this.keyOf(shape);
    const ready = this.load(key, shape);
    if (ready !== null) return ready;
    const inFlight = this.building.get(key);
    if (inFlight !== undefined) return inFlight;
    const failedAt = this.failed.get(key);
    if (failedAt !== undefined && Date.now() - failedAt < this.retryAfterMs) return null;
    const build = this.build(key, shape)
      .catch((e: unknown) => {
        this.failed.set(key, Date.now());
        this.log.warn(
          { template: key, ...shape, err: (e as Error).message },
          'building a VM template failed; pods of this size boot normally',
        );
        return null;
      })
      .finally(() => this.building.delete(key));
    this.building.set(key, build);
    return build;
  }

  /** Drops a template a VM could not start from; the next pod of its size builds a new one. */
  invalidate(template: VmTemplate, why: string): void {
    this.log.warn({ template: template.key, why }, 'dropping a broken VM template; pods of its size boot normally');
    // Renamed first: a concurrent get() must not find it half-removed.
    const trash = join(this.root, `.${template.key}.trash-${randomBytes(4).toString('hex')}`);
    try {
      renameSync(template.dir, trash);
    } catch {
      return;
    }
    rmSync(trash, { recursive: true, force: true });
  }

  /** Number of templates in place, for health info. */
  count(): number {
    return this.list(this.root).filter((n) => !n.startsWith('.')).length;
  }

  /** Stops builds in progress (their VMs are killed) and lets no new one start. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.buildVms].map((h) => unwrap(this.deps.driver.kill(h)).catch(() => undefined)));
    await Promise.all([...this.building.values()]);
  }

  private base(): Promise<{ base: string; inputs: Record<string, unknown> }> {
    this.baseHash ??= this.deps.vmmVersion().then((vmm) => {
      const inputs = {
        format: TEMPLATE_FORMAT,
        protocol: PROTOCOL_VERSION,
        kernel: fileId(this.deps.kernel),
        initrd: fileId(this.deps.initrd),
        vmm,
        shareTag: this.deps.shareTag,
        tapName: this.deps.tapName,
        mac: TEMPLATE_MAC,
        // Only when set (the test-only fault hook), so templates of a normal engine keep their keys.
        ...(this.deps.cmdline.length > 0 ? { cmdline: this.deps.cmdline } : {}),
      };
      return { base: sha256(JSON.stringify(inputs)), inputs };
    });
    return this.baseHash;
  }

  private readManifest(dir: string): Manifest | null {
    try {
      return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    } catch {
      return null;
    }
  }

  /** The template of `key` when it is complete and its files are what was saved; else null (and it is dropped). */
  private load(key: string, shape: TemplateShape): VmTemplate | null {
    const dir = join(this.root, key);
    if (!existsSync(dir)) return null;
    const t: VmTemplate = {
      key,
      dir,
      memoryPath: join(dir, 'memory'),
      statePath: join(dir, 'state'),
      mac: TEMPLATE_MAC,
    };
    const manifest = this.readManifest(dir);
    let why: string | null = null;
    try {
      if (manifest === null || manifest.key !== key) why = 'its manifest is missing or unreadable';
      else if (
        statSync(t.memoryPath).size !== shape.memoryMiB * 1024 * 1024 ||
        manifest.memoryBytes !== statSync(t.memoryPath).size
      )
        why = 'its memory file has the wrong size';
      // The state is small (device state only): hashing it on every use is cheap and catches a damaged file.
      else if (sha256(readFileSync(t.statePath)) !== manifest.stateSha256)
        why = 'its state file does not match its checksum';
    } catch (e) {
      why = `its files cannot be read (${(e as Error).message})`;
    }
    if (why !== null) {
      this.invalidate(t, why);
      return null;
    }
    return t;
  }

  private async build(key: string, shape: TemplateShape): Promise<VmTemplate | null> {
    const { driver } = this.deps;
    const { inputs, base } = await this.base();
    const started = performance.now();
    const tmp = join(this.root, `.${key}.tmp-${randomBytes(4).toString('hex')}`);
    const vmDir = join(this.runRoot, randomBytes(6).toString('hex'));
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    mkdirSync(join(vmDir, 'share'), { recursive: true, mode: 0o700 });
    let handle: VmHandle | null = null;
    try {
      handle = await unwrap(
        driver.start({
          name: `hcr-template-${key.slice(0, 8)}`,
          dir: vmDir,
          kernel: this.deps.kernel,
          initrd: this.deps.initrd,
          cmdline: this.deps.cmdline,
          vcpus: shape.vcpus,
          memoryMiB: shape.memoryMiB,
          accel: shape.accel,
          netnsPath: null,
          // QEMU makes the TAP in a namespace of its own; both go with it. The NIC needs a TAP
          // backend like a pod's: the offloads the device offers depend on it and must match.
          privateNetns: true,
          nics: [{ tap: this.deps.tapName, mac: TEMPLATE_MAC }],
          shares: [{ tag: this.deps.shareTag, path: join(vmDir, 'share') }],
          memoryFile: { path: join(tmp, 'memory'), shared: true },
        }),
      );
      this.buildVms.add(handle);
      if (this.closed) throw new Error('the engine is closing');
      const client = await unwrap(
        AgentClient.connect(driver.agentTransport(handle), this.deps.bootTimeoutMs, this.log),
      );
      try {
        const hello = await unwrap(
          client.request(
            'Hello',
            { hostTime: BigInt(Date.now()) * 1_000_000n, resume: [], entropy: randomBytes(64) },
            this.deps.bootTimeoutMs,
          ),
        );
        if (!hello.features.includes(CLONE_FEATURE)) {
          throw errors.failedPrecondition(
            `the guest agent (${hello.agentVersion}) cannot be cloned; rebuild the guest assets with setup-assets.sh`,
          );
        }
      } finally {
        client.close();
      }
      await unwrap(driver.saveState(handle, join(tmp, 'state'), this.deps.bootTimeoutMs));
      await unwrap(driver.kill(handle));
      this.buildVms.delete(handle);
      handle = null;
      if (this.closed) throw new Error('the engine is closing');
      const memoryBytes = statSync(join(tmp, 'memory')).size;
      const manifest: Manifest = {
        format: TEMPLATE_FORMAT,
        key,
        base,
        inputs: { ...inputs, ...shape },
        stateSha256: sha256(readFileSync(join(tmp, 'state'))),
        memoryBytes,
        createdAt: new Date().toISOString(),
      };
      writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2), { mode: 0o600 });
      for (const f of ['memory', 'state', 'manifest.json']) fsyncPath(join(tmp, f));
      fsyncPath(tmp);
      try {
        renameSync(tmp, join(this.root, key));
      } catch (e) {
        // Another builder (another HCR on the same state dir) was first; its template is as good.
        if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (e as NodeJS.ErrnoException).code !== 'EEXIST')
          throw e;
        rmSync(tmp, { recursive: true, force: true });
      }
      fsyncPath(this.root);
      this.log.info({ template: key, ...shape, ms: Math.round(performance.now() - started) }, 'VM template built');
      return this.load(key, shape);
    } finally {
      if (handle !== null) {
        this.buildVms.delete(handle);
        await unwrap(driver.kill(handle)).catch(() => undefined);
      }
      rmSync(vmDir, { recursive: true, force: true });
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  private list(dir: string): string[] {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  }
}
