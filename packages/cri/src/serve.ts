import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import type { Logger } from '@hcr/core';
import { compose, type Composition } from './compose.js';
import type { HcrConfig } from './config.js';
import { Metrics } from './metrics.js';
import { CriServer } from './server.js';
import { StreamingServer } from './streaming/index.js';

/** A running shim: the composition plus its servers. */
export interface RunningShim {
  readonly composition: Composition;
  readonly cri: CriServer;
  readonly streaming: StreamingServer;
  readonly metrics: Metrics;
  /** Stops serving; pods keep running (they are recovered on the next start). */
  stop(): Promise<void>;
}

/** A structured JSON logger at the configured level (pino satisfies core's Logger). */
export function createLogger(level: HcrConfig['logLevel'], destination = 1): Logger {
  return pino(
    { level, base: { service: 'hcr' } },
    pino.destination({ dest: destination, sync: false }),
  ) as unknown as Logger;
}

/** Starts the shim: composition, streaming server, CRI socket, metrics. */
export async function startShim(config: HcrConfig, logger: Logger): Promise<RunningShim> {
  const composition = await compose(config, logger);
  const rt = composition.runtime;
  const tls =
    config.streaming.tlsCert !== '' && config.streaming.tlsKey !== ''
      ? { cert: readFileSync(config.streaming.tlsCert, 'utf8'), key: readFileSync(config.streaming.tlsKey, 'utf8') }
      : undefined;
  const streaming = new StreamingServer(
    {
      address: config.streaming.address,
      port: config.streaming.port,
      tokenTtlMs: config.streaming.tokenTtlSeconds * 1000,
      logger,
      ...(tls ? { tls } : {}),
    },
    {
      exec: (id, cmd, io) => rt.exec(id, cmd, io),
      attach: (id, io) => rt.attach(id, io),
      portForward: (id, port, stream) => rt.portForward(id, port, stream),
    },
  );
  await streaming.start();
  const metrics = new Metrics(rt);
  const cri = new CriServer({
    runtime: rt,
    streaming,
    logger: logger.child({ component: 'cri' }),
    maxMessageBytes: config.maxMessageBytes,
    runtimeHandlers: Object.keys(config.router.handlers),
    observe: (method, seconds, code) => metrics.observeCall(method, seconds, code),
    statusInfo: () => ({
      config: JSON.stringify({ defaultEngine: config.router.defaultEngine, handlers: config.router.handlers }),
      failedEngines: JSON.stringify(Object.fromEntries(composition.failedEngines)),
    }),
  });
  await cri.listen(config.socket);
  if (config.metrics.port > 0) await metrics.listen(config.metrics.address, config.metrics.port);
  logger.info(
    {
      socket: config.socket,
      engines: [...composition.engines.keys()],
      failedEngines: Object.fromEntries(composition.failedEngines),
      defaultEngine: config.router.defaultEngine,
    },
    'hcr serving CRI v1',
  );
  return {
    composition,
    cri,
    streaming,
    metrics,
    async stop() {
      await cri.close();
      await streaming.stop();
      await metrics.close();
      await composition.close();
    },
  };
}
