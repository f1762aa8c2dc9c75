import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Decodes the octal escapes (`\040` for a space) the kernel writes into /proc mount tables. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The overlayfs upper directory mounted at `mountPoint`, from
 * /proc/self/mountinfo: where a container's writes land, so its size is the
 * container's writable layer. Null when nothing (or no overlay) is mounted there.
 */
export async function overlayUpperDir(mountPoint: string, mountinfo?: string): Promise<string | null> {
  const text = mountinfo ?? (await readFile('/proc/self/mountinfo', 'utf8'));
  let found: string | null = null;
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (unescapeMountField(fields[4] ?? '') !== mountPoint) continue;
    const sep = fields.indexOf('-');
    if (sep === -1 || fields[sep + 1] !== 'overlay') continue;
    const upper = (fields[sep + 3] ?? '').split(',').find((o) => o.startsWith('upperdir='));
    // The last mount at a point is the visible one.
    found = upper === undefined ? null : unescapeMountField(upper.slice('upperdir='.length));
  }
  return found;
}

/** Bytes used by the regular files under `dir` (symlinks not followed; each hard link counted once). */
export async function diskUsage(dir: string): Promise<number> {
  let bytes = 0;
  const seen = new Set<string>();
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const st = await lstat(p).catch(() => null);
        if (st === null) continue;
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
        bytes += st.blocks * 512;
      }
    }
  };
  await walk(dir);
  return bytes;
}

/** Receive and transmit bytes of every non-loopback interface in a /proc/<pid>/net/dev table. */
export function parseNetDev(text: string): { rxBytes: number; txBytes: number } {
  let rxBytes = 0;
  let txBytes = 0;
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    if (line.slice(0, colon).trim() === 'lo') continue;
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    rxBytes += f[0] ?? 0;
    txBytes += f[8] ?? 0;
  }
  return { rxBytes, txBytes };
}

/** Network counters of the namespace process `pid` lives in; null when it is gone. */
export async function netnsCounters(pid: number): Promise<{ rxBytes: number; txBytes: number } | null> {
  if (pid <= 0) return null;
  const text = await readFile(`/proc/${pid}/net/dev`, 'utf8').catch(() => null);
  return text === null ? null : parseNetDev(text);
}

/**
 * Host PIDs of runsc processes (sandbox, gofers) started for the bundle in
 * `bundleDir`. runsc passes `--bundle` to each of them, so their command line
 * tells which pod or container they serve.
 */
export async function runscProcesses(bundleDir: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const argv = cmdline.split('\0');
    if (!(argv[0] ?? '').startsWith('runsc')) continue;
    const i = argv.indexOf('--bundle');
    if (argv.includes(`--bundle=${bundleDir}`) || (i !== -1 && argv[i + 1] === bundleDir)) out.push(Number(entry));
  }
  return out;
}

/**
 * Waits until no runsc process serves `bundleDir` any more: `runsc delete`
 * returns before its gofer has exited, and the gofer still holds the
 * container's root filesystem, which cannot be unmounted until it is gone.
 * Resolves false after `timeoutMs`.
 */
export async function waitRunscGone(bundleDir: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
    if ((await runscProcesses(bundleDir)).length === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(delay);
  }
}
