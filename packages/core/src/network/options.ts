import type { CniOptions } from './types.js';

/** Where HCR looks for CNI configs and plugins and keeps its namespaces and CNI cache, by default. */
export const DEFAULT_CNI_OPTIONS: CniOptions = Object.freeze({
  confDir: '/etc/cni/net.d',
  // Debian's containernetworking-plugins install to /usr/lib/cni; upstream releases to /opt/cni/bin.
  binDirs: Object.freeze(['/usr/lib/cni', '/opt/cni/bin']),
  netnsDir: '/run/hcr/netns',
  cacheDir: '/var/lib/hcr/cni',
});

/** {@link CniOptions} with every field not given taken from {@link DEFAULT_CNI_OPTIONS}. */
export function resolveCniOptions(options: Partial<CniOptions> = {}): CniOptions {
  return {
    confDir: options.confDir ?? DEFAULT_CNI_OPTIONS.confDir,
    binDirs: options.binDirs ?? DEFAULT_CNI_OPTIONS.binDirs,
    netnsDir: options.netnsDir ?? DEFAULT_CNI_OPTIONS.netnsDir,
    cacheDir: options.cacheDir ?? DEFAULT_CNI_OPTIONS.cacheDir,
  };
}
