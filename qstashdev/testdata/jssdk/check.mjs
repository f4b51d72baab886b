// Drives a running qstashdev server with the official @upstash/qstash SDK:
// publishes through the Client (explicit baseUrl/token, and dev mode, which
// only accepts a server whose GET /v2/keys returns the dev keys), receives
// the deliveries on a local HTTP server, and checks each one with
// Receiver.verify. Prints {"ok":true,...} and exits 0 on success.
//
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY,
// QSTASH_NEXT_SIGNING_KEY, QSTASH_DEV_PORT (the server's port).
import http from "node:http";
import assert from "node:assert/strict";
import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
const received = [];
let notify = () => {};

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    received.push({
      method: req.method,
      url: `http://${req.headers.host}${req.url}`,
      path: req.url.split("?")[0],
      headers: req.headers,
      body: Buffer.concat(chunks).toString("utf8"),
    });
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
    notify();
  });
});

async function waitFor(n, ms) {
  const deadline = Date.now() + ms;
  while (received.length < n) {
    if (Date.now() > deadline) throw new Error(`got ${received.length} of ${n} deliveries in ${ms} ms`);
    await new Promise((r) => {
      notify = r;
      setTimeout(r, 100);
    });
  }
}

async function main() {
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const dest = `http://127.0.0.1:${server.address().port}`;

  const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN });
  // Dev mode ignores baseUrl/token and uses http://127.0.0.1:$QSTASH_DEV_PORT
  // with the dev token, after checking GET /v2/keys returns the dev keys;
  // otherwise it would try to download the official binary and fail.
  const devClient = new Client({ devMode: true });

  const ids = new Set();
  const r1 = await client.publishJSON({
    url: `${dest}/json?tenant=a&x=1`,
    body: { hello: "world" },
    headers: { "X-Test": "forwarded" },
    retries: 0,
  });
  ids.add(r1.messageId);
  const r2 = await devClient.publish({ url: `${dest}/dev`, body: "plain text ünïcode", delay: 1 });
  ids.add(r2.messageId);
  const pending = await client.messages.get(r2.messageId);
  assert.equal(pending.body, "plain text ünïcode");
  assert.equal(pending.url, `${dest}/dev`);

  const r3 = await client.queue({ queueName: "js-queue" }).enqueueJSON({ url: `${dest}/queued`, body: { n: 1 } });
  ids.add(r3.messageId);
  const batch = await client.batchJSON([
    { url: `${dest}/batch-a`, body: { a: 1 } },
    { url: `${dest}/batch-b`, body: { b: 2 }, flowControl: { key: "js", parallelism: 1 }, label: "js-label" },
  ]);
  for (const b of batch) ids.add(b.messageId);
  assert.equal(ids.size, 5);

  const dedup1 = await client.publish({ url: `${dest}/dedup`, body: "d", deduplicationId: "js-dedup", delay: 3600 });
  const dedup2 = await client.publish({ url: `${dest}/dedup`, body: "d", deduplicationId: "js-dedup", delay: 3600 });
  assert.equal(dedup2.messageId, dedup1.messageId);
  assert.equal(dedup2.deduplicated, true);
  await client.messages.delete(dedup1.messageId);

  const { scheduleId } = await client.schedules.create({ destination: `${dest}/cron`, cron: "*/10 * * * * " });
  const sch = await client.schedules.get(scheduleId);
  assert.equal(sch.cron, "*/10 * * * *");
  await client.schedules.pause({ schedule: scheduleId });
  assert.equal((await client.schedules.get(scheduleId)).isPaused, true);
  await client.schedules.delete(scheduleId);

  const dlq = await client.dlq.listMessages();
  assert.ok(Array.isArray(dlq.messages));

  // Flow control management: a paused key holds its messages; pin
  // overrides what messages ask for until unpinned.
  await client.flowControl.pause("js-fc");
  let fc = await client.flowControl.get("js-fc");
  assert.equal(fc.isPaused, true);
  const held = await client.publish({ url: `${dest}/fc`, body: "held", flowControl: { key: "js-fc", parallelism: 2 } });
  ids.add(held.messageId);
  fc = await client.flowControl.get("js-fc");
  assert.equal(fc.waitListSize, 1);
  assert.equal(fc.parallelismMax, 2);
  await client.flowControl.pin("js-fc", { parallelism: 5, rate: 10, period: 60 });
  fc = await client.flowControl.get("js-fc");
  assert.deepEqual([fc.isPinnedParallelism, fc.isPinnedRate, fc.parallelismMax, fc.rateMax, fc.ratePeriod], [true, true, 5, 10, 60]);
  await client.flowControl.unpin("js-fc", { parallelism: true, rate: false });
  fc = await client.flowControl.get("js-fc");
  assert.deepEqual([fc.isPinnedParallelism, fc.isPinnedRate], [false, true]);
  await client.flowControl.unpin("js-fc", { rate: true });
  await client.flowControl.resetRate("js-fc");
  assert.equal((await client.flowControl.get("js-fc")).rateCount, 0);
  await client.flowControl.resume("js-fc");
  const gp = await client.flowControl.getGlobalParallelism();
  assert.equal(typeof gp.parallelismCount, "number");

  // URL group default headers (PATCH /v2/topics/{name}; the SDK has no
  // method for it, so through its HTTP client).
  await client.urlGroups.addEndpoints({ name: "js-group", endpoints: [{ url: `${dest}/group` }] });
  await client.http.request({
    method: "PATCH",
    path: ["v2", "topics", "js-group"],
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ headers: { "Upstash-Forward-X-Group-Default": "yes" } }),
    parseResponseAsJson: false,
  });
  assert.equal((await client.urlGroups.get("js-group")).headers["Upstash-Forward-X-Group-Default"][0], "yes");
  const [grp] = await client.publish({ urlGroup: "js-group", body: "to group" });
  ids.add(grp.messageId);
  assert.equal(ids.size, 7);

  await waitFor(7, 20000);

  const receiver = new Receiver({
    currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
    nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
  });
  const devReceiver = new Receiver({ devMode: true });
  for (const d of received) {
    const signature = d.headers["upstash-signature"];
    assert.ok(ids.has(d.headers["upstash-message-id"]), `unknown message id ${d.headers["upstash-message-id"]}`);
    assert.equal(await receiver.verify({ signature, body: d.body, url: d.url }), true);
    assert.equal(await devReceiver.verify({ signature, body: d.body, url: d.url }), true);
    await assert.rejects(receiver.verify({ signature, body: d.body + " ", url: d.url }), /body hash/);
    await assert.rejects(receiver.verify({ signature, body: d.body, url: d.url + "x" }), /invalid subject/);
  }
  const byPath = Object.fromEntries(received.map((d) => [d.path, d]));
  assert.equal(byPath["/json"].headers["x-test"], "forwarded");
  assert.equal(byPath["/json"].headers["content-type"], "application/json");
  assert.equal(byPath["/json"].body, '{"hello":"world"}');
  assert.equal(byPath["/dev"].body, "plain text ünïcode");
  assert.equal(byPath["/group"].headers["x-group-default"], "yes");
  assert.equal(byPath["/fc"].body, "held");

  // The development-only endpoint: nothing left once all arrived.
  const stats = await fetch(`${env.QSTASH_URL}/qstashdev/stats?waitIdle=5s`, { headers: { authorization: `Bearer ${env.QSTASH_TOKEN}` } });
  assert.equal(stats.status, 200);
  assert.equal((await stats.json()).idle, true);

  console.log(JSON.stringify({ ok: true, deliveries: received.length }));
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
