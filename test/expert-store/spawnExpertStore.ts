import { join } from 'node:path';

import { createChannel, createClient, type Channel } from 'nice-grpc';

import { ExpertStoreServiceDefinition, type ExpertStoreServiceClient } from '../../gen/moeflash/v1/expert_store';
import { repoRoot } from '../../services/engine/loadAddon';
import { spawnService, type SpawnedService } from '../../harness/spawnService';

export interface SpawnedExpertStore {
  service: SpawnedService;
  channel: Channel;
  client: ExpertStoreServiceClient;
}

/**
 * Starts dist/services/expert-store/main.js for `modelPath` on a free loopback port (no HTTP endpoint), with its
 * state under `stateDir` and the given hint channel; `env` overrides any of it. Resolves once it listens.
 */
export async function spawnExpertStore(modelPath: string, stateDir: string, hintChannel: string, env: Record<string, string> = {}): Promise<SpawnedExpertStore> {
  const service = await spawnService(join(repoRoot(), 'dist', 'services', 'expert-store', 'main.js'), {
    MOEFLASH_MODEL: modelPath,
    MOEFLASH_EXPERT_STORE_ADDR: '127.0.0.1:0',
    MOEFLASH_EXPERT_STORE_HTTP_ADDR: 'off',
    MOEFLASH_STATE_DIR: stateDir,
    MOEFLASH_HINT_CHANNEL: hintChannel,
    ...env,
  });
  const channel = createChannel(`127.0.0.1:${service.port}`);
  return { service, channel, client: createClient(ExpertStoreServiceDefinition, channel) };
}
