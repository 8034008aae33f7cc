/**
 * `moeflash heatmap`: fetches a running expert-store's heat map and residency and writes them as an SVG
 * (layers x experts, colour = use, dot = resident).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { createChannel, createClient } from 'nice-grpc';

import { ExpertStoreServiceDefinition } from '../../gen/moeflash/v1/expert_store';
import { heatMapViewOf, renderHeatMapSvg } from '../../services/expert-store/renderHeatMapSvg';

const USAGE = `usage: moeflash heatmap [--addr HOST:PORT] [--model NAME] [--out FILE|-]
  --addr   the expert-store (default MOEFLASH_EXPERT_STORE_ADDR or 127.0.0.1:50071)
  --model  model name (default: the store's model)
  --out    SVG file to write, - for stdout (default heatmap.svg)
`;

export async function heatmapCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string', default: process.env.MOEFLASH_EXPERT_STORE_ADDR ?? '127.0.0.1:50071' },
      model: { type: 'string', default: '' },
      out: { type: 'string', default: 'heatmap.svg' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const channel = createChannel(values.addr);
  try {
    const client = createClient(ExpertStoreServiceDefinition, channel);
    const signal = AbortSignal.timeout(30_000);
    const [heat, residency] = await Promise.all([
      client.getHeatMap({ model: values.model }, { signal }),
      client.residency({ model: values.model }, { signal }),
    ]);
    const pct = (residency.residentFraction * 100).toFixed(1);
    const title = `${values.model || 'expert-store'} at ${values.addr}: ${pct}% of expert bytes resident, ${heat.stepsObserved} steps observed`;
    const svg = renderHeatMapSvg(heatMapViewOf(heat, residency, title));
    if (values.out === '-') {
      process.stdout.write(svg);
    } else {
      writeFileSync(values.out, svg);
      process.stderr.write(`heatmap: ${heat.layers.length} layers, ${pct}% resident -> ${values.out}\n`);
    }
    return 0;
  } finally {
    channel.close();
  }
}
