import { err, errAsync, ok, type Result, ResultAsync } from 'neverthrow';
import { errors, HcrError, toHcrError } from '../errors.js';
import { hostTool, runTool } from './exec.js';
import { isNamespaceFile } from './netns.js';

/** Which TAP, joined to which pod interface; shared by connect and disconnect. */
export interface TapLinkOptions {
  /** TAP device name: at most 15 characters from `A-Z a-z 0-9 _ . - @` (IFNAMSIZ, and safe in a batch script). */
  readonly tapName: string;
  /** The pod's CNI interface the guest stands in for, usually `eth0`. */
  readonly ifname: string;
  /** Limit for each helper process (default 10 s). */
  readonly timeoutMs?: number;
}

/** Options of {@link connectTapToPodInterface}. */
export interface ConnectTapOptions extends TapLinkOptions {
  /** MTU for the TAP; default the pod interface's, so the guest sends nothing the pod network cannot carry. */
  readonly mtu?: number;
  /**
   * The TAP exists already and a monitor holds it open (it made the TAP when it
   * started, before CNI ADD was done): it is set up and redirected, not replaced.
   */
  readonly existingTap?: boolean;
}

/** The link-layer identity a guest NIC takes over from the pod interface. */
export interface PodInterfaceLink {
  readonly mac: string;
  readonly mtu: number;
}

/** A TAP joined to a pod interface: QEMU opens `tap` by name; the guest NIC gets `mac` and `mtu`. */
export interface TapConnection extends PodInterfaceLink {
  readonly tap: string;
  readonly ifname: string;
}

/** Runs `ip` or `tc` inside a network namespace, `input` on stdin; resolves with stdout. */
export type NetnsToolRunner = (
  netnsPath: string,
  tool: 'ip' | 'tc',
  args: readonly string[],
  what: string,
  timeoutMs: number,
  input?: string,
) => ResultAsync<string, HcrError>;

const DEFAULT_TIMEOUT_MS = 10_000;

// Linux allows more, but these names go into `ip -batch`/`tc -batch` scripts, which split on
// blanks and treat quotes and `#` specially: nothing outside this set can smuggle in a command.
const LINK_NAME_RE = /^[A-Za-z0-9_.@-]{1,15}$/;

/** Why `name` cannot be used as an interface name in a batch script, or null when it can. */
export function linkNameProblem(name: string): string | null {
  if (!LINK_NAME_RE.test(name) || name === '.' || name === '..')
    return `"${name}" is not a usable interface name (1–15 of A-Z a-z 0-9 _ . - @)`;
  return null;
}

/**
 * The `ip -batch` script that (re)creates the TAP: a leftover of the same
 * name (a crashed earlier attempt) is deleted first, since an `add` of an
 * existing device fails.
 */
export function tapLinkScript(tap: string, mtu: number, replaceExisting: boolean): string {
  return [
    ...(replaceExisting ? [`link del dev ${tap}`] : []),
    `tuntap add dev ${tap} mode tap`,
    `link set dev ${tap} mtu ${mtu} up`,
  ]
    .map((l) => `${l}\n`)
    .join('');
}

/** The `ip -batch` script that readies a TAP a monitor made and holds: MTU and up, nothing replaced. */
export function existingTapLinkScript(tap: string, mtu: number): string {
  return `link set dev ${tap} mtu ${mtu} up\n`;
}

/**
 * The `tc -batch` script that joins the TAP to the pod interface the Kata
 * way: each side's ingress is redirected (mirred) to the other's egress, so
 * frames pass untouched and the guest, with the interface's MAC and IP, is
 * the pod on the wire. The interface's ingress is made (`replace` keeps an
 * existing one) and emptied first, so no filter of an earlier attempt stays;
 * the TAP is new, so its ingress is simply added.
 */
export function tapRedirectScript(tap: string, ifname: string): string {
  const redirect = (from: string, to: string) =>
    `filter add dev ${from} parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev ${to}`;
  return [
    `qdisc replace dev ${ifname} ingress`,
    `filter del dev ${ifname} parent ffff:`,
    redirect(ifname, tap),
    `qdisc add dev ${tap} ingress`,
    redirect(tap, ifname),
  ]
    .map((l) => `${l}\n`)
    .join('');
}

/**
 * Adds the script line a batch failed at (`ip`/`tc` print `Command failed
 * -:<line>`), so the error says which step broke, not only what the tool said.
 */
