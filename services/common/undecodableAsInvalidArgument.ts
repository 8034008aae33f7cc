import { InvalidArgumentError } from './errors';

interface TsProtoMethod {
  requestType: { decode(input: Uint8Array): unknown };
}

/**
 * A copy of a ts-proto service definition whose request decoding never throws. grpc-js answers a request it
 * cannot deserialize (truncated, wrong wire type, not protobuf at all) with INTERNAL, which would blame the
 * server for the client's bytes; here such a request reaches the handler as a stand-in whose first field read
 * throws InvalidArgumentError, so the one error mapping answers INVALID_ARGUMENT.
 */
export function undecodableAsInvalidArgument<D extends { methods: Record<string, TsProtoMethod> }>(definition: D): D {
  const methods: Record<string, TsProtoMethod> = {};
  for (const [name, method] of Object.entries(definition.methods)) {
    const { decode } = method.requestType;
    methods[name] = {
      ...method,
      requestType: {
        ...method.requestType,
        decode(input: Uint8Array) {
          try {
            return decode.call(method.requestType, input);
          } catch (err) {
            return undecodable(err instanceof Error ? err.message : String(err));
          }
        },
      },
    };
  }
  return { ...definition, methods };
}

function undecodable(reason: string): object {
  const fail = (): never => {
    throw InvalidArgumentError.field('request', `not a valid protobuf message: ${reason}`);
  };
  return new Proxy({}, { get: fail, has: fail, ownKeys: fail, getOwnPropertyDescriptor: fail });
}
