import type { ResultAsync } from 'neverthrow';
import type { HcrError } from '../errors.js';
import type { ImageProvider } from '../plugin.js';
import type { FilesystemUsage, ImageInfo } from '../types.js';

/** Registry credentials from PullImageRequest.auth. */
export interface RegistryAuth {
  readonly username: string;
  readonly password: string;
  readonly auth: string;
  readonly serverAddress: string;
  readonly identityToken: string;
  readonly registryToken: string;
}

/** Pull progress, for `hcr pull` and logs. */
export interface PullProgress {
  readonly ref: string;
  readonly layer: string;
  readonly done: number;
  readonly total: number;
  readonly phase: 'resolving' | 'downloading' | 'unpacking' | 'done';
}

/** The CRI ImageService, one for every engine. */
export interface ImageService extends ImageProvider {
  pull(
    ref: string,
    options?: { auth?: RegistryAuth; onProgress?: (p: PullProgress) => void },
  ): ResultAsync<ImageInfo, HcrError>;
  list(): ResultAsync<readonly ImageInfo[], HcrError>;
  /** The image for a reference, tag, digest or id; null when unknown. */
  status(ref: string): ResultAsync<ImageInfo | null, HcrError>;
  /** Removes the image (all its tags when given an id); succeeds when it is already gone. */
  remove(ref: string): ResultAsync<void, HcrError>;
  fsInfo(): ResultAsync<readonly FilesystemUsage[], HcrError>;
}
