import assert from 'node:assert/strict';
import { createChannel, createClient } from 'nice-grpc';
import { HealthDefinition } from 'nice-grpc-server-health';
import { HealthCheckResponse_ServingStatus as ServingStatus } from 'nice-grpc-server-health/lib/proto/grpc/health/v1/health';
import { ServerReflectionService } from 'nice-grpc-server-reflection';
import {
  ServerReflectionRequest,
  type ServerReflectionResponse,
} from 'nice-grpc-server-reflection/lib/proto/grpc/reflection/v1/reflection_pb';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { ServerReflectionV1alphaService } from '../../services/common/reflectionV1alpha';
import { FakeEngine } from '../../harness/FakeEngine';
import { startStack } from '../../harness/startStack';

async function* one<T>(value: T): AsyncIterable<T> {
  yield value;
}

describe('reflection and health', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  before(async () => {
    stack = await startStack({ fake: new FakeEngine() });
  });
  after(async () => {
    await stack.stop();
  });

  /** Lists the services through `definition` (v1 or v1alpha), and the file that describes GenerationService. */
  async function reflect(definition: typeof ServerReflectionService | typeof ServerReflectionV1alphaService) {
    const channel = createChannel(stack.router.address);
    try {
      const client = createClient(definition as typeof ServerReflectionService, channel);
      const ask = async (request: ServerReflectionRequest) => {
        const responses: ServerReflectionResponse[] = [];
        for await (const r of client.serverReflectionInfo(one(request))) responses.push(r);
        return responses[0];
      };
      const services = (await ask(new ServerReflectionRequest().setListServices('*'))).getListServicesResponse()?.getServiceList().map((s) => s.getName());
      const protos = (await ask(new ServerReflectionRequest().setFileContainingSymbol('moeflash.v1.GenerationService'))).getFileDescriptorResponse()?.getFileDescriptorProtoList_asU8() ?? [];
      return { services, file: fromBinary(FileDescriptorProtoSchema, protos[0]) };
    } finally {
      channel.close();
    }
  }

  it('the router lists moeflash.v1.GenerationService through reflection and serves its descriptor', async () => {
    const { services, file } = await reflect(ServerReflectionService);
    assert.deepEqual(services, ['moeflash.v1.GenerationService']);
    assert.equal(file.name, 'moeflash/v1/generation.proto');
    assert.ok(file.service[0].method.some((m) => m.name === 'Generate'));
  });

  it('serves the same through grpc.reflection.v1alpha, for clients that only speak the older name', async () => {
    const { services, file } = await reflect(ServerReflectionV1alphaService);
    assert.deepEqual(services, ['moeflash.v1.GenerationService']);
    assert.equal(file.name, 'moeflash/v1/generation.proto');
  });

  it('serves liveness ("") and readiness per service on router and inference', async () => {
    for (const [address, service] of [
      [stack.router.address, 'moeflash.v1.GenerationService'],
      [stack.inference.address, 'moeflash.v1.InferenceService'],
    ]) {
      const channel = createChannel(address);
      try {
        const health = createClient(HealthDefinition, channel);
        assert.equal((await health.check({ service: '' })).status, ServingStatus.SERVING);
        assert.equal((await health.check({ service })).status, ServingStatus.SERVING);
      } finally {
        channel.close();
      }
    }
  });
});
