import type { HostCpu } from './hostCpu';

/**
 * One instruction-set tier of ggml's CPU backend on x86-64: the cmake options that compile it in, and the
 * /proc/cpuinfo flags a host must report for it. `required` flags gate the tier; `optional` ones add their
 * option only when present (AVX-512 VBMI, VNNI, BF16 on top of AVX-512F/CD/VL/DQ/BW, for example).
 */
interface Tier {
  /** Short name, used in logs, the build record and MOEFLASH_CPU_PROBE_FAULT. */
  name: string;
  /** What it is, for the one line the install prints when it leaves the tier out. */
  label: string;
  /** The tier whose code this one builds on (AVX-512 kernels assume AVX2 and FMA are compiled in). */
  needs?: string;
  required: [flag: string, option: string][];
  optional: [flag: string, option: string][];
}

// Lowest first; the ladder drops them from the top.
const X86_TIERS: Tier[] = [
  { name: 'sse42', label: 'SSE4.2', required: [['sse4_2', 'GGML_SSE42']], optional: [] },
  { name: 'avx', label: 'AVX', needs: 'sse42', required: [['avx', 'GGML_AVX']], optional: [['f16c', 'GGML_F16C']] },
  {
    name: 'avx2',
    label: 'AVX2/FMA/BMI2',
    needs: 'avx',
    required: [['avx2', 'GGML_AVX2'], ['fma', 'GGML_FMA'], ['bmi2', 'GGML_BMI2']],
    optional: [],
  },
  { name: 'avx_vnni', label: 'AVX-VNNI', needs: 'avx2', required: [['avx_vnni', 'GGML_AVX_VNNI']], optional: [] },
  {
    name: 'avx512',
    label: 'AVX-512',
    needs: 'avx2',
    required: [['avx512f', 'GGML_AVX512'], ['avx512cd', ''], ['avx512vl', ''], ['avx512dq', ''], ['avx512bw', '']],
    optional: [['avx512vbmi', 'GGML_AVX512_VBMI'], ['avx512_vnni', 'GGML_AVX512_VNNI'], ['avx512_bf16', 'GGML_AVX512_BF16']],
  },
  {
    name: 'amx',
    label: 'AMX',
    needs: 'avx512',
    required: [['amx_tile', 'GGML_AMX_TILE']],
    optional: [['amx_int8', 'GGML_AMX_INT8'], ['amx_bf16', 'GGML_AMX_BF16']],
  },
];

const ALL_X86_OPTIONS = [...new Set(X86_TIERS.flatMap((t) => [...t.required, ...t.optional].map(([, o]) => o)).filter(Boolean))];

/** One CPU build the install can try: a name, its cmake options, and what it leaves out compared with the level above. */
export interface CpuBuildLevel {
  /** The highest tier it includes ('host' tiers listed in `tiers`), e.g. 'avx512'; 'baseline' for none. */
  name: string;
  /** The tiers compiled in, lowest first. */
  tiers: string[];
  /** -D options for llama.cpp's cmake (always GGML_NATIVE=OFF on x86: every instruction set is chosen here). */
  cmakeFlags: string[];
  /** The tier this level drops from the one above it, with the cpuinfo flags that tier covered; absent for the first. */
  dropped?: { tier: string; label: string; flags: string[] };
}

function levelOf(tiers: Tier[], host: Set<string>): Pick<CpuBuildLevel, 'name' | 'tiers' | 'cmakeFlags'> {
  const on = new Set<string>();
  for (const t of tiers) {
    for (const [, option] of t.required) if (option) on.add(option);
    for (const [flag, option] of t.optional) if (host.has(flag)) on.add(option);
  }
  const cmakeFlags = ['-DGGML_NATIVE=OFF', ...ALL_X86_OPTIONS.map((o) => `-D${o}=${on.has(o) ? 'ON' : 'OFF'}`)];
  return { name: tiers.at(-1)?.name ?? 'baseline', tiers: tiers.map((t) => t.name), cmakeFlags };
}

/**
 * The builds to try on this host, best first: every tier the host reports, then one tier fewer at a time down to
 * the x86-64 baseline. The install builds the first, probes it in a child process, and moves down the list while
 * the probe dies by a signal (an instruction the host reports but does not run: AMX on some Intel VMs).
 * Other architectures get their native build, then a generic one.
 */
export function cpuBuildLadder(cpu: Pick<HostCpu, 'arch' | 'flags'>): CpuBuildLevel[] {
  if (cpu.arch !== 'x64') {
    return [
      { name: 'native', tiers: ['native'], cmakeFlags: ['-DGGML_NATIVE=ON'] },
      { name: 'generic', tiers: [], cmakeFlags: ['-DGGML_NATIVE=OFF'], dropped: { tier: 'native', label: '-mcpu=native', flags: [] } },
    ];
  }
  const present: Tier[] = [];
  for (const t of X86_TIERS) {
    const base = t.needs === undefined || present.some((p) => p.name === t.needs);
    if (base && t.required.every(([flag]) => cpu.flags.has(flag))) present.push(t);
  }
  const levels: CpuBuildLevel[] = [];
  for (let n = present.length; n >= 0; n--) {
    const level: CpuBuildLevel = levelOf(present.slice(0, n), cpu.flags);
    const above = present[n];
    if (n < present.length && above) {
      const flags = [...above.required, ...above.optional].map(([f]) => f).filter((f) => cpu.flags.has(f));
      level.dropped = { tier: above.name, label: above.label, flags };
    }
    levels.push(level);
  }
  return levels;
}
