/**
 * `moeflash trace-summary`: what one recent request did, layer by layer, read from the recent-request ring of an
 * inference process (RecentRequestsService): usage, where the time went (queueing, prefill, decode) and, per layer,
 * the distinct experts it routed to and, when the engine reports them, its expert-cache hits and misses.
 */
import { parseArgs } from 'node:util';
import { ClientError, createChannel, createClient, Status } from 'nice-grpc';
import { RecentRequestsServiceDefinition, type RequestSummary } from '../../gen/moeflash/v1/inference';
import { InvalidArgumentError } from '../../services/common/errors';
import { parseNumber } from '../parseNumber';

const USAGE = `usage: moeflash trace-summary [--addr HOST:PORT] [--request-id ID] [--list [--limit N]] [--json]
  --addr        an inference process (default MOEFLASH_INFERENCE_ADDR or 127.0.0.1:50061)
  --request-id  the request to show (default: the most recent one); the router assigns an id when the client
                gives none: find it with --list
  --list        one line per request kept (newest first) instead of one request's detail
  --limit       with --list, at most N lines (default: every request kept)
  --json        the summaries as JSON lines
`;

export async function traceSummaryCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string', default: process.env.MOEFLASH_INFERENCE_ADDR ?? '127.0.0.1:50061' },
      'request-id': { type: 'string', default: '' },
      list: { type: 'boolean', default: false },
      limit: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const limit = parseNumber('limit', values.limit, true) ?? 0;
  if (limit < 0) throw InvalidArgumentError.field('--limit', `must be >= 0, got ${limit}`);
  const channel = createChannel(values.addr);
  try {
    const client = createClient(RecentRequestsServiceDefinition, channel);
    const { requests, capacity } = await client.listRecentRequests(
      { requestId: values['request-id'], limit: values.list ? limit : 1 },
      { signal: AbortSignal.timeout(10_000) },
    );
    if (values.json) {
      for (const r of requests) process.stdout.write(JSON.stringify(r) + '\n');
    } else if (values.list) {
      process.stdout.write(requests.map(listLine).join(''));
    } else if (requests.length === 0) {
      process.stderr.write(`trace-summary: ${values.addr} has finished no request yet (it keeps the last ${capacity})\n`);
      return 1;
    } else {
      process.stdout.write(detail(requests[0]));
    }
    return 0;
  } catch (err) {
    if (!(err instanceof ClientError)) throw err;
    process.stderr.write(`trace-summary: ${Status[err.code]}: ${err.details}\n`);
    return 1;
  } finally {
    channel.close();
  }
}

const ms = (v: number | undefined) => `${(v ?? 0).toFixed(1)} ms`;
const percent = (part: number, whole: number) => (whole > 0 ? `${((part / whole) * 100).toFixed(1)}%` : '-');
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

function listLine(r: RequestSummary): string {
  const when = new Date(r.finishedUnixMs).toISOString();
  const t = r.timings;
  return `${when}\t${r.requestId}\t${r.model}\t${r.finishReason}\tprompt=${r.usage?.promptTokens ?? 0}\tcompletion=${r.usage?.completionTokens ?? 0}\t` +
    `queue=${ms(t?.queueMs)}\tprefill=${ms(t?.prefillMs)}\tdecode=${ms(t?.decodeMs)}\ttrace=${r.traceId || '-'}\n`;
}

/** One request: header lines, then a table with one row per layer. */
function detail(r: RequestSummary): string {
  const t = r.timings;
  const cache = r.expertCache;
  const lines = [
    `request ${r.requestId}  model ${r.model}  finish ${r.finishReason}  finished ${new Date(r.finishedUnixMs).toISOString()}`,
    `trace   ${r.traceId || '(not traced)'}`,
    `tokens  prompt ${r.usage?.promptTokens ?? 0}  completion ${r.usage?.completionTokens ?? 0}`,
    `time    queue ${ms(t?.queueMs)}  prefill ${ms(t?.prefillMs)} (${(t?.prefillTokensPerSecond ?? 0).toFixed(1)} t/s)  ` +
      `ttft ${ms(t?.ttftMs)}  decode ${ms(t?.decodeMs)} (${(t?.decodeTokensPerSecond ?? 0).toFixed(1)} t/s)`,
  ];
  if (cache) {
    const hits = sum(cache.hits);
    const misses = sum(cache.misses);
    lines.push(
      `cache   hits ${hits}  misses ${misses}  hit rate ${percent(hits, hits + misses)}  ` +
        `copied ${(cache.bytesCopied / 2 ** 20).toFixed(1)} MiB in ${ms(cache.copyMs)}  decode stalled ${ms(cache.stallMs)}`,
    );
  } else {
    lines.push('cache   not reported by the engine (it runs without an expert cache): distinct experts per layer only');
  }
  const layers = Math.max(r.expertsPerLayer.length, cache?.hits.length ?? 0, cache?.misses.length ?? 0);
  const rows: string[][] = [];
  for (let l = 0; l < layers; l++) {
    const distinct = r.expertsPerLayer[l] ?? 0;
    const hit = cache?.hits[l] ?? 0;
    const miss = cache?.misses[l] ?? 0;
    if (distinct === 0 && hit + miss === 0) continue; // a dense layer: no routed experts
    rows.push(cache ? [String(l), String(distinct), String(hit), String(miss), percent(hit, hit + miss)] : [String(l), String(distinct)]);
  }
  if (rows.length === 0) return lines.join('\n') + '\nno expert activity recorded (dense model, or routing not recorded)\n';
  const headers = cache ? ['layer', 'experts', 'hits', 'misses', 'hit%'] : ['layer', 'experts'];
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const row = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  const distinct = r.expertsPerLayer;
  lines.push('', row(headers), ...rows.map(row));
  lines.push(`distinct experts: ${sum(distinct)} over ${rows.length} layers, at most ${Math.max(0, ...distinct)} in one layer`);
  return lines.join('\n') + '\n';
}
