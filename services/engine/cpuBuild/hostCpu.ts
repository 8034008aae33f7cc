import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { arch } from 'node:os';

/** The CPU this process runs on, as the kernel reports it (which is what a hypervisor chose to show). */
export interface HostCpu {
  /** node's name for the architecture: 'x64', 'arm64', ... */
  arch: string;
  /** "model name" of /proc/cpuinfo (or "unknown"). */
  model: string;
  /** The feature flags of /proc/cpuinfo ("flags" on x86, "Features" on Arm). */
  flags: Set<string>;
  /** A hash of arch, model and flags: a build probed on one host is trusted on another only when they match. */
  fingerprint: string;
}

/** Parses /proc/cpuinfo text (the first processor's entry speaks for all). */
export function parseCpuInfo(text: string, architecture = arch()): HostCpu {
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();
  const model = field('model name') ?? field('Model') ?? 'unknown';
  const flags = new Set((field('flags') ?? field('Features') ?? '').split(/\s+/).filter(Boolean));
  const fingerprint = createHash('sha256')
    .update(`${architecture}\n${model}\n${[...flags].sort().join(' ')}`)
    .digest('hex')
    .slice(0, 16);
  return { arch: architecture, model, flags, fingerprint };
}

/** This host's CPU. */
export function hostCpu(): HostCpu {
  let text = '';
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // no /proc (not Linux): an empty feature set, so only the baseline build is offered
  }
  return parseCpuInfo(text);
}
