/** Shared fixtures of the hyper engine's integration tests. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The guest assets setup-assets.sh built. */
export const ASSETS = process.env['HCR_HYPER_ASSETS'] ?? '/var/lib/hcr/assets/hyper/current';

/** The kernel the engine would boot: the PVH vmlinux when there is one. */
export function bootKernel(): string {
  const vmlinux = join(ASSETS, 'vmlinux');
  return existsSync(vmlinux) ? vmlinux : join(ASSETS, 'vmlinuz');
}
