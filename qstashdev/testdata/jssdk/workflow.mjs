// Runs a multi-step workflow with the official @upstash/workflow SDK's
// serve() against a running qstashdev server: two steps, a sleep, a step
// that fails twice (QStash retries the delivery) and a last step; then
// cancels a second run in the middle of its sleep, and lets a third fail
// for good so that serve()'s failureFunction runs. Prints {"ok":true,...}
// and exits 0 on success.
//
// Env: QSTASH_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY,
// QSTASH_NEXT_SIGNING_KEY.
import http from "node:http";
import assert from "node:assert/strict";
import { serve, Client as WorkflowClient } from "@upstash/workflow";
import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
const ran = {}; // step name -> how many times its function ran, per run
const deliveries = []; // { runId, retried } per request the workflow got
let flakyFailures = 0;
let finish;
const finished = new Promise((r) => (finish = r));
let fail;
const failed = new Promise((r) => (fail = r));

const qstashClient = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN });
const receiver = new Receiver({
  currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
  nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
});

function count(runId, step) {
  const k = `${runId}/${step}`;
  ran[k] = (ran[k] ?? 0) + 1;
}

const { handler } = serve(
  async (context) => {
    const id = context.workflowRunId;
    const input = context.requestPayload;
    const first = await context.run("first", () => {
      count(id, "first");
      return `${input.name}-1`;
    });
    await context.sleep("nap", input.sleepSeconds);
    const flaky = await context.run("flaky", () => {
      count(id, "flaky");
      if (input.failTimes > flakyFailures) {
        flakyFailures++;
        throw new Error(`transient failure ${flakyFailures}`);
      }
      return `${first}-2`;
    });
    await context.run("last", () => {
      count(id, "last");
      finish({ id, result: flaky });
      return "done";
    });
  },
  {
    qstashClient,
    receiver,
    retries: 3,
    failureFunction: async ({ context, failStatus, failResponse }) => {
      fail({ id: context.workflowRunId, name: context.requestPayload?.name, failStatus, failResponse });
    },
  },
);

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
  deliveries.push({ runId: headers.get("upstash-workflow-runid"), retried: Number(headers.get("upstash-retried") ?? -1) });
  const request = new Request(`http://${req.headers.host}${req.url}`, {
    method: req.method,
    headers,
    body: chunks.length ? Buffer.concat(chunks) : undefined,
  });
  const response = await handler(request);
  res.writeHead(response.status, Object.fromEntries(response.headers));
  res.end(Buffer.from(await response.arrayBuffer()));
});

async function api(method, path) {
  const r = await fetch(`${env.QSTASH_URL}${path}`, { method, headers: { authorization: `Bearer ${env.QSTASH_TOKEN}` } });
  return { status: r.status, body: await r.text() };
}

async function main() {
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}/workflow`;
  const client = new WorkflowClient({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN });

  const { workflowRunId } = await client.trigger({ url, body: { name: "job", sleepSeconds: 60, failTimes: 2 }, retries: 3 });
  const timeout = setTimeout(() => {
    console.error(JSON.stringify({ ran, deliveries }));
    throw new Error("workflow did not finish in 30 s");
  }, 30000);
  const done = await finished;
  clearTimeout(timeout);
  assert.equal(done.id, workflowRunId);
  assert.equal(done.result, "job-1-2");
  assert.equal(ran[`${workflowRunId}/first`], 1);
  assert.equal(ran[`${workflowRunId}/flaky`], 3, "the failing step ran again on each QStash retry");
  assert.equal(ran[`${workflowRunId}/last`], 1);
  const retried = deliveries.filter((d) => d.runId === workflowRunId).map((d) => d.retried);
  assert.ok(retried.includes(1) && retried.includes(2), `QStash retried the failing step: ${retried}`);

  // The SDK ends the run (DELETE /v2/workflows/runs/{id}) after the last step.
  let ended = false;
  for (let i = 0; i < 200 && !ended; i++) {
    ended = (await api("GET", `/v2/workflows/runs/${workflowRunId}`)).status === 404;
    if (!ended) await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(ended, "run history still there after the workflow finished");

  // A second run, cancelled while it sleeps: nothing after the sleep runs.
  const second = await client.trigger({ url, body: { name: "other", sleepSeconds: 3600, failTimes: 0 } });
  for (let i = 0; i < 500 && !ran[`${second.workflowRunId}/first`]; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(ran[`${second.workflowRunId}/first`], 1);
  const cancelled = await client.cancel({ ids: second.workflowRunId });
  assert.equal(cancelled.cancelled, 1);
  const idle = await api("GET", "/qstashdev/stats?waitIdle=10s");
  assert.equal(idle.status, 200, idle.body);
  assert.equal(ran[`${second.workflowRunId}/flaky`], undefined);
  assert.equal((await api("GET", `/v2/workflows/runs/${second.workflowRunId}`)).status, 404);

  // A third run whose step always fails: after the retries, QStash calls
  // the failure callback (the workflow URL), and serve() runs failureFunction.
  const third = await client.trigger({ url, body: { name: "doomed", sleepSeconds: 1, failTimes: 1000 } });
  const f = await Promise.race([failed, new Promise((_, rej) => setTimeout(() => rej(new Error("no failure callback in 30 s")), 30000))]);
  assert.equal(f.id, third.workflowRunId);
  assert.equal(f.name, "doomed");
  assert.equal(f.failStatus, 500);
  assert.match(f.failResponse, /transient failure/);
  assert.equal(ran[`${third.workflowRunId}/flaky`], 4, "the step ran once and on each of its 3 retries");
  // Until the failure callback's own delivery is answered.
  const idleAfter = await api("GET", "/qstashdev/stats?waitIdle=10s");
  assert.equal(idleAfter.status, 200, idleAfter.body);

  console.log(JSON.stringify({ ok: true, deliveries: deliveries.length }));
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
