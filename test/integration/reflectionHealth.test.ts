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
import { FakeEngine } from '../helpers/FakeEngine';
import { startStack } from '../helpers/startStack';

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

  it('the router lists moeflash.v1.GenerationService through reflection and serves its descriptor', async () => {
    const channel = createChannel(stack.router.address);
    try {
      const client = createClient(ServerReflectionService, channel);
      const responses: ServerReflectionResponse[] = [];
      for await (const r of client.serverReflectionInfo(one(new ServerReflectionRequest().setListServices('*')))) responses.push(r);
      const names = responses[0].getListServicesResponse()?.getServiceList().map((s) => s.getName());
      assert.deepEqual(names, ['moeflash.v1.GenerationService']);

      const files: ServerReflectionResponse[] = [];
      const request = new ServerReflectionRequest().setFileContainingSymbol('moeflash.v1.GenerationService');
      for await (const r of client.serverReflectionInfo(one(request))) files.push(r);
      const protos = files[0].getFileDescriptorResponse()?.getFileDescriptorProtoList_asU8() ?? [];
      const file = fromBinary(FileDescriptorProtoSchema, protos[0]);
      assert.equal(file.name, 'moeflash/v1/generation.proto');
      assert.ok(file.service[0].method.some((m) => m.name === 'Generate'));
    } finally {
      channel.close();
    }
  });

  it('serves the same through grpc.reflection.v1alpha, for clients that only speak the older name', async () => {
    const channel = createChannel(stack.router.address);
    try {
      const client = createClient(ServerReflectionV1alphaService, channel);
      const responses: ServerReflectionResponse[] = [];
      for await (const r of client.serverReflectionInfo(one(new ServerReflectionRequest().setListServices('*')))) responses.push(r);
      assert.deepEqual(responses[0].getListServicesResponse()?.getServiceList().map((s) => s.getName()), ['moeflash.v1.GenerationService']);
      const files: ServerReflectionResponse[] = [];
      for await (const r of client.serverReflectionInfo(one(new ServerReflectionRequest().setFileContainingSymbol('moeflash.v1.GenerationService')))) files.push(r);
      assert.equal(fromBinary(FileDescriptorProtoSchema, files[0].getFileDescriptorResponse()!.getFileDescriptorProtoList_asU8()[0]).name, 'moeflash/v1/generation.proto');
    } finally {
      channel.close();
    }
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
