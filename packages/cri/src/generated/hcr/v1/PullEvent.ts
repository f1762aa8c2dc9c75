// Original file: proto/hcr/v1/progress.proto

import type { Long } from '@grpc/proto-loader';

export interface PullEvent {
  ref?: string;
  phase?: string;
  layer?: string;
  done?: number | string | Long;
  total?: number | string | Long;
  error?: string;
}

export interface PullEvent__Output {
  ref: string;
  phase: string;
  layer: string;
  done: string;
  total: string;
  error: string;
}
