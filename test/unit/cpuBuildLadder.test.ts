import assert from 'node:assert/strict';

import { cpuBuildLadder } from '../../services/engine/cpuBuild/cpuBuildLadder';
import { recordCoversHost, type CpuBuildRecord } from '../../services/engine/cpuBuild/cpuBuildRecord';
import { parseCpuInfo } from '../../services/engine/cpuBuild/hostCpu';

// /proc/cpuinfo flags as reported by real hosts (trimmed to the fields that matter).
const SAPPHIRE_RAPIDS_VM =
  'fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor avx2 bmi1 bmi2 ' +
  'avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512vbmi avx512_vbmi2 avx512_vnni avx512_bf16 ' +
  'avx_vnni amx_bf16 amx_tile amx_int8';
const ZEN5_VM =
  'fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl ' +
  'avx512vbmi avx_vnni avx512_bf16 avx512_vnni';
const SKYLAKE_X = 'sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl';
const SANDY_BRIDGE = 'sse sse2 ssse3 sse4_1 sse4_2 popcnt avx';

function host(flags: string, arch = 'x64') {
  return parseCpuInfo(`processor\t: 0\nmodel name\t: test cpu\nflags\t\t: ${flags}\n`, arch);
}

function cmake(level: { cmakeFlags: string[] }): Record<string, string> {
  return Object.fromEntries(level.cmakeFlags.map((f) => f.replace(/^-D/, '').split('=') as [string, string]));
}

describe('CPU build ladder', () => {
  it('an AMX host first gets every tier it reports, then AMX goes, then AVX-512, then down to the baseline', () => {
    const ladder = cpuBuildLadder(host(SAPPHIRE_RAPIDS_VM));
    assert.deepEqual(ladder.map((l) => l.name), ['amx', 'avx512', 'avx_vnni', 'avx2', 'avx', 'sse42', 'baseline']);
    assert.equal(cmake(ladder[0]).GGML_AMX_INT8, 'ON');
    assert.equal(cmake(ladder[0]).GGML_AVX512_BF16, 'ON');
    assert.equal(cmake(ladder[0]).GGML_NATIVE, 'OFF');
    assert.deepEqual(ladder[1].dropped, { tier: 'amx', label: 'AMX', flags: ['amx_tile', 'amx_int8', 'amx_bf16'] });
    assert.equal(cmake(ladder[1]).GGML_AMX_INT8, 'OFF');
    assert.equal(cmake(ladder[1]).GGML_AMX_TILE, 'OFF');
    assert.equal(cmake(ladder[1]).GGML_AVX512, 'ON');
    assert.equal(cmake(ladder[2]).GGML_AVX512, 'OFF');
    assert.equal(cmake(ladder[2]).GGML_AVX512_VNNI, 'OFF');
    assert.equal(cmake(ladder[2]).GGML_AVX_VNNI, 'ON');
    const baseline = cmake(ladder.at(-1)!);
    assert.ok(Object.values(baseline).every((v) => v === 'OFF'), 'the baseline compiles no instruction-set option in');
  });

  it('optional AVX-512 extensions follow the host: VBMI on where reported, off where not', () => {
    const zen = cmake(cpuBuildLadder(host(ZEN5_VM))[0]);
    assert.equal(zen.GGML_AVX512_VBMI, 'ON');
    assert.equal(zen.GGML_AMX_TILE, 'OFF');
    const skx = cpuBuildLadder(host(SKYLAKE_X));
    assert.deepEqual(skx.map((l) => l.name), ['avx512', 'avx2', 'avx', 'sse42', 'baseline']);
    assert.equal(cmake(skx[0]).GGML_AVX512_VBMI, 'OFF');
    assert.equal(cmake(skx[0]).GGML_AVX_VNNI, 'OFF');
  });

  it('a tier whose base is missing is not built (no AVX2 kernels on an AVX-only host)', () => {
    const ladder = cpuBuildLadder(host(SANDY_BRIDGE));
    assert.deepEqual(ladder.map((l) => l.name), ['avx', 'sse42', 'baseline']);
    assert.equal(cmake(ladder[0]).GGML_AVX2, 'OFF');
    assert.equal(cmake(ladder[0]).GGML_FMA, 'OFF');
  });

  it('other architectures get the native build, then a generic one', () => {
    const ladder = cpuBuildLadder(host('fp asimd sve', 'arm64'));
    assert.deepEqual(ladder.map((l) => l.cmakeFlags), [['-DGGML_NATIVE=ON'], ['-DGGML_NATIVE=OFF']]);
  });

  it('a probe record covers only a host with the same CPU features', () => {
    const here = host(ZEN5_VM);
    const record = { probe: { ok: true }, host: { model: here.model, fingerprint: here.fingerprint } } as CpuBuildRecord;
    assert.equal(recordCoversHost(record, here), true);
    assert.equal(recordCoversHost(record, host(SAPPHIRE_RAPIDS_VM)), false);
    assert.equal(recordCoversHost({ ...record, probe: { ok: false, reason: 'not probed' } }, here), false);
    assert.equal(recordCoversHost(undefined, here), false);
  });
});
