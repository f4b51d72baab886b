// Drives the ops console of a running local stack in Debian's headless
// Chromium (playwright-core never downloads a browser: it is pointed at
// CHROMIUM). Run by cmd/dev's TestOpsConsoleBrowser, which starts the stack,
// makes a real run and a dead job, and passes:
//   OPS_URL       http://host:port/ops/
//   OPS_TOKEN     the console's token
//   SHOT_DIR      where the screenshots go (one per view, plus a phone one)
//   EXPECT        JSON: {deliveries, dlqId, bucket, allowed, family, queue}
// It prints one JSON line: {"ok":true,...} or {"ok":false,"error":...}.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.OPS_URL;
const token = process.env.OPS_TOKEN;
const shots = process.env.SHOT_DIR;
const expect = JSON.parse(process.env.EXPECT);
const out = { ok: false, shots: [], refused: {} };

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const profile = mkdtempSync(join(tmpdir(), "ops-chromium-"));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run"],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(20000);
  // Script errors, and failed answers of the console outside the checks
  // that expect refusals (the browser logs those as console errors too).
  const errors = [];
  let expectRefusals = true;
  const watch = (p) => {
    p.on("pageerror", (e) => errors.push(String(e)));
    p.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });
    p.on("response", (r) => {
      if (!expectRefusals && r.status() >= 400 && new URL(r.url()).pathname.startsWith("/ops/")) errors.push(r.status() + " " + r.url());
    });
  };
  watch(page);
  async function shot(name, p = page) {
    const file = join(shots, name + ".png");
    await p.screenshot({ path: file, fullPage: true });
    out.shots.push(file);
  }

  // Without the credential: the page sends to the sign-in form, the API
  // and every action answer 401, from this very browser.
  await page.goto(base);
  check(new URL(page.url()).pathname.endsWith("/ops/login"), "not sent to sign in: " + page.url());
  const anon = await page.evaluate(async ([id]) => {
    const r1 = await fetch("api/dlq/" + encodeURIComponent(id) + "/retry", { method: "POST" });
    const r2 = await fetch("api/stats");
    return [r1.status, r2.status];
  }, [expect.dlqId]);
  out.refused.anonymousRetry = anon[0];
  out.refused.anonymousRead = anon[1];
  check(anon[0] === 401 && anon[1] === 401, "anonymous calls not refused: " + anon);
  await page.fill("#token", "not-the-token-not-the-token");
  await page.click("button[type=submit]");
  await page.waitForSelector("#failed");
  await shot("login");

  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#t-deliveries");

  // Signed in, but a POST without the CSRF token (what a form on another
  // site would send with the cookie) is refused.
  const noCSRF = await page.evaluate(async ([id]) =>
    (await fetch("api/dlq/" + encodeURIComponent(id) + "/retry", { method: "POST" })).status, [expect.dlqId]);
  out.refused.withoutCSRF = noCSRF;
  check(noCSRF === 403, "POST without CSRF token answered " + noCSRF);

  expectRefusals = false;
  // Overview: the numbers of the run.
  const deliveries = (await page.textContent("#t-deliveries .n")).trim();
  out.deliveries = deliveries;
  check(deliveries === String(expect.deliveries), `overview shows ${deliveries} deliveries, want ${expect.deliveries}`);
  const dlqTile = (await page.textContent("#t-dlq .n")).trim();
  check(dlqTile === "1", "DLQ tile shows " + dlqTile);
  const bars = await page.locator("#c-deliveries svg rect").count();
  check(bars > 0, "the deliveries chart has no bars");
  await shot("overview");

  // Rate limits and cache: the buckets and families of the run.
  await page.click('nav a[data-view="limits"]');
  const card = page.locator(`[data-bucket="${expect.bucket}"]`);
  await card.waitFor();
  const allowed = (await card.locator("b.allowed").textContent()).trim();
  out.allowed = allowed;
  check(allowed === String(expect.allowed), `bucket ${expect.bucket} shows ${allowed} allowed, want ${expect.allowed}`);
  await shot("limits");

  await page.click('nav a[data-view="cache"]');
  const fam = page.locator(`[data-family="${expect.family}"]`);
  await fam.waitFor();
  out.hitRate = (await fam.locator("b.hitrate").textContent()).trim();
  check(out.hitRate !== "0.0%", "cache hit rate is 0");
  // The tip sent twice with one Idempotency-Key.
  const first = (await page.textContent("#t-idem-first .n")).trim();
  const replayed = (await page.textContent("#t-idem-replayed .n")).trim();
  out.idempotency = { first, replayed };
  check(first === "1" && replayed === "1", `idempotency first ${first}, replayed ${replayed}; want 1 and 1`);
  await shot("cache");

  await page.click('nav a[data-view="keys"]');
  await page.waitForSelector('[data-prefix="idem:qstash:"]');
  await shot("keys");

  await page.click('nav a[data-view="outbox"]');
  await page.waitForSelector("main[data-view=outbox]");
  await shot("outbox");

  // Jobs: the dead job is there; retry it from the page.
  await page.click('nav a[data-view="jobs"]');
  const row = page.locator(`tr[data-dlq="${expect.dlqId}"]`);
  await row.waitFor();
  // The dead job's attempts: created, active, error, failed.
  await row.locator("a[data-msg]").click();
  await page.waitForSelector("#attempts tr >> text=FAILED");
  await shot("jobs");
  // A queue, paused from the page.
  const q = page.locator(`tr[data-queue="${expect.queue}"]`);
  await q.locator("button[data-pause]").click();
  await page.locator(`tr[data-queue="${expect.queue}"] button[data-resume]`).waitFor();
  out.paused = expect.queue;
  await row.locator("button.retry").click();
  await row.waitFor({ state: "detached" });
  await page.waitForSelector("#toast.show");
  out.retried = expect.dlqId;
  await shot("jobs-after-retry");

  // A phone.
  const phone = await ctx.newPage();
  watch(phone);
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(base);
  await phone.waitForSelector("#t-deliveries");
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, "the phone view scrolls sideways by " + overflow + "px");
  await shot("overview-phone", phone);

  check(errors.length === 0, "page errors: " + errors.join("; "));
  out.ok = true;
} catch (e) {
  out.error = String(e && e.stack ? e.stack : e);
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
