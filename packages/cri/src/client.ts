import * as grpc from '@grpc/grpc-js';
import { loadCriProto } from './server.js';
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
