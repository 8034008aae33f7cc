import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** How a probe of the engine build ended. */
export interface EngineProbeResult {
  ok: boolean;
  /** The signal that killed the child (SIGILL, SIGSEGV, ...): the build runs instructions this host cannot. */
  signal: NodeJS.Signals | null;
  exitCode: number | null;
  /** One line: what happened. */
  reason: string;
  /** What the child reported on success: the build's compiled-in features, tokens decoded, time taken. */
  systemInfo?: string;
  tokens?: number;
  ms?: number;
}

/** The instruction-set tier names a build's llama_print_system_info() shows, for MOEFLASH_CPU_PROBE_FAULT. */
export const TIER_FEATURE: Readonly<Record<string, string>> = {
  amx: 'AMX_INT8',
  avx512: 'AVX512',
  avx_vnni: 'AVX_VNNI',
  avx2: 'AVX2',
  avx: 'AVX',
};

/**
 * Runs a tiny decode with the engine build in a child process (engineProbeChild) and reports whether it survived.
 * A build compiled for instructions the host reports but does not execute dies by a signal on its first matmul;
 * a child takes that death instead of the caller. `env` goes to the child (MOEFLASH_ADDON_BUILD_DIR picks the
 * build; MOEFLASH_CPU_PROBE_FAULT=<tier> makes a build that includes the tier die by SIGILL, for tests).
 */
export function probeEngineBuild(options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<EngineProbeResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(__dirname, 'engineProbeChild.js')], {
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, signal: null, exitCode: null, reason: `the probe could not start: ${err.message}` });
    });
    child.on('exit', (exitCode, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        resolve({ ok: false, signal: null, exitCode, reason: `the probe did not finish within ${timeoutMs} ms` });
      } else if (signal) {
        resolve({ ok: false, signal, exitCode, reason: `the engine died with ${signal} during a tiny decode` });
      } else if (exitCode !== 0) {
        const last = stderr.trim().split('\n').at(-1) ?? '';
        resolve({ ok: false, signal: null, exitCode, reason: `the probe failed (exit ${exitCode}): ${last}` });
      } else {
        try {
          const report = JSON.parse(stdout) as { systemInfo: string; tokens: number; ms: number };
          resolve({ ok: true, signal: null, exitCode, reason: `decoded ${report.tokens} tokens`, ...report });
        } catch {
          resolve({ ok: false, signal: null, exitCode, reason: `the probe printed no report: ${stdout.slice(0, 200)}` });
        }
      }
    });
  });
}
