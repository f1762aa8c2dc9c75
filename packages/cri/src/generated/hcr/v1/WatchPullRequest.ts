// Original file: proto/hcr/v1/progress.proto

export interface WatchPullRequest {
  image?: string;
}

export interface WatchPullRequest__Output {
  image: string;
}
