// Types for the parts of spdy-transport 3.0 (CommonJS, untyped) that HCR uses.
// The underscore members are the library's internal state; spdy.ts touches them
// in one place, with the reasons written there.
declare module 'spdy-transport' {
  import type { EventEmitter } from 'node:events';
  import type { Duplex } from 'node:stream';

  /** Header block of a SYN_STREAM / SYN_REPLY (names are lower case on the wire). */
  export type SpdyHeaders = Record<string, string | string[] | undefined>;

  /** One decoded frame, as the connection's `frame` event reports it. */
  export interface SpdyFrame {
    readonly type: string;
    readonly id?: number;
  }

  /** One direction of a flow-control window. */
  export interface SpdyWindowSide extends EventEmitter {
    update(size: number, callback?: () => void): void;
    getDelta(): number;
  }

  /** A SPDY stream: a readable-stream 3 Duplex plus SPDY specifics. */
  export interface SpdyStream extends EventEmitter {
    readonly id: number;
    readonly headers: SpdyHeaders;
    readonly readableLength: number;
    respond(status: number, headers: SpdyHeaders, callback?: (err?: Error | null) => void): void;
    abort(code?: string, callback?: () => void): void;
    write(chunk: Buffer, callback?: (err?: Error | null) => void): boolean;
    end(callback?: () => void): void;
    pause(): this;
    resume(): this;
    readonly _readableState: { readonly ended: boolean };
    readonly _writableState: { readonly finished: boolean };
    readonly _spdyState: { readonly window: { readonly send: SpdyWindowSide }; readonly aborted: boolean };
  }

  /** The frame parser, one per connection: a readable-stream Transform the socket is piped into. */
  export interface SpdyParser extends EventEmitter {
    write(chunk: Buffer): boolean;
    end(): void;
    onSynHeadFrame(
      type: number,
      flags: number,
      body: unknown,
      callback: (err: Error | null, frame?: unknown) => void,
    ): void;
    parseKVs(body: unknown, callback: (err: Error | null, headers?: SpdyHeaders) => void): void;
  }

  /** The frame writer, one per connection: a readable-stream Readable piped into the socket. */
  export interface SpdyFramer extends EventEmitter {
    readonly readableLength: number;
    dump(): void;
    unpipe(destination?: Duplex): this;
    read(): Buffer | null;
  }

  /** Options of `connection.create`. */
  export interface SpdyConnectionOptions {
    readonly protocol: 'spdy' | 'http2';
    readonly isServer: boolean;
    /** Receive window advertised to the peer (bytes). */
    readonly windowSize?: number;
    /** Server: also keep the SPDY/3.1 session (connection-level) receive window open. */
    readonly autoSpdy31?: boolean;
  }

  /** A SPDY session over one byte stream. */
  export interface SpdyConnection extends EventEmitter {
    start(version: number): void;
    request(
      uri: { method: string; path: string; headers: SpdyHeaders },
      callback?: (err: Error | null, stream?: SpdyStream) => void,
    ): SpdyStream;
    end(callback?: () => void): void;
    readonly _spdyState: { readonly parser: SpdyParser; readonly framer: SpdyFramer };
  }

  /** The library's entry point. */
  const transport: {
    readonly connection: { create(socket: Duplex, options: SpdyConnectionOptions): SpdyConnection };
  };
  export default transport;
}
