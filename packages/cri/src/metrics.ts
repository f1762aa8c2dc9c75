import { createServer, type Server } from 'node:http';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RuntimeService } from '@hcr/core';

/**
 * Prometheus metrics: CRI call latency by method and engine-independent code,
 * pods by engine and state, router decisions by source. Served on `/metrics`
 * when `[metrics] port` is set.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly calls: Histogram<'method' | 'code'>;
  private server: Server | null = null;

  constructor(runtime: RuntimeService) {
    collectDefaultMetrics({ register: this.registry, prefix: 'hcr_process_' });
    this.calls = new Histogram({
      name: 'hcr_cri_request_duration_seconds',
      help: 'CRI call latency by method and gRPC status code',
      labelNames: ['method', 'code'],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [this.registry],
    });
    new Gauge({
      name: 'hcr_pods',
      help: 'Pod sandboxes by engine and state',
      labelNames: ['engine', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of runtime.listPodSandbox()) this.inc({ engine: p.record.engine ?? 'unbound', state: p.state });
      },
    });
    new Gauge({
      name: 'hcr_containers',
      help: 'Containers by engine and state',
      labelNames: ['engine', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        const engineOf = new Map(runtime.listPodSandbox().map((p) => [p.record.id, p.record.engine ?? 'unbound']));
        for (const c of runtime.listContainers())
          this.inc({ engine: engineOf.get(c.record.sandboxId) ?? 'unknown', state: c.state });
      },
    });
    new Gauge({
      name: 'hcr_router_decisions',
      help: 'Live pods by the router rule that placed them (handler, annotation, rule, image, security, default, deferred)',
      labelNames: ['engine', 'source'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of runtime.listPodSandbox())
          this.inc({ engine: p.record.engine ?? 'unbound', source: p.record.routing.source });
      },
    });
    this.errors = new Counter({
      name: 'hcr_cri_errors_total',
      help: 'CRI calls that ended with a non-OK status',
      labelNames: ['method', 'code'],
      registers: [this.registry],
    });
  }

  private readonly errors: Counter<'method' | 'code'>;

  /** Records one CRI call. */
  observeCall(method: string, seconds: number, code: GrpcStatus): void {
    const name = GrpcStatus[code] ?? String(code);
    this.calls.observe({ method, code: name }, seconds);
    if (code !== GrpcStatus.OK) this.errors.inc({ method, code: name });
  }

  /** Serves `/metrics` over HTTP. */
  async listen(address: string, port: number): Promise<void> {
    this.server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve) => this.server?.listen(port, address, resolve));
  }

  /** Stops the HTTP server. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s !== null) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
