import { Channel, credentials } from '@grpc/grpc-js';
import { ClientError, createChannel, createClient, Metadata, Status } from 'nice-grpc';
import { GenerationServiceDefinition, type GenerateRequest, type GenerateResponse } from '../gen/moeflash/v1/generation';
import { DefinitionClient } from '../services/common/DefinitionClient';
import { decodeStatusDetails, STATUS_DETAILS_KEY, type StatusDetails } from '../services/common/StatusDetails';
import { UpstreamError } from '../services/common/UpstreamError';

/** A nice-grpc GenerationService client (what a TypeScript user writes) and its channel. */
export function generationClient(address: string) {
  const channel = createChannel(address);
  return { client: createClient(GenerationServiceDefinition, channel), channel };
}

/** A grpc-js level client, for what nice-grpc's client cannot do (send a deadline). */
export function rawGenerationClient(address: string) {
  const channel = new Channel(address, credentials.createInsecure(), {});
  return { client: new DefinitionClient(GenerationServiceDefinition, channel, address), channel };
}

export interface GenerationResult {
  responses: GenerateResponse[];
  tokens: number[];
  text: string;
}

/** Drains a Generate stream into its tokens and text. */
export async function drain(stream: AsyncIterable<GenerateResponse>): Promise<GenerationResult> {
  const responses: GenerateResponse[] = [];
  const tokens: number[] = [];
  let text = '';
  for await (const r of stream) {
    responses.push(r);
    if (r.event?.$case === 'chunk') {
      tokens.push(...r.event.value.tokenIds);
      text += r.event.value.text;
    }
  }
  return { responses, tokens, text };
}

export interface CallFailure {
  code: Status;
  details: string;
  statusDetails?: StatusDetails;
}

/** Runs a call that must fail; returns its status and decoded google.rpc details. */
export async function failure(call: (options: { onTrailer(trailer: Metadata): void }) => Promise<unknown>): Promise<CallFailure> {
  let trailer: Metadata | undefined;
  try {
    await call({ onTrailer: (t) => (trailer = t) });
  } catch (err) {
    if (err instanceof ClientError) {
      const bin = trailer?.get(STATUS_DETAILS_KEY);
      return { code: err.code, details: err.details, statusDetails: bin instanceof Uint8Array ? decodeStatusDetails(bin) : undefined };
    }
    if (err instanceof UpstreamError) {
      return { code: err.code, details: err.details, statusDetails: err.statusDetails ? decodeStatusDetails(err.statusDetails) : undefined };
    }
    throw err;
  }
  throw new Error('the call succeeded but was expected to fail');
}

/** A Generate request with defaults for tests. */
export function generateRequest(fields: Partial<GenerateRequest>): GenerateRequest {
  return {
    model: 'fake',
    prompt: '',
    promptTokenIds: [],
    sampling: undefined,
    stop: [],
    requestId: '',
    priority: 0,
    messages: [],
    chatTemplate: '',
    chatTemplateKwargs: {},
    grammar: '',
    jsonSchema: '',
    stopTokenIds: [],
    ignoreEos: false,
    ...fields,
  };
}
