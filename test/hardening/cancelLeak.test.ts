import assert from 'node:assert/strict';
import { runCancelLeak } from '../../harness/cancelLeak';

describe('hardening: mid-stream cancels against the real engine', () => {
  it('200 mid-stream cancels leave no active sequence and RSS within 5% of the warmed-up figure', async function () {
    this.timeout(90_000);
    const r = await runCancelLeak({ cancels: 200, warmup: 200, concurrency: 6, cancelAfterChunks: 3, settleTimeoutMs: 10_000 });
    assert.equal(r.activeSequencesAfter, 0, JSON.stringify(r));
    assert.equal(r.queuedRequestsAfter, 0, JSON.stringify(r));
    assert.equal(r.totalRequests, 400);
    assert.ok(r.rssGrowthPercent < 5, `RSS grew ${r.rssGrowthPercent.toFixed(2)}%: ${JSON.stringify(r)}`);
    if (process.env.MOEFLASH_LEAK_REPORT) console.log(JSON.stringify(r));
  });
});