export function batchFailure(script: string, message: string): string {
  const line = /Command failed -:(\d+)/.exec(message)?.[1];
  const step = line === undefined ? undefined : script.split('\n')[Number(line) - 1];
  return step === undefined ? message : `${message} (at "${step}")`;
}

/** A link as `ip -j link show` lists it. */
interface IpLink {
  readonly ifname: string;
  readonly address?: string;
  readonly mtu?: number;
}

function parseLinks(json: string): IpLink[] {
  const v: unknown = JSON.parse(json.trim() === '' ? '[]' : json);
  return Array.isArray(v) ? (v as IpLink[]) : [];
}

/** The default {@link NetnsToolRunner}: `nsenter --net=<path> -- <tool> …`, an argv array, never a shell. */
export const nsenterRunner: NetnsToolRunner = (netnsPath, tool, args, what, timeoutMs, input) =>
  runTool('nsenter', [`--net=${netnsPath}`, '--', hostTool(tool), ...args], what, timeoutMs, input);

/**
 * TAP plumbing over a given runner (real or fake). Host processes per call:
 * connect runs three (read the links, one `ip -batch`, one `tc -batch`),
 * disconnect two at once.
 */
export class TapPlumbing {
  constructor(
    private readonly run: NetnsToolRunner = nsenterRunner,
    private readonly isNamespace: (path: string) => Promise<boolean> = isNamespaceFile,
  ) {}

  /** Names of the links in the namespace (leak checks, and whether a TAP is still there). */
  linkNames(netnsPath: string, timeoutMs = DEFAULT_TIMEOUT_MS): ResultAsync<string[], HcrError> {
    return this.links(netnsPath, timeoutMs).map((links) => links.map((l) => l.ifname));
  }

  /** MAC and MTU of the pod interface `ifname`. */
  podInterfaceLink(
    netnsPath: string,
    ifname: string,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): ResultAsync<PodInterfaceLink, HcrError> {
    return this.links(netnsPath, timeoutMs).andThen((links) => interfaceOf(links, ifname, netnsPath));
  }

  /** See {@link connectTapToPodInterface}. */
  connect(netnsPath: string, options: ConnectTapOptions): ResultAsync<TapConnection, HcrError> {
    const { tapName: tap, ifname } = options;
    const context = `connect TAP ${tap} to ${ifname} in ${netnsPath}`;
    const bad = linkNameProblem(tap) ?? linkNameProblem(ifname);
    if (bad !== null) return errAsync(errors.invalidArgument(`${context}: ${bad}`));
    if (tap === ifname) return errAsync(errors.invalidArgument(`${context}: the TAP needs a name of its own`));
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return ResultAsync.fromPromise(
      (async (): Promise<TapConnection> => {
        const links = unwrap(await this.links(netnsPath, timeoutMs));
        const link = unwrap(interfaceOf(links, ifname, netnsPath));
        const mtu = options.mtu ?? link.mtu;
        const linkScript =
          options.existingTap === true
            ? existingTapLinkScript(tap, mtu)
            : tapLinkScript(
                tap,
                mtu,
                links.some((l) => l.ifname === tap),
              );
        const redirectScript = tapRedirectScript(tap, ifname);
        try {
          unwrap(await this.batch(netnsPath, 'ip', linkScript, 'creating the TAP', timeoutMs));
          unwrap(await this.batch(netnsPath, 'tc', redirectScript, 'redirecting with tc', timeoutMs));
        } catch (e) {
          // Leave nothing half-made; the error that counts is the one that stopped us.
          await this.disconnect(netnsPath, options);
          throw e;
        }
        return { tap, ifname, mac: link.mac, mtu };
      })(),
      (e) => toHcrError(e).withContext(context),
    );
  }

