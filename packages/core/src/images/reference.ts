/**
 * Image references, parsed and normalised the way docker and the kubelet do
 * (github.com/distribution/reference): `busybox` is
 * `docker.io/library/busybox:latest`, `foo/bar` is `docker.io/foo/bar:latest`,
 * and a first component with a `.` or `:` (or `localhost`) is a registry host.
 */
import { err, ok, type Result } from 'neverthrow';
import { errors, type HcrError } from '../errors.js';

/** The registry Docker Hub images live on, as references spell it. */
export const DOCKER_HUB_DOMAIN = 'docker.io';

/** The tag a reference without tag or digest means. */
export const DEFAULT_TAG = 'latest';

/** A parsed, normalised image reference. */
export interface ImageReference {
  /** Registry host, with port when given (`docker.io`, `127.0.0.1:5000`). */
  readonly domain: string;
  /** Repository path on that registry (`library/busybox`). */
  readonly path: string;
  /** Tag, or null when the reference has none. */
  readonly tag: string | null;
  /** `sha256:<hex>` manifest digest, or null when the reference has none. */
  readonly digest: string | null;
}

// The grammar of github.com/distribution/reference (regexp.go).
const alphaNumeric = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]+)';
const pathComponent = `${alphaNumeric}(?:${separator}${alphaNumeric})*`;
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const ipv6 = '\\[(?:[a-fA-F0-9:]+)\\]';
const domainName = `${domainComponent}(?:\\.${domainComponent})*`;
const domainRe = new RegExp(`^(?:${domainName}|${ipv6})(?::[0-9]+)?$`);
const pathRe = new RegExp(`^${pathComponent}(?:/${pathComponent})*$`);
const tagRe = /^[\w][\w.-]{0,127}$/;
const digestRe = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const sha256Re = /^sha256:[a-f0-9]{64}$/;
const hex64Re = /^[a-f0-9]{64}$/;

/** Docker's limit on the length of a repository name (domain + path). */
const NAME_MAX = 255;

/** Parses `ref` and applies docker's normalisation (default registry, `library/`), without adding a default tag. */
export function parseReference(ref: string): Result<ImageReference, HcrError> {
  const bad = (why: string) => err(errors.invalidArgument(`invalid image reference "${ref}": ${why}`, 'image'));
  if (ref === '') return bad('it is empty');
  if (ref !== ref.trim()) return bad('it has leading or trailing whitespace');
  if (hex64Re.test(ref)) return bad('a 64-character hexadecimal string is an image id, not a repository name');

  let rest = ref;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestRe.test(digest)) return bad(`"${digest}" is not a digest (expected sha256:<64 hex digits>)`);
    if (!digest.startsWith('sha256:'))
      return bad(`digest algorithm "${digest.split(':')[0]}" is not supported (only sha256)`);
    if (!sha256Re.test(digest)) return bad(`"${digest}" is not a sha256 digest (expected 64 lowercase hex digits)`);
  }

  let tag: string | null = null;
  // A tag follows the last ':' that comes after the last '/', so `host:5000/x` keeps its port.
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagRe.test(tag))
      return bad(`tag "${tag}" is invalid (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')`);
  }
  if (rest === '') return bad('the repository name is empty');

  let domain = DOCKER_HUB_DOMAIN;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    // docker: a first component is a host when it looks like one, or is not lowercase.
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.toLowerCase() !== first) {
      domain = first;
      path = rest.slice(slash + 1);
    }
  }
  if (!domainRe.test(domain)) return bad(`"${domain}" is not a valid registry host`);
  if (domain === 'index.docker.io') domain = DOCKER_HUB_DOMAIN;
  if (path.toLowerCase() !== path) return bad(`repository name "${path}" must be lowercase`);
  if (!pathRe.test(path)) {
    return bad(
      `repository name "${path}" is invalid (lowercase letters, digits and separators '.', '_', '__', '-' between them, components joined by '/')`,
    );
  }
  if (domain === DOCKER_HUB_DOMAIN && !path.includes('/')) path = `library/${path}`;
  if (domain.length + 1 + path.length > NAME_MAX)
    return bad(`the repository name is longer than ${NAME_MAX} characters`);
  return ok({ domain, path, tag, digest });
}

/** `docker.io/library/busybox` — the repository a reference names. */
export function referenceName(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}`;
}

/** The canonical string of a reference: name, then `:tag` and `@digest` when present. */
export function formatReference(ref: ImageReference): string {
  return `${referenceName(ref)}${ref.tag === null ? '' : `:${ref.tag}`}${ref.digest === null ? '' : `@${ref.digest}`}`;
}

/** `ref` with docker's default tag when it has neither tag nor digest. */
export function withDefaultTag(ref: ImageReference): ImageReference {
  return ref.tag === null && ref.digest === null ? { ...ref, tag: DEFAULT_TAG } : ref;
}

/** The fully qualified form of `ref`: `busybox` → `docker.io/library/busybox:latest`. */
export function normalizeReference(ref: string): Result<string, HcrError> {
  return parseReference(ref).map((r) => formatReference(withDefaultTag(r)));
}
