import { errors, type HcrError } from '@hcr/core';
import { err, ok, type Result } from 'neverthrow';
import { match } from 'ts-pattern';
import type { UnikernelType } from './annotations.js';

/** x86 Linux's COMMAND_LINE_SIZE; unikernel loaders use the same bound or a larger one. */
export const MAX_CMDLINE = 2048;

/** IPv4 settings for the guest, from the pod's CNI result. */
export interface GuestNetwork {
  readonly ip: string;
  readonly prefixLength: number;
  /** '' when CNI gave no gateway. */
  readonly gateway: string;
  /** '' when the pod has no DNS server configured. */
  readonly dns: string;
}

/** What a guest command line is built from. */
export interface CmdlineInput {
  readonly type: UnikernelType;
  /** The application's argv (argv[0] first); may be empty. */
  readonly argv: readonly string[];
  /** `KEY=VALUE` pairs for the guest environment. */
  readonly env: readonly string[];
  readonly network: GuestNetwork | null;
  /** Whether an initrd is booted (Linux: `rdinit=` instead of `init=`). */
  readonly hasInitrd: boolean;
  /** Parameters Linux needs under TCG (`tsc_early_khz=… no_timer_check`), empty under KVM. */
  readonly linuxTimingParams: readonly string[];
  /** Unikraft version from the image ('' = current convention). */
  readonly version: string;
  /** Name the unikernel sees as argv[0] when the type puts one first (Unikraft). */
  readonly appName: string;
}

// Linux's init gets at most 32 argv and 32 envp entries (MAX_INIT_ARGS/ENVS);
// more panics the guest, so refuse them up front.
const LINUX_MAX_INIT_ENTRIES = 32;
// Unikraft ≥ 0.16.1 parses `netdev.ip=`; older ones take the three ipv4 keys.
const UNIKRAFT_NETDEV_IP_SINCE = [0, 16, 1] as const;

/** Dotted-quad netmask of an IPv4 prefix length. */
export function prefixToNetmask(prefix: number): string {
  const bits = prefix <= 0 ? 0 : (0xffffffff << (32 - Math.min(prefix, 32))) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}

/**
 * Builds the guest kernel command line in the convention of the unikernel
 * type, as urunc does: Linux gets `console=ttyS0 … ip=<ip>::<gw>:<mask>::eth0:off
 * … rdinit=<argv0> -- <args>`; Unikraft gets `<app> env.vars=[ … ]
 * netdev.ip=<ip>/<prefix>:<gw>[:<dns>] -- <args>`. Linux and Unikraft split
 * the line on whitespace but honour double quotes, so a word with spaces is
 * quoted (`"hello World"`, `KEY="a b"`); a word with a double quote cannot be
 * written, nor can whitespace for Solo5 guests (the tender passes the line on
 * as is), and either is refused naming the word.
 */
export function buildCmdline(input: CmdlineInput): Result<string, HcrError> {
  const quotes = input.type === 'linux' || input.type === 'unikraft';
  for (const word of [...input.argv, ...input.env]) {
    if (word.includes('"') || (!quotes && /\s/.test(word))) {
      return err(
        errors.invalidArgument(
          `${JSON.stringify(word)} cannot be passed on a ${input.type} unikernel command line: ` +
            (word.includes('"') ? 'it contains a double quote' : 'it contains whitespace, which the guest splits on'),
        ),
      );
    }
  }
  if (quotes) input = { ...input, argv: input.argv.map(quoteWord), env: input.env.map(quoteWord) };
  const words = match(input.type)
    .with('linux', () => linuxWords(input))
    .with('unikraft', () => unikraftWords(input))
    .with('rumprun', 'mirage', () => ok(solo5Words(input)))
    .exhaustive();
  if (words.isErr()) return err(words.error);
  const line = words.value.join(' ');
  if (Buffer.byteLength(line) > MAX_CMDLINE) {
    return err(
      errors.invalidArgument(
        `the guest command line would be ${Buffer.byteLength(line)} bytes, over the ${MAX_CMDLINE}-byte limit; ` +
          'shorten the container args or environment',
      ),
    );
  }
  return ok(line);
}

function linuxWords(input: CmdlineInput): Result<string[], HcrError> {
  if (input.env.length > LINUX_MAX_INIT_ENTRIES - 4) {
    return err(
      errors.invalidArgument(
        `a linux unikernel's init takes at most ${LINUX_MAX_INIT_ENTRIES - 4} environment variables on its ` +
          `command line; this container has ${input.env.length}`,
      ),
    );
  }
  if (input.argv.length > LINUX_MAX_INIT_ENTRIES - 1) {
    return err(
      errors.invalidArgument(
        `a linux unikernel's init takes at most ${LINUX_MAX_INIT_ENTRIES - 1} arguments; this container has ${input.argv.length}`,
      ),
    );
  }
  const words = ['console=ttyS0', 'panic=-1', ...input.linuxTimingParams];
  const net = input.network;
  if (net !== null) words.push(`ip=${net.ip}::${net.gateway}:${prefixToNetmask(net.prefixLength)}::eth0:off`);
  words.push(...input.env);
  const [argv0, ...args] = input.argv;
  if (argv0 !== undefined) {
    words.push(`${input.hasInitrd ? 'rdinit' : 'init'}=${argv0}`);
    if (args.length > 0) words.push('--', ...args);
  }
  return ok(words);
}

function unikraftWords(input: CmdlineInput): Result<string[], HcrError> {
  const words = [input.appName];
  const legacy = input.version !== '' && compareVersions(input.version, UNIKRAFT_NETDEV_IP_SINCE) < 0;
  if (!legacy && input.env.length > 0) words.push('env.vars=[', ...input.env, ']');
  const net = input.network;
  if (net !== null) {
    if (legacy) {
      words.push(`netdev.ipv4_addr=${net.ip}`);
      if (net.gateway !== '') words.push(`netdev.ipv4_gw_addr=${net.gateway}`);
      words.push(`netdev.ipv4_subnet_mask=${prefixToNetmask(net.prefixLength)}`);
    } else {
      const fields = [`${net.ip}/${net.prefixLength}`, net.gateway];
      if (net.dns !== '') fields.push(net.dns);
      words.push(`netdev.ip=${fields.join(':')}`);
    }
  }
  words.push('--', ...input.argv);
  return ok(words);
}

// Solo5 tenders pass the command line through untouched; the network comes
// from the tender's --net options, so only the application's words remain.
function solo5Words(input: CmdlineInput): string[] {
  return [...input.argv];
}

/**
 * A word as Linux's (and Unikraft's) command-line parser reads it back: as is
 * without whitespace, else `"…"`, or `key="…"` so that the key stays visible
 * to the parser (Linux strips the quotes from the value in both forms).
 */
function quoteWord(word: string): string {
  if (!/\s/.test(word)) return word;
  const eq = word.indexOf('=');
  return eq > 0 && !/\s/.test(word.slice(0, eq)) ? `${word.slice(0, eq + 1)}"${word.slice(eq + 1)}"` : `"${word}"`;
}

/** Compares a dotted version with `[major, minor, patch]`; non-numeric parts count as 0. */
export function compareVersions(version: string, against: readonly number[]): number {
  const parts = version.replace(/^v/, '').split(/[.+-]/);
  for (let i = 0; i < against.length; i++) {
    const a = Number.parseInt(parts[i] ?? '0', 10);
    const d = (Number.isNaN(a) ? 0 : a) - against[i]!;
    if (d !== 0) return d;
  }
  return 0;
}
