/**
 * The Vulkan backend of the expert cache (patch 0014) on lavapipe, Mesa's Vulkan device on the CPU, so that CI
 * checks it without a GPU: the op against the CPU backend (test-backend-ops), and the engine with the cache resolved
 * on the device against stock llama-completion on the same ggml libraries. scripts/test.sh builds the Vulkan
 * variant (build/llama/patched/build-vulkan, native/build/vulkan) when the Vulkan toolchain and lavapipe are
 * installed (scripts/install-system-deps.sh installs them with the test packages); otherwise this suite is skipped,
 * unless MOEFLASH_TEST_VULKAN=1 demands it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { addonPath, repoRoot } from '../../services/engine/loadAddon';
import type { CacheFidelityRequest, CacheFidelityRow } from '../../harness/expertCacheFidelityChild';
import type { RouteDecisions, RouteDecisionsRequest } from '../../harness/routeDecisionsChild';
import { testModel } from '../../harness/testModels';

const run = promisify(execFile);

const VULKAN_BIN = join(repoRoot(), 'build', 'llama', 'patched', 'build-vulkan', 'bin');
const STOCK_CPU_BIN = join(repoRoot(), 'build', 'llama', 'stock', 'build-cpu', 'bin');
// ggml leaves CPU Vulkan devices out unless they are named; lavapipe is the only device on a machine without a GPU
const LAVAPIPE_ENV = { ...process.env, GGML_VK_VISIBLE_DEVICES: '0' };

describe('Vulkan expert cache on lavapipe (CPU Vulkan device)', function () {
  this.timeout(900_000);

  before(function () {
    const built = existsSync(join(VULKAN_BIN, 'test-backend-ops')) && existsSync(addonPath('vulkan'));
    if (!built && process.env.MOEFLASH_TEST_VULKAN === '1') {
      throw new Error(`MOEFLASH_TEST_VULKAN=1 but the Vulkan build is missing (${VULKAN_BIN}, ${addonPath('vulkan')}): scripts/test.sh builds it when glslc and lavapipe are installed`);
    }
    if (!built) this.skip();
  });

  /** Runs test-backend-ops for one op on Vulkan0 against the CPU backend; returns how many cases ran. */
  async function backendOps(op: string): Promise<number> {
    const { stdout } = await run(join(VULKAN_BIN, 'test-backend-ops'), ['test', '-o', op, '-b', 'Vulkan0'],
      { env: LAVAPIPE_ENV, maxBuffer: 16 << 20 });
    assert.match(stdout, /Backend 1\/\d+: Vulkan0/, stdout.slice(-2000));
    const passed = /(\d+)\/(\d+) tests passed/.exec(stdout);
    assert.ok(passed, `no test summary (was the op skipped as unsupported?):\n${stdout.slice(-2000)}`);
    assert.equal(passed[1], passed[2], stdout.slice(-3000));
    return Number(passed[2]);
  }

  it('test-backend-ops -o MOE_SLOTS passes on Vulkan0 against the CPU backend', async function () {
    const cases = await backendOps('MOE_SLOTS');
    assert.ok(cases >= 16, `only ${cases} MOE_SLOTS cases ran`);
  });

  it('ARGMAX picks the first of equal maxima on Vulkan0 and on the CPU backend, as the greedy sampler does (patch 0016)', async function () {
    // greedy tokens sampled in the graph come from ARGMAX (CPU, CUDA); the tie cases fail against an unpatched CPU backend
    const cases = await backendOps('ARGMAX');
    assert.ok(cases >= 10, `only ${cases} ARGMAX cases ran (the tie cases are missing)`);
  });

  it('the engine resolves slots on the device and matches stock llama-completion at K and N/2 slots', async function () {
    const model = await testModel('tiny');
    // stock llama-completion (CPU build) on the patched build's Vulkan ggml: the same kernels as the engine's stock path
    const ggmlDir = mkdtempSync(join(tmpdir(), 'moeflash-ggml-vulkan-'));
    try {
      for (const lib of ['libggml.so.0', 'libggml-base.so.0', 'libggml-cpu.so.0', 'libggml-vulkan.so.0'])
        symlinkSync(join(VULKAN_BIN, lib), join(ggmlDir, lib));
      const request: CacheFidelityRequest = {
        model, slots: [2, 4], nPredict: 32, contextSize: 512, threads: 2,
        prompts: ['The quick brown fox', 'Once upon a time, in a land far away,', 'def fibonacci(n):'],
      };
      const { stdout } = await run(process.execPath, [join(__dirname, '..', '..', 'harness', 'expertCacheFidelityChild.js'), JSON.stringify(request)], {
        env: { ...LAVAPIPE_ENV, MOEFLASH_BACKEND: 'vulkan', MOEFLASH_STOCK_BIN_DIR: STOCK_CPU_BIN, MOEFLASH_STOCK_GGML_DIR: ggmlDir },
        maxBuffer: 16 << 20,
      });
      const { rows } = JSON.parse(stdout.trim().split('\n').pop()!) as { rows: CacheFidelityRow[] };
      assert.equal(rows.length, request.slots.length * request.prompts.length);
      for (const row of rows) {
        const label = `${row.slots} slots, "${row.prompt}"`;
        assert.equal(row.path, 'device', `${label}: the cache fell back to ${row.path}`);
        assert.ok(row.equal, `${label}: output differs from stock llama-completion`);
        // the counters come back from the device: a cache of 2 or 4 of 8 experts misses and hits
        assert.ok(row.misses > 0 && row.hits > 0, `${label}: counters ${row.hits} hits, ${row.misses} misses`);
      }
    } finally {
      rmSync(ggmlDir, { recursive: true, force: true });
    }
  });

  it('with a route override (bench:cache\'s synthetic trace), the device path makes the host path\'s decisions', async function () {
    // the override's ids live in a tensor next to the banks on the device, written once per step (patch 0011)
    const request: RouteDecisionsRequest = { model: await testModel('tiny'), slots: 4, seed: 5, tokens: 24 };
    const { stdout } = await run(process.execPath, [join(__dirname, '..', '..', 'harness', 'routeDecisionsChild.js'), JSON.stringify(request)], {
      env: { ...LAVAPIPE_ENV, MOEFLASH_BACKEND: 'vulkan' },
      maxBuffer: 16 << 20,
    });
    const { device, host } = JSON.parse(stdout.trim().split('\n').pop()!) as { device: RouteDecisions; host: RouteDecisions };
    assert.equal(device.path, 'device');
    assert.equal(host.path, 'host-stop');
    assert.deepEqual(device.layers, host.layers);
    assert.ok(device.layers.some(([, misses, evictions]) => misses > 0 && evictions > 0), 'the trace missed and evicted');
  });
});
