import { randomBytes } from 'node:crypto';
import { defaultContainerSecurity, newContainerSpec, newSandboxSpec } from '../builders.js';
import type { ContainerSpec, SandboxSpec } from '../types.js';

/** A minimal, valid pod spec with a random name and uid; override what a test cares about. */
export function podSpec(overrides: Partial<SandboxSpec> & { name?: string } = {}): SandboxSpec {
  const { name, ...rest } = overrides;
  const podName = name ?? `pod-${randomBytes(4).toString('hex')}`;
  return newSandboxSpec(
    { name: podName, uid: randomBytes(8).toString('hex'), namespace: 'hcr-test', attempt: 0 },
    { hostname: podName, labels: { 'hcr.io/test': 'conformance' }, ...rest },
  );
}

/** Default container security settings (nothing special). */
export const defaultSecurity = defaultContainerSecurity;

/** A minimal, valid container spec for `image` with a random name; override what a test cares about. */
export function containerSpec(
  image: string,
  overrides: Partial<ContainerSpec> & { name?: string } = {},
): ContainerSpec {
  const { name, ...rest } = overrides;
  return newContainerSpec(name ?? `c-${randomBytes(4).toString('hex')}`, image, rest);
}
