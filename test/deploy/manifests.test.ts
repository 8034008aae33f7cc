import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from '../../services/engine/loadAddon';

/**
 * Renders every kustomize overlay with `kubectl kustomize` (offline) and validates each object against the
 * Kubernetes OpenAPI schemas bundled in the kubernetes-models package (ajv validators generated from the upstream
 * API spec), then checks what moeflash relies on: gRPC probes on declared ports, Prometheus annotations, resource
 * requests, non-root read-only containers, the expert-store sidecar sharing /dev/shm (memory) and the model volume.
 */

type Obj = { apiVersion: string; kind: string; metadata: { name: string; annotations?: Record<string, string> }; spec?: any };

const root = repoRoot();
const OVERLAYS = ['cpu', 'vulkan', 'cuda'] as const;
const GPU_RESOURCE: Record<string, string | undefined> = { cpu: undefined, vulkan: 'amd.com/gpu', cuda: 'nvidia.com/gpu' };
const METRICS_PORT: Record<string, string> = { 'moeflash-router': '9464', 'moeflash-inference': '9465' };

// kubernetes-models is ESM only; TypeScript's CommonJS output would turn import() into require().
const importEsm = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<any>;

function render(overlay: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', join(root, 'deploy', 'k8s', 'overlays', overlay)], { encoding: 'utf8', timeout: 30_000 });
  return parseAllDocuments(out).map((d) => {
    assert.deepEqual(d.errors, [], `${overlay}: YAML errors`);
    return d.toJSON() as Obj;
  });
}

/** The kubernetes-models module of an object: apps/v1 Deployment -> kubernetes-models/apps/v1/Deployment. */
async function validateSchema(o: Obj): Promise<void> {
  const mod = await importEsm(`kubernetes-models/${o.apiVersion}/${o.kind}`);
  const Model = mod[o.kind];
  assert.ok(Model, `no schema model for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

function workload(objs: Obj[], kind: string, name: string): Obj {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind}/${name} is missing`);
  return o;
}

