// Original file: proto/hcr/v1/progress.proto

import type * as grpc from '@grpc/grpc-js';
import type { MethodDefinition } from '@grpc/proto-loader';
import type {
  PullEvent as _hcr_v1_PullEvent,
  PullEvent__Output as _hcr_v1_PullEvent__Output,
} from '../../hcr/v1/PullEvent.js';
import type {
  WatchPullRequest as _hcr_v1_WatchPullRequest,
  WatchPullRequest__Output as _hcr_v1_WatchPullRequest__Output,
} from '../../hcr/v1/WatchPullRequest.js';

export interface PullProgressClient extends grpc.Client {
  Watch(
    argument: _hcr_v1_WatchPullRequest,
    metadata: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<_hcr_v1_PullEvent__Output>;
  Watch(
    argument: _hcr_v1_WatchPullRequest,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<_hcr_v1_PullEvent__Output>;
  watch(
    argument: _hcr_v1_WatchPullRequest,
    metadata: grpc.Metadata,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<_hcr_v1_PullEvent__Output>;
  watch(
    argument: _hcr_v1_WatchPullRequest,
    options?: grpc.CallOptions,
  ): grpc.ClientReadableStream<_hcr_v1_PullEvent__Output>;
}

export interface PullProgressHandlers extends grpc.UntypedServiceImplementation {
  Watch: grpc.handleServerStreamingCall<_hcr_v1_WatchPullRequest__Output, _hcr_v1_PullEvent>;
}

export interface PullProgressDefinition extends grpc.ServiceDefinition {
  Watch: MethodDefinition<
    _hcr_v1_WatchPullRequest,
    _hcr_v1_PullEvent,
    _hcr_v1_WatchPullRequest__Output,
    _hcr_v1_PullEvent__Output
  >;
}
