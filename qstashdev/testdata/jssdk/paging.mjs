// Pages qstashdev's DLQ and event log with the official @upstash/qstash
// SDK: dlq.listMessages({dlqIds}) must list only those entries, and logs()
// followed from a Date.now() cursor, as its documentation shows, must
// return every event once. Prints {"ok":true,...} and exits 0 on success.
//
// Env: QSTASH_URL, QSTASH_TOKEN.
import http from "node:http";
import assert from "node:assert/strict";
import { Client } from "@upstash/qstash";

const env = process.env;
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(489, { "upstash-nonretryable-error": "true" });
    res.end("rejected");
  });
});

async function poll(fn, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`condition not met in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const dest = `http://127.0.0.1:${server.address().port}`;
  const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN });

  const ids = [];
  for (let i = 0; i < 3; i++) {
    ids.push((await client.publishJSON({ url: `${dest}/dlq`, body: { i }, retries: 0 })).messageId);
  }
  const all = await poll(async () => {
    const { messages } = await client.dlq.listMessages();
    return messages.length === 3 ? messages : null;
  }, 20000);

  const one = await client.dlq.listMessages({ dlqIds: [all[1].dlqId] });
  assert.deepEqual(one.messages.map((m) => m.dlqId), [all[1].dlqId]);
  const two = await client.dlq.listMessages({ dlqIds: [all[0].dlqId, all[2].dlqId] });
  assert.deepEqual(two.messages.map((m) => m.dlqId).sort(), [all[0].dlqId, all[2].dlqId].sort());

  const everything = (await client.logs({ count: 1000 })).logs;
  assert.ok(everything.length >= 9, `only ${everything.length} events`);
  const seen = new Set();
  let cursor = Date.now();
  let pages = 0;
  while (cursor > 0) {
    const res = await client.logs({ cursor, count: 2 });
    for (const e of res.logs) {
      const key = `${e.time}/${e.messageId}/${e.state}`;
      assert.ok(!seen.has(key), `event ${key} listed twice`);
      seen.add(key);
    }
    cursor = res.cursor ?? 0;
    assert.ok(++pages <= everything.length, "the cursor does not advance");
  }
  assert.equal(seen.size, everything.length);
  for (const id of ids) assert.ok([...seen].some((k) => k.includes(`/${id}/`)), `no event for ${id}`);

  console.log(JSON.stringify({ ok: true, events: seen.size, pages }));
}

main()
  .then(() => {
    server.close();
    process.exit(0);
  })
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