function checkPodSpec(owner: Obj): void {
  const pod = owner.spec.template.spec;
  const where = `${owner.kind}/${owner.metadata.name}`;
  assert.equal(pod.securityContext?.runAsNonRoot, true, `${where}: runAsNonRoot`);
  for (const c of pod.containers) {
    const at = `${where} container ${c.name}`;
    assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${at}: readOnlyRootFilesystem`);
    assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${at}: allowPrivilegeEscalation`);
    assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${at}: cpu and memory requests`);
    assert.ok(c.readinessProbe && c.livenessProbe, `${at}: readiness and liveness probes`);
    if (!c.image.startsWith('ghcr.io/moeflash/moeflash:')) continue;
    const ports = new Set((c.ports ?? []).map((p: { containerPort: number }) => p.containerPort));
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe].filter(Boolean)) {
      assert.ok(probe.grpc, `${at}: gRPC health probe`);
      assert.ok(ports.has(probe.grpc.port), `${at}: probe port ${probe.grpc.port} is a declared containerPort`);
    }
    // In a pod the services must listen beyond loopback for probes and Services to reach them.
    const addr = (c.env ?? []).find((e: { name: string; value: string }) => /^MOEFLASH_(ROUTER|INFERENCE|EXPERT_STORE)_ADDR$/.test(e.name) && e.value.startsWith('0.0.0.0:'));
    assert.ok(addr, `${at}: binds its gRPC port on 0.0.0.0`);
    assert.ok(ports.has(Number(addr.value.split(':')[1])), `${at}: ${addr.name} port is declared`);
  }
}

describe('deploy: kubernetes manifests', function () {
  this.timeout(60_000);

  it('has an overlay directory for every backend', () => {
    assert.deepEqual(readdirSync(join(root, 'deploy', 'k8s', 'overlays')).sort(), [...OVERLAYS].sort());
  });

  for (const overlay of OVERLAYS) {
    it(`overlay ${overlay} renders and validates against the Kubernetes schemas`, async () => {
      const objs = render(overlay);
      for (const o of objs) await validateSchema(o);

      const router = workload(objs, 'Deployment', 'moeflash-router');
      const routerService = workload(objs, 'Service', 'moeflash-router');
      const inference = workload(objs, 'StatefulSet', 'moeflash-inference');
      const headless = workload(objs, 'Service', 'moeflash-inference');
      workload(objs, 'Deployment', 'moeflash-otel-collector');
      const otelConfig = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('moeflash-otel-collector'));
      assert.ok(otelConfig, 'OpenTelemetry Collector ConfigMap');

      for (const w of [router, inference, workload(objs, 'Deployment', 'moeflash-otel-collector')]) checkPodSpec(w);
      for (const w of [router, inference]) {
        const a = w.spec.template.metadata.annotations ?? {};
        assert.equal(a['prometheus.io/scrape'], 'true', `${w.metadata.name}: scrape annotation`);
        assert.equal(a['prometheus.io/port'], METRICS_PORT[w.metadata.name]);
      }
      const podRouter = router.spec.template.spec;
      assert.ok(podRouter.containers[0].ports.some((p: any) => p.containerPort === 9464 && p.name === 'metrics'));
      assert.deepEqual(routerService.spec.ports.map((p: any) => p.port), [50051]);
      assert.equal(headless.spec.clusterIP, 'None');
      assert.equal(inference.spec.serviceName, headless.metadata.name);

      // The expert-store sidecar shares a memory-backed /dev/shm and the model volume with the engine.
      const pod = inference.spec.template.spec;
      const engine = pod.containers.find((c: any) => c.name === 'inference');
      const store = pod.containers.find((c: any) => c.name === 'expert-store');
      assert.ok(engine && store, 'inference and expert-store containers');
      const shm = pod.volumes.find((v: any) => v.name === 'shm');
      assert.equal(shm?.emptyDir?.medium, 'Memory');
      for (const c of [engine, store]) {
        assert.ok(c.volumeMounts.some((m: any) => m.name === 'shm' && m.mountPath === '/dev/shm'), `${c.name}: /dev/shm`);
        assert.ok(c.volumeMounts.some((m: any) => m.name === 'models' && m.readOnly === true), `${c.name}: model volume read-only`);
      }
      assert.ok(inference.spec.volumeClaimTemplates.some((t: any) => t.metadata.name === 'models'));
      assert.ok(store.ports.some((p: any) => p.containerPort === 9466));

      const env = (name: string) => engine.env.find((e: any) => e.name === name)?.value;
      assert.equal(env('MOEFLASH_BACKEND'), overlay);
      const gpu = GPU_RESOURCE[overlay];
      const gpus = Object.keys(engine.resources.limits).filter((k) => k.endsWith('/gpu'));
      assert.deepEqual(gpus, gpu ? [gpu] : []);
      if (gpu) assert.equal(String(engine.resources.limits[gpu]), '1');
      assert.ok(podRouter.containers[0].image.endsWith(`:${overlay}`), 'image tag names the backend');
    });
  }

  it('the schema check rejects a broken object (the validator is live)', async () => {
    const [router] = render('cpu').filter((o) => o.kind === 'Deployment');
    const broken = structuredClone(router);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'fifty';
    delete broken.spec.selector;
    await assert.rejects(validateSchema(broken), /containerPort must be integer|must have required property 'selector'/);
  });

  it('systemd units pass systemd-analyze verify', function () {
    const dir = join(root, 'deploy', 'systemd');
    const units = readdirSync(dir).filter((f) => /\.(service|target)$/.test(f));
    assert.deepEqual(units.sort(), ['moeflash-expert-store.service', 'moeflash-inference.service', 'moeflash-router.service', 'moeflash.target']);
    try {
      execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
    } catch {
      this.skip();
    }
    // Exit status is non-zero on any error; warnings about the missing /opt/moeflash install are not errors.
    execFileSync('systemd-analyze', ['verify', '--man=no', ...units.map((u) => join(dir, u))], { encoding: 'utf8', timeout: 30_000 });
  });
});
