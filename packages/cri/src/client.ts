import * as grpc from '@grpc/grpc-js';
import { loadCriProto, loadHcrProto } from './server.js';
import type { PullEventView } from './pull-progress.js';
import type { RuntimeServiceClient } from './generated/runtime/v1/RuntimeService.js';
import type { ImageServiceClient } from './generated/runtime/v1/ImageService.js';

/** A CRI v1 client on a unix socket (used by the `hcr` subcommands and tests). */
export interface CriClient {
  readonly runtime: RuntimeServiceClient;
  readonly images: ImageServiceClient;
  /** Calls a unary method and resolves with its response. */
  call<Res>(service: 'runtime' | 'images', method: string, request: object, deadlineMs?: number): Promise<Res>;
  close(): void;
}

/** Connects to `socket` (a path or `unix://` URL). */
export function criClient(socket: string, maxMessageBytes = 16 * 1024 * 1024): CriClient {
  const target = socket.startsWith('unix://') ? socket : `unix://${socket}`;
  const proto = loadCriProto();
  const opts = {
    'grpc.max_receive_message_length': maxMessageBytes,
    'grpc.max_send_message_length': maxMessageBytes,
  };
  const runtime = new proto.runtime.v1.RuntimeService(target, grpc.credentials.createInsecure(), opts);
  const images = new proto.runtime.v1.ImageService(target, grpc.credentials.createInsecure(), opts);
  return {
    runtime,
    images,
    call<Res>(service: 'runtime' | 'images', method: string, request: object, deadlineMs = 120_000) {
      const client = (service === 'runtime' ? runtime : images) as unknown as Record<
        string,
        (req: object, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Res) => void) => void
      >;
      const fn = client[method];
      if (typeof fn !== 'function') return Promise.reject(new Error(`no CRI method ${method}`));
      return new Promise<Res>((resolve, reject) =>
        fn.call(client, request, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (e, r) =>
          e ? reject(e) : resolve(r),
        ),
      );
    },
    close() {
      runtime.close();
      images.close();
    },
  };
}

/** A watch of pull progress: `ready` settles once the shim has registered it (or the stream ended). */
export interface PullWatch {
  readonly ready: Promise<void>;
  cancel(): void;
}

/**
 * Watches the progress of pulls of `image` through HCR's `hcr.v1.PullProgress`
 * service; start the pull once `ready` settles so that nothing is missed.
 * `onEnd` runs once when the stream ends for any reason (null: it ended
 * normally or was cancelled).
 */
export function watchPull(
  socket: string,
  image: string,
  onEvent: (e: PullEventView) => void,
  onEnd: (err: grpc.ServiceError | null) => void = () => undefined,
): PullWatch {
  const target = socket.startsWith('unix://') ? socket : `unix://${socket}`;
  const client = new (loadHcrProto().hcr.v1.PullProgress)(target, grpc.credentials.createInsecure());
  const call = client.watch({ image });
  let ended = false;
  let registered!: () => void;
  const ready = new Promise<void>((resolve) => (registered = resolve));
  const end = (err: grpc.ServiceError | null) => {
    registered();
    if (ended) return;
    ended = true;
    client.close();
    onEnd(err);
  };
  call.on('metadata', () => registered());
  call.on('data', (e: { ref: string; phase: string; layer: string; done: string; total: string; error: string }) =>
    onEvent({
      ref: e.ref,
      phase: e.phase as PullEventView['phase'],
      layer: e.layer,
      done: Number(e.done),
      total: Number(e.total),
      error: e.error,
    }),
  );
  call.on('error', (e: grpc.ServiceError) => end(e.code === grpc.status.CANCELLED ? null : e));
  call.on('end', () => end(null));
  return { ready, cancel: () => call.cancel() };
}