  /** See {@link disconnectTapFromPodInterface}. */
  disconnect(netnsPath: string, options: TapLinkOptions): ResultAsync<void, HcrError> {
    const { tapName: tap, ifname } = options;
    const context = `disconnect TAP ${tap} from ${ifname} in ${netnsPath}`;
    const bad = linkNameProblem(tap) ?? linkNameProblem(ifname);
    if (bad !== null) return errAsync(errors.invalidArgument(`${context}: ${bad}`));
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return ResultAsync.fromPromise(
      (async (): Promise<void> => {
        // A TAP lives and dies with its namespace: no namespace, nothing to undo.
        if (!(await this.isNamespace(netnsPath))) return;
        const [removed] = await Promise.all([
          // `tuntap del` attaches to the TAP by name (making it if absent) and drops its persistence,
          // so it succeeds exactly when no TAP is left; it fails while a process still holds the TAP.
          this.run(netnsPath, 'ip', ['tuntap', 'del', 'dev', tap, 'mode', 'tap'], 'deleting the TAP', timeoutMs),
          // The interface (and with it the qdisc) may be gone already: CNI DEL removes it.
          this.run(netnsPath, 'tc', ['qdisc', 'del', 'dev', ifname, 'ingress'], 'removing the redirect', timeoutMs),
        ]);
        if (removed.isOk()) return;
        // Still held (a monitor that outlived its stop): take the device away from it.
        await this.run(netnsPath, 'ip', ['link', 'del', 'dev', tap], 'deleting the TAP', timeoutMs);
        const names = unwrap(await this.linkNames(netnsPath, timeoutMs));
        if (names.includes(tap)) throw errors.internal(`cannot delete ${tap}: ${removed.error.message}`);
      })(),
      (e) => toHcrError(e).withContext(context),
    );
  }

  private links(netnsPath: string, timeoutMs: number): ResultAsync<IpLink[], HcrError> {
    return this.run(netnsPath, 'ip', ['-j', 'link', 'show'], 'listing links', timeoutMs).andThen((out) => {
      try {
        return ok(parseLinks(out));
      } catch (e) {
        return err(errors.internal(`listing links: ip printed something that is not JSON: ${String(e)}`));
      }
    });
  }

  private batch(
    netnsPath: string,
    tool: 'ip' | 'tc',
    script: string,
    what: string,
    timeoutMs: number,
  ): ResultAsync<string, HcrError> {
    return this.run(netnsPath, tool, ['-batch', '-'], what, timeoutMs, script).mapErr(
      (e) => new HcrError(e.code, batchFailure(script, e.message), { cause: e.cause, details: e.details }),
    );
  }
}

function interfaceOf(links: readonly IpLink[], ifname: string, netnsPath: string): Result<PodInterfaceLink, HcrError> {
  const link = links.find((l) => l.ifname === ifname);
  if (link === undefined)
    return err(errors.failedPrecondition(`the pod interface ${ifname} is not in network namespace ${netnsPath}`));
  if (link.address === undefined)
    return err(errors.failedPrecondition(`the pod interface ${ifname} in ${netnsPath} has no MAC address`));
  return ok({ mac: link.address, mtu: link.mtu ?? 1500 });
}

// Inside async helpers a failed step ends the whole operation with its own error.
function unwrap<T>(r: Result<T, HcrError>): T {
  if (r.isErr()) throw r.error;
  return r.value;
}

const host = new TapPlumbing();

/** MAC and MTU of the pod interface `ifname` inside the namespace (what a guest NIC impersonates). */
export function podInterfaceLink(
  netnsPath: string,
  ifname: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): ResultAsync<PodInterfaceLink, HcrError> {
  return host.podInterfaceLink(netnsPath, ifname, timeoutMs);
}

/**
 * Creates a TAP in the pod's network namespace and joins it to the pod's CNI
 * interface with tc mirred redirection both ways, replacing what a crashed
 * earlier attempt left; returns the MAC and MTU the guest NIC must carry.
 * Three host processes: one reads the links, one `ip -batch` makes the TAP,
 * one `tc -batch` the redirects. On failure nothing is left behind.
 */
export function connectTapToPodInterface(
  netnsPath: string,
  options: ConnectTapOptions,
): ResultAsync<TapConnection, HcrError> {
  return host.connect(netnsPath, options);
}

/**
 * Removes the TAP and the redirect on the pod interface. Succeeds when they
 * (or the namespace) are already gone; fails only when the TAP is still there.
 */
export function disconnectTapFromPodInterface(netnsPath: string, options: TapLinkOptions): ResultAsync<void, HcrError> {
  return host.disconnect(netnsPath, options);
}

/** Names of the links in a network namespace (for leak checks). */
export function netnsLinkNames(netnsPath: string, timeoutMs = DEFAULT_TIMEOUT_MS): ResultAsync<string[], HcrError> {
  return host.linkNames(netnsPath, timeoutMs);
}
