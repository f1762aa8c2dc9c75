import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type {
  PullEvent as _hcr_v1_PullEvent,
  PullEvent__Output as _hcr_v1_PullEvent__Output,
} from './hcr/v1/PullEvent.js';
import type {
  PullProgressClient as _hcr_v1_PullProgressClient,
  PullProgressDefinition as _hcr_v1_PullProgressDefinition,
} from './hcr/v1/PullProgress.js';
import type {
  WatchPullRequest as _hcr_v1_WatchPullRequest,
  WatchPullRequest__Output as _hcr_v1_WatchPullRequest__Output,
} from './hcr/v1/WatchPullRequest.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new (...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  hcr: {
    v1: {
      PullEvent: MessageTypeDefinition<_hcr_v1_PullEvent, _hcr_v1_PullEvent__Output>;
      PullProgress: SubtypeConstructor<typeof grpc.Client, _hcr_v1_PullProgressClient> & {
        service: _hcr_v1_PullProgressDefinition;
      };
      WatchPullRequest: MessageTypeDefinition<_hcr_v1_WatchPullRequest, _hcr_v1_WatchPullRequest__Output>;
    };
  };
}
