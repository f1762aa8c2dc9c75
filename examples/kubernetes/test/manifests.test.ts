import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_TOML, parseConfig } from '../../../packages/cri/src/config.js';

const file = (f: string) => readFileSync(fileURLToPath(new URL(`../${f}`, import.meta.url)), 'utf8');
const docs = (f: string) => parseAllDocuments(file(f)).map((d) => d.toJS() as Record<string, unknown>);

describe('kubernetes example', () => {
  const config = parseConfig(DEFAULT_CONFIG_TOML, 'default')._unsafeUnwrap();

  it("every RuntimeClass handler is a runtime in HCR's default config, with an overhead", () => {
    const classes = docs('manifests/runtimeclasses.yaml');
    expect(classes.map((c) => c['handler'])).toEqual(['docker', 'hyper', 'unikernel']);
    for (const c of classes) {
      expect(c['kind']).toBe('RuntimeClass');
      expect(config.router.handlers[c['handler'] as string]).toBeDefined();
      const overhead = (c['overhead'] as { podFixed: { memory: string; cpu: string } }).podFixed;
      expect(overhead.memory).toMatch(/^\d+Mi$/);
      expect(overhead.cpu).toMatch(/^\d+m$/);
    }
  });

  it('example pods use defined RuntimeClasses and local images only', () => {
    const classes = new Set(docs('manifests/runtimeclasses.yaml').map((c) => (c['metadata'] as { name: string }).name));
    for (const pod of docs('manifests/pods.yaml')) {
      const spec = pod['spec'] as { runtimeClassName?: string; containers: { image: string }[] };
      if (spec.runtimeClassName !== undefined) expect(classes.has(spec.runtimeClassName)).toBe(true);
      for (const c of spec.containers) expect(c.image.startsWith('127.0.0.1:5000/')).toBe(true);
    }
  });

  it('the Grafana dashboard queries metrics HCR exports', () => {
    const dash = JSON.parse(file('grafana-dashboard.json')) as { panels: { targets: { expr: string }[] }[] };
    const exported = [
      'hcr_cri_request_duration_seconds',
      'hcr_cri_errors_total',
      'hcr_pods',
      'hcr_containers',
      'hcr_router_decisions',
      'hcr_process_',
    ];
    for (const p of dash.panels) {
      for (const t of p.targets)
        expect(
          exported.some((m) => t.expr.includes(m)),
          t.expr,
        ).toBe(true);
    }
  });
});
