import { ServerReflectionService } from 'nice-grpc-server-reflection';

/**
 * grpc.reflection.v1alpha.ServerReflection: the same messages as v1 under the older name, which tools that predate
 * v1 still ask for (older grpcurl and grpc_cli, several GUI clients). grpc-go and grpc-java register both; one
 * implementation serves both here.
 */
export const ServerReflectionV1alphaService = {
  serverReflectionInfo: {
    ...ServerReflectionService.serverReflectionInfo,
    path: '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
  },
} as const;
