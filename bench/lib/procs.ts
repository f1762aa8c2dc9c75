import { readFileSync, readdirSync } from 'node:fs';

/** Pids of processes whose argv (NUL-joined as in /proc/<pid>/cmdline) satisfies `test`. */
export function findPids(test: (argv: readonly string[]) => boolean): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8')
        .split('\0')
        .filter((a) => a !== '');
      if (argv.length > 0 && test(argv)) out.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

/** The dockerd serving /var/run/docker.sock, and the containerd it runs (their CPU counts toward HCR-docker's cost). */
export function dockerDaemonPids(): number[] {
  return findPids(
    (argv) =>
      /(^|\/)dockerd$/.test(argv[0]!) ||
      (/(^|\/)containerd$/.test(argv[0]!) && argv.some((a) => a.includes('/var/run/docker/containerd'))),
  );
}
