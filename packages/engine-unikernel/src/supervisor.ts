import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import type { ContainerFiles } from './layout.js';

/**
 * The supervisor: a few lines of Perl (perl-base is part of every Debian
 * install) that fork the monitor, record its pid, wait for it and write how
 * it ended. QEMU's own `-daemonize` cannot be used: the daemon is reparented
 * to init and its exit status — the guest's isa-debug-exit code — is lost.
 * The supervisor runs in its own session, so it and the VM outlive HCR; it
 * ignores the signals a dying terminal or session would send.
 */
const SUPERVISOR = String.raw`
use strict; use warnings;
my ($dir, @argv) = @ARGV;
sub put { my ($path, $text) = @_;
  open(my $fh, '>', "$path.tmp") or die "$path.tmp: $!\n"; print $fh $text;
  close($fh) or die "$path.tmp: $!\n"; rename("$path.tmp", $path) or die "$path: $!\n"; }
$SIG{$_} = 'IGNORE' for qw(HUP INT TERM PIPE);
my $pid = fork();
defined $pid or die "fork: $!\n";
if ($pid == 0) {
  $SIG{$_} = 'DEFAULT' for qw(HUP INT TERM PIPE);
  exec { $argv[0] } @argv or do { print STDERR "exec $argv[0]: $!\n"; exit 127 };
}
put("$dir/monitor.pid", "$pid\n");
my $r; do { $r = waitpid($pid, 0) } while ($r == -1 && $!{EINTR});
my $st = $?;
put("$dir/exit", ($st & 127) ? "signal " . ($st & 127) . "\n" : "exit " . ($st >> 8) . "\n");
`;

/** How a monitor process ended, as the supervisor recorded it. */
export type MonitorStatus =
  { readonly kind: 'exit'; readonly code: number } | { readonly kind: 'signal'; readonly signal: number };

/** Parses the supervisor's exit file; null when malformed. */
export function parseMonitorStatus(text: string): MonitorStatus | null {
  const m = /^(exit|signal) (\d+)\s*$/.exec(text);
  if (m === null) return null;
  const n = Number(m[2]);
  return m[1] === 'exit' ? { kind: 'exit', code: n } : { kind: 'signal', signal: n };
}

/** Reads the exit file; null while the monitor runs. */
export async function readMonitorStatus(files: ContainerFiles): Promise<MonitorStatus | null> {
  try {
    return parseMonitorStatus(await readFile(files.exit, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Starts `argv` under the supervisor, inside `netnsPath` when given (through
 * nsenter, so the monitor opens its TAP in the pod's namespace), with the
 * container dir as working directory (QEMU binds its QMP socket there). The
 * monitor's stdout appends to the console file (monitors whose console is
 * stdout) and its stderr to the monitor log. Resolves with the supervisor pid.
 */
export async function startSupervised(
  files: ContainerFiles,
  netnsPath: string | null,
  argv: readonly string[],
): Promise<number> {
  const perl = ['perl', '-e', SUPERVISOR, files.dir, ...argv];
  const command = netnsPath === null ? perl : ['nsenter', `--net=${netnsPath}`, '--', ...perl];
  const out = openSync(files.console, 'a', 0o640);
  const errFd = openSync(files.monitorLog, 'a', 0o640);
  try {
    const child = spawn(command[0]!, command.slice(1), {
      cwd: files.dir,
      detached: true,
      stdio: ['ignore', out, errFd],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => resolve(child.pid!));
    });
    child.unref();
    await writeFile(files.supervisorPid, `${pid}\n`);
    return pid;
  } finally {
    closeSync(out);
    closeSync(errFd);
  }
}

/** Reads a pid file; null when absent or malformed. */
export async function readPid(path: string): Promise<number | null> {
  try {
    const n = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/** Whether process `pid` exists (and is not a zombie). */
export async function processAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * The live monitor pid of a container: the pid the supervisor recorded,
 * provided the monitor has not been reaped yet (no exit file) and that pid is
 * still the supervisor's child — so a recycled pid is never signalled.
 */
export async function liveMonitorPid(files: ContainerFiles): Promise<number | null> {
  const [pid, supervisor] = await Promise.all([readPid(files.monitorPid), readPid(files.supervisorPid)]);
  if (pid === null || supervisor === null) return null;
  if ((await readMonitorStatus(files)) !== null) return null;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = fields[0];
    const ppid = Number(fields[1]);
    return ppid === supervisor && state !== 'Z' && state !== 'X' ? pid : null;
  } catch {
    return null;
  }
}
