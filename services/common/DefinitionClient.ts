import { Client, credentials, Metadata, type Channel, type ServiceError } from '@grpc/grpc-js';
import { STATUS_DETAILS_KEY } from './StatusDetails';
import { UpstreamError } from './UpstreamError';

/** The parts of a ts-proto generic service definition (outputServices=generic-definitions) a client needs. */
interface MethodDefinition {
  readonly name: string;
  readonly requestType: { encode(message: never): { finish(): Uint8Array } };
  readonly responseType: { decode(input: Uint8Array): unknown };
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

interface ServiceDefinition {
  readonly fullName: string;
  readonly methods: { readonly [name: string]: MethodDefinition };
}

type RequestOf<M> = M extends { requestType: { encode(message: infer T, ...rest: never[]): unknown } } ? T : never;
type ResponseOf<M> = M extends { responseType: { decode(...args: never[]): infer T } } ? T : never;
type MethodsWhere<S extends ServiceDefinition, Streaming extends boolean> = {
  [K in keyof S['methods']]: S['methods'][K]['responseStream'] extends Streaming ? K : never;
}[keyof S['methods']] &
  string;

export interface DefinitionCallOptions {
  /** Aborting cancels the call; the caller then sees the signal's reason. */
  signal?: AbortSignal;
  /** Absolute deadline (epoch ms), sent to the server as grpc-timeout. */
  deadline?: number;
  /** Wait for the channel to connect instead of failing fast with UNAVAILABLE. */
  waitForReady?: boolean;
  /** Request headers (authorization, for one). */
  headers?: Record<string, string>;
}

/**
 * A typed gRPC client over a ts-proto generic definition, made directly on grpc-js. The router uses it for its
 * backend calls because nice-grpc's client can neither send a deadline on the wire nor wait for a connection,
 * and drops the trailers that carry error details; failed calls throw UpstreamError with the status details.
 */
export class DefinitionClient<S extends ServiceDefinition> {
  private readonly client: Client;

  constructor(
    private readonly definition: S,
    channel: Channel,
    /** Names the server in errors and logs. */
    readonly peer: string,
  ) {
    // The channel belongs to the caller (several clients may share it), who closes it.
    this.client = new Client(peer, credentials.createInsecure(), { channelOverride: channel });
  }

  unary<K extends MethodsWhere<S, false>>(
    method: K,
    request: RequestOf<S['methods'][K]>,
    options: DefinitionCallOptions = {},
  ): Promise<ResponseOf<S['methods'][K]>> {
    const { path, serialize, deserialize } = this.codec<RequestOf<S['methods'][K]>, ResponseOf<S['methods'][K]>>(method);
    const { signal } = options;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => call.cancel();
      const call = this.client.makeUnaryRequest(
        path,
        serialize,
        deserialize,
        request,
        this.metadata(options),
        { deadline: options.deadline ?? Infinity },
        (err, value) => {
          signal?.removeEventListener('abort', onAbort);
          if (err) reject(signal?.aborted ? signal.reason : this.upstreamError(err));
          else resolve(value!);
        },
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async *serverStream<K extends MethodsWhere<S, true>>(
    method: K,
    request: RequestOf<S['methods'][K]>,
    options: DefinitionCallOptions = {},
  ): AsyncGenerator<ResponseOf<S['methods'][K]>, void, undefined> {
    const { path, serialize, deserialize } = this.codec<RequestOf<S['methods'][K]>, ResponseOf<S['methods'][K]>>(method);
    const { signal } = options;
    signal?.throwIfAborted();
    const call = this.client.makeServerStreamRequest(path, serialize, deserialize, request, this.metadata(options), {
      deadline: options.deadline ?? Infinity,
    });
    const onAbort = () => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const message of call) yield message as ResponseOf<S['methods'][K]>;
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw isServiceError(err) ? this.upstreamError(err) : err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // Stops the server's work when the consumer leaves early; a no-op on a call that already ended.
      call.cancel();
    }
  }

  private codec<Req, Res>(method: string) {
    const m = this.definition.methods[method];
    return {
      path: `/${this.definition.fullName}/${m.name}`,
      serialize: (message: Req) => Buffer.from(m.requestType.encode(message as never).finish()),
      deserialize: (bytes: Buffer) => m.responseType.decode(bytes) as Res,
    };
  }

  private metadata(options: DefinitionCallOptions): Metadata {
    const metadata = new Metadata();
    if (options.waitForReady) metadata.setOptions({ waitForReady: true });
    for (const [key, value] of Object.entries(options.headers ?? {})) metadata.set(key, value);
    return metadata;
  }

  private upstreamError(err: ServiceError): UpstreamError {
    const [details] = err.metadata?.get(STATUS_DETAILS_KEY) ?? [];
    return new UpstreamError(err.code, err.details, this.peer, Buffer.isBuffer(details) ? details : undefined);
  }
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as ServiceError).code === 'number' && 'details' in err;
}
