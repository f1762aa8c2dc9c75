/** Content digests: validation, hashing and OCI chain ids. */
import { createHash } from 'node:crypto';
import { errors } from '../errors.js';

const sha256DigestRe = /^sha256:[a-f0-9]{64}$/;

/** True for a `sha256:<64 lowercase hex>` digest, the only algorithm HCR stores. */
export function isSha256Digest(s: string): boolean {
  return sha256DigestRe.test(s);
}

/**
 * The hex part of a sha256 digest. Throws InvalidArgument otherwise: digests
 * come from registries and become file names, so anything else is refused
 * before it reaches a path.
 */
export function digestHex(digest: string, what = 'digest'): string {
  if (!isSha256Digest(digest)) {
    throw errors.invalidArgument(`${what} "${digest}" is not a sha256 digest (HCR stores sha256 content only)`);
  }
  return digest.slice('sha256:'.length);
}

/** `sha256:<hex>` of `data`. */
export function sha256Digest(data: string | Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/**
 * OCI chain ids of a layer stack: the first is the first diff id, each next is
 * `sha256(parentChainId + " " + diffId)`; they name a layer *with* everything
 * below it, so equal chain ids mean equal unpacked trees.
 */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const parent = out[out.length - 1];
    out.push(parent === undefined ? diffId : sha256Digest(`${parent} ${diffId}`));
  }
  return out;
}
