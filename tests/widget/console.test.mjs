// The admin console end to end: headless Chromium (Debian's, driven by
// playwright-core) on the quick-start mesh's /admin page. One browser, one
// page, the scenarios in order, as an administrator would go through them.
//
// Environment (run.sh sets it): GATEWAY_URL, ADMIN_KEY (the demo program's),
// ARTIFACTS (where screenshots and axe reports go), CHROMIUM (default
// /usr/bin/chromium).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = require("axe-core").source;

const gateway = required("GATEWAY_URL").replace(/\/+$/, "");
const adminKey = required("ADMIN_KEY");
const artifacts = process.env.ARTIFACTS ?? join(import.meta.dirname, "artifacts");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const origin = new URL(gateway).origin;
const KEY_STORAGE = "loyalty-console-key";

/** A customer of this run only, so the numbers the test reads are its own. */
const customer = `console-${randomUUID().slice(0, 8)}`;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run tests/widget/run.sh)`);
  return value;
}

let context;
let page;
let profile;
/** Every request the page made, to check that it asked nothing of anyone but the gateway. */
const requests = [];
/** What Chromium reported as refused by the page's Content-Security-Policy. */
const cspViolations = [];

/** A call the shop's back office would make, with the admin key. */
async function admin(method, path, body) {
  const answer = await fetch(`${gateway}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${adminKey}`,
      "Content-Type": "application/json",
      "Idempotency-Key": randomUUID(),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await answer.json();
  assert.ok(answer.ok, `${method} ${path}: ${answer.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * The demo program's configuration as this file found it. The program scenarios change it (the earn
 * rate, a tier, a referral bonus); `after` puts it back, for the widget's scenarios that count on it.
 */
let found;

/** Puts back the settings, the ladder and the referral settings as they were found. */
async function restoreProgram() {
  if (!found) return;
  const { version, ...settings } = found.settings;
  const now = await admin("GET", "/v1/settings");
  if (JSON.stringify({ ...now, version }) !== JSON.stringify(found.settings)) {
    await admin("PUT", "/v1/settings", { ...settings, expected_version: now.version });
  }
  const { version: _ladder, ...ladder } = found.ladder;
  await admin("PUT", "/v1/tiers/ladder", ladder);
  const { version: _referrals, ...referrals } = found.referrals;
  await admin("PUT", "/v1/referrals/settings", referrals);
}

before(async () => {
  const [settings, ladder, referrals] = await Promise.all([
    admin("GET", "/v1/settings"),
    admin("GET", "/v1/tiers/ladder"),
    admin("GET", "/v1/referrals/settings"),
  ]);
  found = { settings, ladder, referrals };
  mkdirSync(artifacts, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), "loyalty-console-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 1000 },
    locale: "en-US",
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (error) => {
    throw new Error(`the page threw: ${error.message}`);
  });
  page.on("request", (request) => requests.push(request.url()));
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await restoreProgram();
});

async function shot(name) {
  await page.screenshot({ path: join(artifacts, `console-${name}.png`), fullPage: true });
}

/** axe-core on the whole page: no serious or critical violation. */
async function axe(name) {
  // Through the DevTools protocol: the page's CSP (script-src 'self') refuses an injected <script>.
  if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  writeFileSync(join(artifacts, `axe-console-${name}.json`), JSON.stringify(results.violations, null, 2));
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const summary = serious.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(summary, [], `serious accessibility violations on the console's ${name} view`);
}

/** A number as the console shows it, without grouping separators (1,234 or 1.234). */
async function shownNumber(locator) {
  const text = await locator.innerText();
  const digits = text.replace(/[^\d-−]/g, "").replace("−", "-");
  assert.match(digits, /^-?\d+$/, `not a number: ${text}`);
  return Number(digits);
}

/** Until `check` passes, running `retry` (a reload of what is shown) between tries; at most 20 s. */
async function eventually(check, retry, what) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${what}: ${error.message}`);
      await page.waitForTimeout(500);
      await retry();
    }
  }
}

const status = () => page.getByTestId("status");
const storedKey = () => page.evaluate((name) => sessionStorage.getItem(name), KEY_STORAGE);

/** Answers the page's calls matching `pattern` as a gateway without that service does: 503 `BACKEND_NOT_CONFIGURED`. */
async function notConfigured(pattern, detail) {
  await page.route(pattern, (route) =>
    route.fulfill({
      status: 503,
      contentType: "application/problem+json",
      body: JSON.stringify({
        type: "urn:loyalty:problem:backend_not_configured",
        title: "Service Unavailable",
        status: 503,
        code: "BACKEND_NOT_CONFIGURED",
        detail,
      }),
    }),
  );
}

async function signInWith(key) {
  await page.locator("#api-key").fill(key);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

test("sign-in refuses an unknown key and a non-admin key, and the one-time link signs in", async () => {
  await page.goto(`${gateway}/admin`);
  await page.getByTestId("signin").waitFor();
  assert.equal(await page.locator("main h1").innerText(), "Sign in");
  assert.equal(await page.getAttribute("html", "lang"), "en");
  assert.equal(await page.title(), "Sign in – Loyalty console");
  assert.equal(await page.getByRole("navigation").count(), 0, "no navigation before sign-in");
  // The keyboard: the first Tab lands on the skip link, with a visible focus ring.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.className), "skip");
  assert.equal(await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle), "solid");
  await shot("01-sign-in");
  await axe("sign-in");

  // Nothing typed: the field says so, and nothing is sent.
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  assert.equal(await page.getByTestId("api-key-error").innerText(), "Enter an API key.");
  assert.equal(await page.locator("#api-key").getAttribute("aria-invalid"), "true");

  // A key the gateway does not know: its real 401.
  await signInWith("lk_live_not_a_key_the_gateway_knows_0000");
  await status().filter({ hasText: "This key is not valid (unknown, revoked or malformed)." }).waitFor();
  assert.equal(await storedKey(), null, "a refused key is not kept");
  assert.equal(await page.locator("#api-key").getAttribute("aria-invalid"), "true");

  // A storefront or server key: the gateway's 403 for a key without the admin scope (mocked: the test cannot make such a key).
  await page.route(
    "**/v1/settings",
    (route) =>
      route.fulfill({
        status: 403,
        contentType: "application/problem+json",
        body: JSON.stringify({
          type: "urn:loyalty:problem:insufficient_scope",
          title: "Forbidden",
          status: 403,
          code: "INSUFFICIENT_SCOPE",
          detail: "this route needs a key with the admin scope; this key has server",
        }),
      }),
    { times: 1 },
  );
  await signInWith("lk_live_a_server_key_0000");
  await status().filter({ hasText: "This is a storefront or server key. The console needs a key with the admin scope." }).waitFor();
  assert.equal(await storedKey(), null, "a non-admin key is not kept");
  assert.equal(await page.getByTestId("signin").count(), 1, "still the sign-in form");
  await shot("02-not-admin");
  await page.unrouteAll();

  // The quick start's one-time link: signed in, and the key leaves the address bar.
  await page.goto("about:blank");
  await page.goto(`${gateway}/admin#key=${encodeURIComponent(adminKey)}`);
  await page.getByTestId("nav-dashboard").waitFor();
  assert.ok(!page.url().includes("#"), `the fragment is gone: ${page.url()}`);
  assert.ok(!page.url().includes(adminKey), "the key is not in the address bar");
  assert.equal(await storedKey(), adminKey, "the key is kept in this tab's sessionStorage");
  assert.equal(await page.evaluate((name) => localStorage.getItem(name), KEY_STORAGE), null, "never in localStorage");
  assert.equal(await page.getByTestId("nav-dashboard").getAttribute("aria-current"), "page");
});

test("the dashboard shows the KPIs, charts with their tables, and the KPIs move after orders", async () => {
  const members = page.getByTestId("kpi-members");
  await members.waitFor();
  assert.equal(await page.locator("main h1").innerText(), "Dashboard");
  assert.equal(await page.title(), "Dashboard – Loyalty console");
  for (const kpi of ["active-members", "repeat-purchase-rate", "points-issued", "points-redeemed", "points-expired", "points-outstanding", "liability", "redemption-rate", "churn-rate", "nps"]) {
    assert.equal(await page.getByTestId(`kpi-${kpi}`).count(), 1, `the ${kpi} card`);
  }
  assert.match(await page.getByTestId("kpi-liability").innerText(), /€/, "the liability is money in the program's currency");
  // Each chart: a figure with a caption, a canvas, and a table with the same numbers.
  for (const chart of ["chart-points", "chart-members"]) {
    const figure = page.getByTestId(chart);
    assert.ok((await figure.locator("figcaption").innerText()).length > 0, `${chart} has a caption`);
    await figure.locator("canvas").first().waitFor();
    assert.equal(await figure.locator("tbody tr").count(), 30, `${chart}: one row per day of the last 30`);
  }
  assert.match(await page.getByTestId("chart-points").locator("figcaption").innerText(), /Points issued, redeemed and expired, per day/);
  await page.selectOption("#period", "7");
  await eventually(
    async () => assert.equal(await page.getByTestId("chart-members").locator("tbody tr").count(), 7),
    async () => {},
    "seven days",
  );
  const before = await shownNumber(members);
  const issuedBefore = await shownNumber(page.getByTestId("kpi-points-issued"));

  // A new customer's first order: one more member, once insights has followed the ledger.
  await admin("POST", "/v1/orders", { customer_id: customer, order_id: `order-${randomUUID()}`, amount_minor: 5000, currency: "EUR" });
  await eventually(
    async () => {
      assert.ok((await shownNumber(members)) > before, "one more member");
      assert.ok((await shownNumber(page.getByTestId("kpi-points-issued"))) > issuedBefore, "more points issued");
    },
    async () => {
      await page.getByRole("button", { name: "Refresh" }).click();
      await page.locator('main .view[aria-busy="false"]').first().waitFor();
    },
    "the KPIs after an order",
  );
  // A reload keeps the session (sessionStorage) and the figures.
  await page.reload();
  await members.waitFor();
  assert.equal(await page.getByTestId("signin").count(), 0, "still signed in after a reload");
  const segments = page.getByTestId("segments");
  await segments.waitFor();
  assert.match(await segments.innerText(), /New/);
  for (const details of await page.locator("figure details").all()) await details.locator("summary").click();
  await shot("03-dashboard");
  await axe("dashboard");
});

test("without insights the dashboard says so and shows what the other services report", async () => {
  await notConfigured("**/v1/insights/**", "the gateway has no address for the insights service");
  const { rewards } = await admin("GET", "/v1/rewards");
  await page.getByRole("button", { name: "Refresh" }).click();
  const notice = page.getByTestId("insights-unavailable");
  await notice.waitFor();
  assert.match(await notice.innerText(), /no insights service configured/);
  const summary = page.getByTestId("program-summary");
  await summary.waitFor();
  assert.equal(await page.getByTestId("currency").innerText(), "EUR");
  assert.equal(await shownNumber(page.getByTestId("rewards-count")), rewards.length);
  await shot("03b-dashboard-without-insights");
  await page.unrouteAll();
});

test("a customer is looked up, adjusted with a reason, and a missing reason is caught before sending", async () => {
  await page.getByTestId("nav-customers").click();
  await page.locator("#customer-id").waitFor();
  assert.equal(await page.getByTestId("nav-customers").getAttribute("aria-current"), "page");
  assert.equal(await page.locator("main h1").innerText(), "Customers");
  await page.locator("#customer-id").fill(customer);
  await page.locator("#customer-id").press("Enter");
  await page.waitForURL((url) => url.hash === `#/customers/${customer}`);
  const available = page.getByTestId("balance-available");
  await available.waitFor();
  const page0 = await admin("GET", `/v1/customers/${encodeURIComponent(customer)}/loyalty`);
  assert.equal(await shownNumber(available), page0.points.available, "the balance the API reports");
  assert.ok(page0.points.available > 0, "the order earned points");
  await page.locator('[data-testid="ledger-row"][data-kind="earn"]').first().waitFor();

  // No reason: the field error next to the reason field, and no request.
  const adjustments = [];
  const watch = (request) => {
    if (request.url().includes("/adjustments")) adjustments.push(request.url());
  };
  page.on("request", watch);
  await page.locator("#adjust-points").fill("25");
  await page.getByRole("button", { name: "Adjust points" }).click();
  const reasonError = page.getByTestId("adjust-reason-error");
  await reasonError.waitFor();
  assert.equal(await reasonError.innerText(), "Enter a reason.");
  assert.equal(await page.locator("#adjust-reason").getAttribute("aria-invalid"), "true");
  assert.match(await page.locator("#adjust-reason").getAttribute("aria-describedby"), /\badjust-reason-error\b/);
  assert.equal(await page.evaluate(() => document.activeElement?.id), "adjust-reason", "focus goes to the field to fix");
  await page.locator("#adjust-points").fill("0");
  await page.locator("#adjust-reason").fill("goodwill from the console");
  await page.getByRole("button", { name: "Adjust points" }).click();
  assert.equal(await page.getByTestId("adjust-points-error").innerText(), "Enter a number other than 0.");
  assert.equal(await reasonError.isVisible(), false, "the reason is fine now");
  await page.waitForTimeout(300);
  assert.deepEqual(adjustments, [], "nothing was sent for an invalid form");
  page.off("request", watch);

  // +25 with a reason: the ledger shows it and the balance grew by 25.
  const before = await shownNumber(available);
  await page.locator("#adjust-points").fill("25");
  await page.getByRole("button", { name: "Adjust points" }).click();
  await status().filter({ hasText: `+25 points booked for ${customer}.` }).waitFor();
  const adjusted = page.locator('[data-testid="ledger-row"][data-kind="adjust"]').first();
  await adjusted.waitFor();
  assert.equal(await adjusted.getByTestId("ledger-reason").innerText(), "goodwill from the console");
  assert.match(await adjusted.innerText(), /Adjustment/);
  assert.match(await adjusted.innerText(), /\+25/);
  assert.equal(await page.locator('[data-testid="ledger-row"]').first().getAttribute("data-kind"), "adjust", "newest first");
  await eventually(async () => assert.equal(await shownNumber(available), before + 25), async () => {}, "the balance after the adjustment");
  assert.equal(await page.locator("#adjust-reason").inputValue(), "", "the form is cleared");
  await shot("04-customer");
  await axe("customers");
});

test("an unused voucher is cancelled from the customer's page and its points come back", async () => {
  const { rewards } = await admin("GET", "/v1/rewards");
  const reward = rewards.filter((r) => !r.archived && !r.minimum_tier_id && !r.eligible_tier_ids?.length).sort((a, b) => a.point_cost - b.point_cost)[0];
  assert.ok(reward, "the demo catalog has a reward for everyone");
  const path = `/v1/customers/${encodeURIComponent(customer)}`;
  await admin("POST", `${path}/adjustments`, { points: reward.point_cost, reason: "console test: enough for a voucher" });
  const voucher = await admin("POST", `${path}/redemptions`, { reward_id: reward.reward_id });
  assert.equal(voucher.status, "active");
  await page.getByRole("button", { name: "Look up" }).click();
  const row = page.locator(`[data-testid="voucher-row"][data-redemption="${voucher.redemption_id}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute("data-status"), "active");
  const before = await shownNumber(page.getByTestId("balance-available"));
  page.once("dialog", (dialog) => void dialog.accept());
  await row.getByRole("button", { name: `Cancel voucher ${voucher.voucher_code}` }).click();
  await status().filter({ hasText: `Voucher ${voucher.voucher_code} cancelled` }).waitFor();
  await page.locator(`[data-testid="voucher-row"][data-redemption="${voucher.redemption_id}"][data-status="cancelled"]`).waitFor();
  assert.equal(await row.getByRole("button").count(), 0, "no Cancel on a cancelled voucher");
  await eventually(
    async () => assert.equal(await shownNumber(page.getByTestId("balance-available")), before + reward.point_cost),
    () => page.getByRole("button", { name: "Look up" }).click(),
    "the points back",
  );
});

test("the audit log lists a settings change with its actor, and filters by kind and actor", async () => {
  const settings = await admin("GET", "/v1/settings");
  const { version, ...body } = settings;
  await admin("PUT", "/v1/settings", { ...body, expected_version: version });

  await page.getByTestId("nav-audit").click();
  await page.waitForURL((url) => url.hash === "#/audit");
  // The hash changes before the page is drawn: wait for the heading, not just the URL.
  await page.locator("main h1", { hasText: "Audit log" }).waitFor();
  assert.equal(await page.locator("main h1").innerText(), "Audit log");
  const rows = page.getByTestId("audit-row");
  await rows.first().waitFor();
  const newest = rows.first();
  assert.equal(await newest.getAttribute("data-entity"), "settings", "the change just made is the newest entry");
  const actor = await newest.getAttribute("data-actor");
  assert.match(actor, /^api-key:\S+$/);
  assert.match(await newest.innerText(), /Program settings/);
  await newest.locator("summary").click();
  assert.match(await newest.locator(".changes").innerText(), /version: \d+ → \d+/);
  const kinds = new Set(await rows.evaluateAll((all) => all.map((row) => row.dataset.entity)));
  assert.ok(kinds.size > 1, `the unfiltered log holds other kinds too (the demo's campaigns): ${[...kinds]}`);
  await shot("05-audit");
  await axe("audit");

  await page.selectOption("#audit-entity", "settings");
  await page.getByRole("button", { name: "Apply filters" }).click();
  await page.waitForURL((url) => url.hash === "#/audit?entity=settings");
  await eventually(
    async () => {
      const entities = await page.getByTestId("audit-row").evaluateAll((all) => all.map((row) => row.dataset.entity));
      assert.ok(entities.length > 0, "some settings entries");
      assert.deepEqual([...new Set(entities)], ["settings"]);
    },
    async () => {},
    "only settings entries",
  );
  assert.equal(await page.locator("#audit-entity").inputValue(), "settings", "the filter stays shown");

  await page.locator("#audit-actor").fill(actor);
  await page.getByRole("button", { name: "Apply filters" }).click();
  await eventually(
    async () => {
      const actors = await page.getByTestId("audit-row").evaluateAll((all) => all.map((row) => row.dataset.actor));
      assert.ok(actors.length > 0, "the test's own change");
      assert.deepEqual([...new Set(actors)], [actor]);
    },
    async () => {},
    "only this key's entries",
  );
  await shot("05b-audit-filtered");
});

test("the console speaks German, Chinese (simplified and traditional) and Turkish", async () => {
  await page.getByTestId("nav-dashboard").click();
  await page.getByTestId("kpi-members").waitFor();
  const english = await page.locator("main h1").innerText();
  const expectations = [
    ["de", "Übersicht", "Mitglieder"],
    ["zh-Hans", "概览", "会员数"],
    ["zh-Hant", "總覽", "會員數"],
    ["tr", "Genel bakış", "Üyeler"],
  ];
  for (const [lang, heading, members] of expectations) {
    await page.selectOption("#language", lang);
    await page.waitForFunction((l) => document.documentElement.lang === l, lang);
    await page.getByTestId("kpi-members").waitFor();
    const shown = await page.locator("main h1").innerText();
    assert.notEqual(shown, english, `${lang}: the heading is translated`);
    assert.equal(shown, heading);
    assert.match(await page.locator(".kpis").innerText(), new RegExp(members), `${lang}: the KPI labels`);
    assert.ok((await page.title()).startsWith(heading), `${lang}: the title ${await page.title()}`);
    await page.getByTestId("chart-points").locator("canvas").first().waitFor();
    await shot(`06-lang-${lang}`);
    await axe(`dashboard-${lang}`);
  }
  await page.selectOption("#language", "en");
  await page.waitForFunction(() => document.documentElement.lang === "en");
  assert.equal(await page.locator("main h1").innerText(), english);
});

/** Records the page's writes of one kind (`PUT /v1/settings`): each body and Idempotency-Key, until `stop`. */
function watchWrites(method, path) {
  const seen = [];
  const watch = (request) => {
    if (request.method() === method && new URL(request.url()).pathname === path) {
      seen.push({ body: request.postDataJSON(), key: request.headers()["idempotency-key"] });
    }
  };
  page.on("request", watch);
  return { seen, stop: () => page.off("request", watch) };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

test("the earning rules: bad values are refused by their fields, and a new earn rate is saved", async () => {
  await page.getByTestId("nav-program").click();
  await page.waitForURL((url) => url.hash === "#/program");
  const form = page.getByTestId("earning-form");
  await form.waitFor();
  assert.equal(await page.locator("main h1").innerText(), "Program");
  assert.equal(await page.title(), "Earning rules – Program – Loyalty console");
  assert.equal(await page.getByTestId("nav-program").getAttribute("aria-current"), "page");
  assert.equal(await page.getByTestId("program-earning").getAttribute("aria-current"), "page");
  assert.equal(await page.getByRole("navigation", { name: "Program sections" }).count(), 1);
  const before = await admin("GET", "/v1/settings");
  assert.equal(await page.locator("#earn-points").inputValue(), String(before.earn_rate.points));
  assert.equal(await page.locator("#currency").inputValue(), before.currency);
  assert.equal(await page.getByTestId("rule").count(), before.activity_rules.length, "a row per way to earn");
  assert.equal(await page.getByLabel("Customers can pay part of an order with points").isChecked(), before.checkout !== undefined);
  await shot("07-program-earning");
  await axe("program-earning");

  const puts = watchWrites("PUT", "/v1/settings");
  const save = page.getByRole("button", { name: "Save the earning rules" });
  const points = page.locator("#earn-points");
  // A negative and a fractional earn rate: the browser lets both through; the console checks as the API does.
  for (const [value, message] of [
    ["-1", "Enter a number from 0 to 1,000,000."],
    ["1.5", "Enter a whole number."],
  ]) {
    await points.fill(value);
    await save.click();
    const error = page.getByTestId("earn-points-error");
    await error.waitFor();
    assert.equal(await error.innerText(), message);
    assert.equal(await points.getAttribute("aria-invalid"), "true");
    assert.match(await points.getAttribute("aria-describedby"), /\bearn-points-error\b/);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "earn-points", "focus goes to the field to fix");
  }
  await page.waitForTimeout(300);
  assert.deepEqual(puts.seen, [], "nothing was sent for an invalid form");

  // A value only the API refuses (points must not expire before the return window ends): its field error lands by the field.
  await points.fill("2");
  await page.locator("#pending-days").fill("30");
  await page.selectOption("#expiry-kind", "days_after_earn");
  await page.locator("#expiry-count").fill("20");
  await save.click();
  const countError = page.getByTestId("expiry-count-error");
  await countError.waitFor();
  assert.equal(await countError.innerText(), "points must not expire before the pending period ends");
  assert.equal(await page.locator("#expiry-count").getAttribute("aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "expiry-count");
  assert.equal(await page.getByTestId("earn-points-error").isVisible(), false, "the earn rate is fine now");
  await status().filter({ hasText: "points must not expire before the pending period ends" }).waitFor();
  assert.equal(puts.seen.length, 1, "sent once, and refused");
  assert.equal(puts.seen[0].body.expected_version, before.version, "with the version the form was loaded at");
  assert.equal((await admin("GET", "/v1/settings")).version, before.version, "nothing was saved");
  await shot("07-program-earning-refused");

  // Put right: saved, and the API has the new earn rate and nothing else changed.
  await page.locator("#pending-days").fill(String(before.pending_days));
  await page.locator("#expiry-count").fill(String(before.expiry.count));
  await save.click();
  await status().filter({ hasText: `Earning rules saved (version ${before.version + 1}).` }).waitFor();
  puts.stop();
  const after = await admin("GET", "/v1/settings");
  assert.deepEqual(after.earn_rate, { points: 2, per_amount_minor: before.earn_rate.per_amount_minor });
  assert.equal(after.version, before.version + 1);
  const strip = ({ version, earn_rate, ...rest }) => rest;
  assert.deepEqual(strip(after), strip(before), "the rest of the settings as they were");
  assert.equal(puts.seen.length, 2);
  assert.match(puts.seen[0].key, UUID);
  assert.match(puts.seen[1].key, UUID);
  assert.notEqual(puts.seen[1].key, puts.seen[0].key, "a new action, a new Idempotency-Key");
  assert.equal(await points.inputValue(), "2", "the form shows what was saved");
  assert.match(await page.getByTestId("settings-version").innerText(), new RegExp(`version ${after.version}\\.`));
});

test("a change made meanwhile is not overwritten: the console warns, and Reload shows it", async () => {
  await page.reload();
  await page.getByTestId("earning-form").waitFor();
  const loaded = await admin("GET", "/v1/settings");
  assert.match(await page.getByTestId("settings-version").innerText(), new RegExp(`version ${loaded.version}\\.`));
  // Someone changes the earn rate through the API while the form is open…
  const { version, ...body } = loaded;
  const theirs = await admin("PUT", "/v1/settings", { ...body, earn_rate: { ...body.earn_rate, points: 3 }, expected_version: version });
  assert.equal(theirs.version, version + 1);

  // …and the console's save, made from the older version, is refused instead of overwriting it.
  const puts = watchWrites("PUT", "/v1/settings");
  await page.locator("#earn-per-amount").fill("50");
  const save = page.getByRole("button", { name: "Save the earning rules" });
  await save.click();
  const conflict = page.getByTestId("conflict");
  await conflict.waitFor();
  assert.match(await conflict.innerText(), /Changed meanwhile\. Someone changed this since you opened it/);
  assert.equal(await conflict.getAttribute("role"), "alert");
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "conflict", "the warning takes the focus");
  assert.equal(await save.isDisabled(), true, "no second try from the stale form");
  await page.waitForTimeout(300);
  puts.stop();
  assert.equal(puts.seen.length, 1, "sent once, never again on its own");
  assert.equal(puts.seen[0].body.expected_version, loaded.version);
  const stored = await admin("GET", "/v1/settings");
  assert.equal(stored.version, theirs.version);
  assert.deepEqual(stored.earn_rate, { points: 3, per_amount_minor: loaded.earn_rate.per_amount_minor }, "the change made meanwhile is still there");
  await shot("07-program-conflict");
  await axe("program-conflict");

  // Reload: the stored settings and their version, ready for the change to be made again.
  await page.getByTestId("conflict-reload").click();
  await eventually(async () => assert.equal(await page.locator("#earn-points").inputValue(), "3"), async () => {}, "the reloaded form");
  assert.equal(await page.locator("#earn-per-amount").inputValue(), String(loaded.earn_rate.per_amount_minor));
  assert.match(await page.getByTestId("settings-version").innerText(), new RegExp(`version ${stored.version}\\.`));
  assert.equal(await page.getByTestId("conflict").count(), 0);
  assert.equal(await save.isDisabled(), false);
});

test("a tier is added to the ladder", async () => {
  await page.getByTestId("program-tiers").click();
  await page.waitForURL((url) => url.hash === "#/program/tiers");
  await page.getByTestId("ladder-form").waitFor();
  assert.equal(await page.title(), "Tier ladder – Program – Loyalty console");
  const before = await admin("GET", "/v1/tiers/ladder");
  const rows = page.getByTestId("tier");
  assert.equal(await rows.count(), before.tiers.length, "a fieldset per tier");
  assert.equal(await rows.first().getByLabel("Tier ID").inputValue(), before.tiers[0].tier_id);
  await axe("program-tiers");

  await page.getByTestId("add-tier").click();
  assert.equal(await rows.count(), before.tiers.length + 1);
  const added = rows.last();
  assert.equal(await added.locator("legend").innerText(), `Tier ${before.tiers.length + 1}`);
  assert.equal(await page.evaluate(() => document.activeElement?.id), await added.getByLabel("Tier ID").getAttribute("id"), "focus on the new tier");
  await added.getByLabel("Tier ID").fill("platinum");
  await added.getByLabel("Name", { exact: true }).fill("Platinum");
  // No threshold yet: caught by its field before anything is sent.
  const save = page.getByRole("button", { name: "Save the ladder" });
  await save.click();
  const threshold = added.getByLabel("Threshold", { exact: true });
  assert.equal(await threshold.getAttribute("aria-invalid"), "true");
  assert.equal(await page.getByTestId(`${await threshold.getAttribute("id")}-error`).innerText(), "Enter a number.");
  const top = Math.max(...before.tiers.map((tier) => tier.threshold));
  await threshold.fill(String(top + 4_000));
  await added.getByLabel("Earn multiplier (basis points)").fill("20000");
  await added.getByLabel("Perks").fill("2x points on orders\nfree express shipping");
  await save.click();
  await status().filter({ hasText: `Tier ladder saved (version ${before.version + 1}).` }).waitFor();
  const after = await admin("GET", "/v1/tiers/ladder");
  assert.deepEqual(
    after.tiers.map((tier) => tier.tier_id),
    [...before.tiers.map((tier) => tier.tier_id), "platinum"],
  );
  const platinum = after.tiers.at(-1);
  assert.deepEqual(
    { name: platinum.name, threshold: platinum.threshold, multiplier_bp: platinum.multiplier_bp, perks: platinum.perks, hidden: platinum.hidden },
    { name: "Platinum", threshold: top + 4_000, multiplier_bp: 20_000, perks: ["2x points on orders", "free express shipping"], hidden: false },
  );
  assert.deepEqual(after.tiers.slice(0, -1), before.tiers, "the other tiers as they were");
  assert.deepEqual([after.window, after.downgrade, after.qualification_basis], [before.window, before.downgrade, before.qualification_basis]);
  // The stored tier's ID is kept: members hold it.
  assert.equal(await rows.last().getByLabel("Tier ID").getAttribute("readonly"), "");
  await shot("07-program-tiers");
});

test("a ladder changed meanwhile is not overwritten: the console warns, and Reload shows it", async () => {
  await page.reload();
  await page.getByTestId("ladder-form").waitFor();
  const loaded = await admin("GET", "/v1/tiers/ladder");
  assert.match(await page.getByTestId("ladder-version").innerText(), new RegExp(`version ${loaded.version}\\.`));
  // Someone renames the top tier through the API while the form is open…
  const { version, ...body } = loaded;
  const top = loaded.tiers.length - 1;
  const renamed = `${loaded.tiers[top].name} Plus`;
  const theirs = await admin("PUT", "/v1/tiers/ladder", { ...body, tiers: body.tiers.map((tier, i) => (i === top ? { ...tier, name: renamed } : tier)) });
  assert.equal(theirs.version, version + 1);

  // …and the console's save, made from the older version, is refused instead of overwriting it.
  const puts = watchWrites("PUT", "/v1/tiers/ladder");
  const rows = page.getByTestId("tier");
  await rows.first().getByLabel("Perks").fill("a welcome gift");
  const save = page.getByRole("button", { name: "Save the ladder" });
  await save.click();
  const conflict = page.getByTestId("conflict");
  await conflict.waitFor();
  assert.match(await conflict.innerText(), /Changed meanwhile\. Someone changed this since you opened it/);
  assert.equal(await conflict.getAttribute("role"), "alert");
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "conflict", "the warning takes the focus");
  assert.equal(await save.isDisabled(), true, "no second try from the stale form");
  await page.waitForTimeout(300);
  puts.stop();
  assert.equal(puts.seen.length, 1, "sent once, never again on its own");
  assert.equal(puts.seen[0].body.expected_version, loaded.version, "with the version the form was loaded at");
  assert.deepEqual(puts.seen[0].body.tiers[0].perks, ["a welcome gift"]);
  const stored = await admin("GET", "/v1/tiers/ladder");
  assert.equal(stored.version, theirs.version, "nothing saved over it");
  assert.equal(stored.tiers[top].name, renamed, "the change made meanwhile is still there");
  assert.deepEqual(stored.tiers, theirs.tiers, "and the console's change is not");
  await shot("07-program-tiers-conflict");
  await axe("program-tiers-conflict");

  // Reload: the stored ladder and its version, ready for the change to be made again.
  await page.getByTestId("conflict-reload").click();
  await eventually(
    async () => assert.equal(await rows.nth(top).getByLabel("Name", { exact: true }).inputValue(), renamed),
    async () => {},
    "the reloaded ladder",
  );
  assert.equal(await rows.first().getByLabel("Perks").inputValue(), loaded.tiers[0].perks.join("\n"));
  assert.match(await page.getByTestId("ladder-version").innerText(), new RegExp(`version ${stored.version}\\.`));
  assert.equal(await page.getByTestId("conflict").count(), 0);
  assert.equal(await save.isDisabled(), false);
});

test("a reward is created with its stock, edited, and archived", async () => {
  await page.getByTestId("program-rewards").click();
  await page.waitForURL((url) => url.hash === "#/program/rewards");
  await page.getByTestId("reward-form").waitFor();
  const name = `Console mug ${customer.slice(-4)}`;
  await page.locator("#reward-name").fill(name);
  await page.selectOption("#reward-kind", "free_product");
  assert.equal(await page.locator("#reward-amount").isVisible(), false, "no amount off for a free product");
  await page.locator("#reward-sku").fill("mug-01");
  await page.locator("#reward-cost").fill("0");
  await page.locator("#reward-stock").fill("25");
  const add = page.getByRole("button", { name: "Add the reward" });
  await add.click();
  assert.equal(await page.getByTestId("reward-cost-error").innerText(), "Enter a number from 1 to 1,000,000,000.");
  await page.locator("#reward-cost").fill("400");
  await add.click();
  await status().filter({ hasText: `Reward ${name} added.` }).waitFor();
  const row = page.getByTestId("reward-row").filter({ hasText: name });
  await row.waitFor();
  assert.equal(await row.getAttribute("data-status"), "active");
  assert.equal(await row.getByTestId("reward-stock").innerText(), "25 of 25 left");
  assert.match(await row.innerText(), /Free product mug-01/);
  const id = await row.getAttribute("data-reward");
  const made = (await admin("GET", "/v1/rewards")).rewards.find((reward) => reward.reward_id === id);
  assert.ok(made, "the API offers it");
  assert.deepEqual(
    { name: made.name, kind: made.kind, sku: made.sku, point_cost: made.point_cost, total_stock: made.total_stock, remaining_stock: made.remaining_stock },
    { name, kind: "free_product", sku: "mug-01", point_cost: 400, total_stock: 25, remaining_stock: 25 },
  );
  await shot("07-program-rewards");
  await axe("program-rewards");

  // Edited: the form holds what is stored; the PUT replaces the reward whole, so the rest must come back as it was.
  await row.getByRole("button", { name: `Edit reward ${name}` }).click();
  assert.equal(await page.locator("#reward-form-heading").innerText(), `Edit reward ${name}`);
  assert.equal(await page.locator("#reward-cost").inputValue(), "400");
  await page.locator("#reward-cost").fill("450");
  await page.getByRole("button", { name: "Save the reward" }).click();
  await status().filter({ hasText: `Reward ${name} saved.` }).waitFor();
  const edited = (await admin("GET", "/v1/rewards")).rewards.find((reward) => reward.reward_id === id);
  assert.equal(edited.version, made.version + 1, "the change got the next version (sent with the version read)");
  assert.deepEqual({ ...edited, point_cost: 400, version: made.version }, made, "only the cost changed");
  assert.equal(edited.point_cost, 450);

  page.once("dialog", (dialog) => void dialog.accept());
  await row.getByRole("button", { name: `Archive reward ${name}` }).click();
  await status().filter({ hasText: `Reward ${name} archived.` }).waitFor();
  await page.locator(`[data-testid="reward-row"][data-reward="${id}"][data-status="archived"]`).waitFor();
  assert.equal(await row.getByTestId("reward-status").innerText(), "Archived");
  assert.equal(await row.getByRole("button").count(), 0, "nothing more to do with an archived reward");
  assert.ok(!(await admin("GET", "/v1/rewards")).rewards.some((reward) => reward.reward_id === id), "no longer offered");
  const archived = (await admin("GET", "/v1/rewards?include_archived=true")).rewards.find((reward) => reward.reward_id === id);
  assert.equal(archived.archived, true);
});

test("a campaign is created, shown active now, and ended", async () => {
  await page.getByTestId("program-campaigns").click();
  await page.waitForURL((url) => url.hash === "#/program/campaigns");
  await page.getByTestId("campaign-form").waitFor();
  const name = `Console weekend ${customer.slice(-4)}`;
  await page.locator("#campaign-name").fill(name);
  await page.selectOption("#campaign-kind", "bonus");
  await page.locator("#campaign-bonus").fill("50");
  await page.locator("#campaign-applies").fill("order, review");
  await page.getByRole("button", { name: "Create the campaign" }).click();
  await status().filter({ hasText: `Campaign ${name} created.` }).waitFor();
  const row = page.getByTestId("campaign-row").filter({ hasText: name });
  await row.waitFor();
  assert.equal(await row.getAttribute("data-status"), "active");
  assert.equal(await row.getByTestId("campaign-status").innerText(), "Active now");
  assert.match(await row.innerText(), /\+50 points/);
  const id = await row.getAttribute("data-campaign");
  const listed = (await admin("GET", "/v1/campaigns")).campaigns.find((campaign) => campaign.campaign_id === id);
  assert.deepEqual([listed.kind, listed.bonus_points, listed.applies_to], ["bonus", 50, ["order", "review"]]);
  assert.ok(Date.parse(listed.starts_at) <= Date.now() && Date.now() < Date.parse(listed.ends_at), "running now");
  await shot("07-program-campaigns");
  await axe("program-campaigns");

  page.once("dialog", (dialog) => void dialog.accept());
  await row.getByRole("button", { name: `End campaign ${name} now` }).click();
  await status().filter({ hasText: `Campaign ${name} ended.` }).waitFor();
  await eventually(async () => assert.equal(await row.count(), 0, "gone from the running and upcoming ones"), async () => {}, "the list after the end");
  assert.ok(!(await admin("GET", "/v1/campaigns")).campaigns.some((campaign) => campaign.campaign_id === id), "the API lists it no more");
  const ended = (await admin("GET", "/v1/campaigns?include_ended=true")).campaigns.find((campaign) => campaign.campaign_id === id);
  assert.ok(Date.parse(ended.ends_at) <= Date.now(), `ended: ${ended.ends_at}`);
  await page.getByLabel("Show ended campaigns").check();
  const endedRow = page.locator(`[data-testid="campaign-row"][data-campaign="${id}"]`);
  await endedRow.waitFor();
  assert.equal(await endedRow.getAttribute("data-status"), "ended");
  assert.equal(await endedRow.getByTestId("campaign-status").innerText(), "Ended");
  assert.equal(await endedRow.getByRole("button").count(), 0);
});

test("a referral setting is changed, and a save the network lost is retried with the same Idempotency-Key", async () => {
  await page.getByTestId("program-referrals").click();
  await page.waitForURL((url) => url.hash === "#/program/referrals");
  await page.getByTestId("referral-form").waitFor();
  const before = await admin("GET", "/v1/referrals/settings");
  assert.equal(await page.locator("#referee-points").inputValue(), String(before.referee_points));
  assert.equal(await page.getByLabel("Referrals are on").isChecked(), before.enabled);
  await axe("program-referrals");
  const save = page.getByRole("button", { name: "Save the referral settings" });

  await page.locator("#attribution-days").fill("0");
  await save.click();
  assert.equal(await page.getByTestId("attribution-days-error").innerText(), "Enter a number from 1 to 3,660.");
  await page.locator("#attribution-days").fill(String(before.attribution_window_days));
  await page.locator("#referee-points").fill(String(before.referee_points + 50));

  // The first PUT never reaches the gateway: the console says so; the admin saves again, as the same action.
  const puts = watchWrites("PUT", "/v1/referrals/settings");
  let lost = 0;
  await page.route("**/v1/referrals/settings", (route) =>
    route.request().method() === "PUT" && lost++ === 0 ? route.abort("connectionreset") : route.fallback(),
  );
  await save.click();
  await status().filter({ hasText: "The gateway could not be reached." }).waitFor();
  await page.unrouteAll();
  await save.click();
  await status().filter({ hasText: "Referral settings saved." }).waitFor();
  puts.stop();
  assert.equal(puts.seen.length, 2);
  assert.match(puts.seen[0].key, UUID);
  assert.equal(puts.seen[1].key, puts.seen[0].key, "the retry of the same save carries the same key");
  assert.equal(puts.seen[0].body.expected_version, before.version, "with the version the form was loaded at");

  const after = await admin("GET", "/v1/referrals/settings");
  assert.equal(after.referee_points, before.referee_points + 50);
  assert.equal(after.version, before.version + 1, "saved once");
  const strip = ({ version, referee_points, ...rest }) => rest;
  assert.deepEqual(strip(after), strip(before), "the other settings as they were");
  await shot("07-program-referrals");
});

test("the dashboard shows the members by tier in the ladder's order, and says so in that card when tiers is not configured", async () => {
  await page.getByTestId("nav-dashboard").click();
  const card = page.getByTestId("tier-distribution");
  await card.waitFor();
  assert.equal(await card.locator("h2").innerText(), "Members by tier");
  const ladder = await admin("GET", "/v1/tiers/ladder");
  const ids = ladder.tiers.map((tier) => tier.tier_id);
  assert.ok(ids.includes("platinum"), "the tier added from the console");
  await eventually(
    async () => {
      const distribution = await admin("GET", "/v1/tiers/distribution");
      assert.ok(distribution.members > 0, "this run's customers are members");
      const counts = new Map(distribution.tiers.map((c) => [c.tier_id, c.members]));
      const rows = card.locator("tbody tr");
      const expected = [...ids, ...distribution.tiers.filter((c) => c.tier_id && !ids.includes(c.tier_id)).map((c) => c.tier_id)];
      if (counts.get("")) expected.push("");
      assert.deepEqual(await rows.evaluateAll((all) => all.map((row) => row.dataset.tier)), expected, "the ladder's order, zeros included");
      for (const tier of ladder.tiers) {
        const row = card.locator(`tbody tr[data-tier="${tier.tier_id}"]`);
        assert.equal(await row.locator("th").innerText(), tier.name, "the ladder's name");
        const members = counts.get(tier.tier_id) ?? 0;
        assert.equal(await shownNumber(row.locator("td.num")), members, `${tier.tier_id}'s members`);
        assert.match(await row.locator("td").last().innerText(), new RegExp(`${Math.round((100 * members) / distribution.members)}%`));
      }
    },
    async () => {
      await page.getByRole("button", { name: "Refresh" }).click();
      await page.locator('main .view[aria-busy="false"]').first().waitFor();
    },
    "the tier distribution",
  );
  await shot("07-dashboard-tiers");
  await axe("dashboard-tiers");

  // Without a tiers service: that card says so, and the rest of the dashboard stands.
  await notConfigured("**/v1/tiers/**", "this gateway is not connected to a tiers service (TIERS_ADDR is not set)");
  await page.getByRole("button", { name: "Refresh" }).click();
  await card.getByText("Unavailable: this gateway has no tiers service configured.").waitFor();
  assert.equal(await card.locator("table").count(), 0);
  assert.equal(await page.getByTestId("kpi-members").count(), 1, "the key figures are still there");
  assert.equal(await page.getByTestId("segments").count(), 1, "and the segments");
  assert.equal(await status().innerText(), "", "nothing else complains");
  await page.unrouteAll();
});

test("the program's headings speak German, Chinese (simplified and traditional) and Turkish", async () => {
  await page.getByTestId("nav-program").click();
  await page.getByTestId("earning-form").waitFor();
  const expectations = [
    ["de", "Programm", ["Sammelregeln", "Statusstufen", "Prämien", "Aktionen", "Empfehlungen"], "Punkte pro Einkauf"],
    ["zh-Hans", "会员计划", ["积分规则", "会员等级", "奖励", "营销活动", "推荐"], "积分比例"],
    ["zh-Hant", "會員計畫", ["點數規則", "會員等級", "獎勵", "行銷活動", "推薦"], "點數比例"],
    ["tr", "Program", ["Puan kazanma kuralları", "Seviyeler", "Ödüller", "Kampanyalar", "Tavsiyeler"], "Puan kazanma oranı"],
  ];
  const english = await page.locator("nav.subnav a").allInnerTexts();
  for (const [lang, heading, parts, legend] of expectations) {
    await page.selectOption("#language", lang);
    await page.waitForFunction((l) => document.documentElement.lang === l, lang);
    await page.getByTestId("earning-form").waitFor();
    assert.equal(await page.locator("main h1").innerText(), heading, `${lang}: the heading`);
    assert.equal(await page.getByTestId("nav-program").innerText(), heading, `${lang}: the navigation`);
    const shown = await page.locator("nav.subnav a").allInnerTexts();
    assert.deepEqual(shown, parts, `${lang}: the program's parts`);
    assert.ok(shown.every((part, i) => part !== english[i]), `${lang}: every part translated`);
    assert.equal(await page.locator("#part-heading").innerText(), parts[0]);
    assert.equal(await page.getByTestId("earning-form").locator("legend").first().innerText(), legend);
    assert.ok((await page.title()).startsWith(`${parts[0]} – ${heading}`), `${lang}: the title ${await page.title()}`);
    await shot(`07-program-${lang}`);
    await axe(`program-${lang}`);
  }
  await page.selectOption("#language", "en");
  await page.waitForFunction(() => document.documentElement.lang === "en");
  assert.deepEqual(await page.locator("nav.subnav a").allInnerTexts(), english);
});

/** A customer of this run who has reached a tier, for the tier history, the assignment and the referrals. */
const tiered = `console-tier-${randomUUID().slice(0, 8)}`;
const tieredPath = `/v1/customers/${encodeURIComponent(tiered)}`;

async function lookUp(id) {
  await page.getByTestId("nav-customers").click();
  await page.locator("#customer-id").fill(id);
  await page.locator("#customer-id").press("Enter");
  await page.waitForURL((url) => url.hash === `#/customers/${encodeURIComponent(id)}`);
  await page.getByTestId("balance-available").waitFor();
}

/** The history rows as the console shows them: [to, reason] each, newest first. */
const shownChanges = () =>
  page.getByTestId("tier-change").evaluateAll((rows) => rows.map((row) => [row.dataset.from, row.dataset.to, row.dataset.reason]));

test("the customer's tier history lists the API's changes with the ladder's names and localised reasons", async () => {
  await admin("POST", "/v1/orders", { customer_id: tiered, order_id: `order-${randomUUID()}`, amount_minor: 200_000, currency: "EUR" });
  const history = await eventually(
    async () => {
      const answer = await admin("GET", `${tieredPath}/tier/history?page_size=20`);
      assert.ok(answer.changes.length > 0, "the order reached a tier");
      return answer;
    },
    async () => {},
    "a tier change",
  );
  await lookUp(tiered);
  const card = page.getByTestId("tier-history");
  assert.equal(await card.locator("h3").innerText(), "Tier history");
  await card.getByTestId("tier-change").first().waitFor();
  assert.deepEqual(
    await shownChanges(),
    history.changes.map((c) => [c.from_tier_id, c.to_tier_id, c.reason]),
    "the rows of GET .../tier/history, newest first",
  );
  const ladder = await admin("GET", "/v1/tiers/ladder");
  const newest = history.changes[0];
  const cells = await card.getByTestId("tier-change").first().locator("td").allInnerTexts();
  const name = (id) => (id ? (ladder.tiers.find((tier) => tier.tier_id === id)?.name ?? id) : "no tier");
  assert.equal(cells[1], name(newest.from_tier_id), "the tier before, by the ladder's name");
  assert.equal(cells[2], name(newest.to_tier_id), "the tier after, by the ladder's name");
  assert.equal(cells[3], { threshold: "Reached the threshold", points_reversed: "Points taken back" }[newest.reason] ?? cells[3]);
  assert.equal(await card.getByTestId("tier-history-more").isVisible(), Boolean(history.next_page_token));
});

test("a tier is assigned from the customer's page, shows in the tier card and the history, and is ended", async () => {
  const ladder = await admin("GET", "/v1/tiers/ladder");
  const current = await admin("GET", `${tieredPath}/tier`);
  const target = ladder.tiers.find((tier) => tier.hidden) ?? ladder.tiers.find((tier) => tier.tier_id !== current.tier_id);
  assert.ok(target, "a tier to assign");
  const form = page.getByTestId("assign-form");
  await form.waitFor();
  assert.equal(await page.getByTestId("assign").locator("h3").innerText(), "Assign a tier");
  const options = await page.locator("#assign-tier option").evaluateAll((all) => all.map((o) => [o.value, o.textContent]));
  assert.deepEqual(
    options,
    ladder.tiers.map((tier) => [tier.tier_id, tier.hidden ? `${tier.name} (hidden)` : tier.name]),
    "every tier of the ladder, hidden ones marked",
  );

  // A refusal's field error lands by its field.
  await page.route("**/tier-assignment", (route) =>
    route.fulfill({
      status: 400,
      contentType: "application/problem+json",
      body: JSON.stringify({
        type: "urn:loyalty:problem:invalid_body",
        title: "Bad Request",
        status: 400,
        code: "INVALID_BODY",
        detail: "ends_at is not an RFC 3339 date-time",
        errors: [{ field: "ends_at", description: "must be an RFC 3339 date-time such as 2025-11-24T09:30:00Z" }],
      }),
    }),
  );
  await page.selectOption("#assign-tier", target.tier_id);
  await page.locator("#assign-ends").fill("2099-01-01T10:00");
  await page.getByRole("button", { name: "Assign the tier" }).click();
  const endsError = page.getByTestId("assign-ends-error");
  await endsError.waitFor();
  assert.match(await endsError.innerText(), /RFC 3339/);
  assert.equal(await page.locator("#assign-ends").getAttribute("aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "assign-ends");
  await page.unrouteAll();

  // Assigned for real, with one Idempotency-Key, until removed.
  const keys = [];
  const watch = (request) => {
    if (request.url().endsWith("/tier-assignment")) keys.push([request.method(), request.headers()["idempotency-key"], request.postData()]);
  };
  page.on("request", watch);
  await page.locator("#assign-ends").fill("");
  await page.getByRole("button", { name: "Assign the tier" }).click();
  await status().filter({ hasText: `${target.name} assigned to ${tiered}.` }).waitFor();
  assert.equal(await endsError.isVisible(), false);
  const tierName = page.getByTestId("tier-name");
  await eventually(
    async () => assert.equal(await tierName.innerText(), `${target.name} (assigned by hand)`),
    () => page.getByRole("button", { name: "Look up" }).click(),
    "the tier card after the assignment",
  );
  const manual = await eventually(
    async () => {
      const [from, to, reason] = (await shownChanges())[0];
      assert.deepEqual([to, reason], [target.tier_id, "manual"], "a manual change, newest first");
      return from;
    },
    () => page.getByRole("button", { name: "Look up" }).click(),
    "the history after the assignment",
  );
  assert.equal(manual, current.tier_id ?? "");
  const row = page.getByTestId("tier-change").first();
  assert.match(await row.getByTestId("tier-change-actor").innerText(), /^api-key:/);
  assert.match(await row.innerText(), /Assigned by hand/);
  const stored = await admin("GET", `${tieredPath}/tier`);
  assert.equal(stored.tier_id, target.tier_id);
  assert.equal(stored.assigned, true);
  await shot("08-customer-tier-assigned");
  await axe("customer-tiers");

  // Ended: the tier follows the points again, and the button is gone.
  page.once("dialog", (dialog) => void dialog.accept());
  await page.getByTestId("end-assignment").click();
  await status().filter({ hasText: `The tier assignment of ${tiered} ended.` }).waitFor();
  await eventually(
    async () => {
      assert.doesNotMatch(await tierName.innerText(), /assigned by hand/);
      assert.equal(await page.getByTestId("end-assignment").count(), 0);
    },
    () => page.getByRole("button", { name: "Look up" }).click(),
    "the tier card after the end",
  );
  assert.equal((await admin("GET", `${tieredPath}/tier`)).assigned, false);
  page.off("request", watch);
  assert.deepEqual(
    keys.map(([method, , body]) => [method, body && JSON.parse(body)]),
    [
      ["POST", { tier_id: target.tier_id }],
      ["DELETE", null],
    ],
  );
  assert.ok(keys.every(([, key]) => key) && keys[0][1] !== keys[1][1], "one Idempotency-Key per action");
  await shot("08-customer-tier-ended");
});

test("the friends a customer referred are listed, and the cards say so when their service is not configured", async () => {
  const card = page.getByTestId("referred");
  assert.equal(await card.locator("h3").innerText(), "Referred friends");
  await card.getByText("This customer has not referred anyone yet.").waitFor();
  let { code } = await admin("GET", `${tieredPath}/referral`);
  if (!code) ({ code } = await admin("POST", `${tieredPath}/referral`));
  assert.ok(code, "the customer has a referral code");
  const friend = `console-friend-${randomUUID().slice(0, 8)}`;
  await admin("POST", "/v1/referrals/signups", { code, customer_id: friend });
  const row = card.locator(`[data-testid="referred-row"][data-friend="${friend}"]`);
  await eventually(() => row.waitFor({ timeout: 1000 }), () => page.getByRole("button", { name: "Look up" }).click(), "the friend listed");
  assert.equal(await row.getAttribute("data-status"), "pending");
  const cells = await row.locator("td").allInnerTexts();
  assert.equal(cells[0], friend);
  assert.equal(cells[1], "Pending");
  assert.equal(await row.getByRole("link", { name: friend }).getAttribute("href"), `#/customers/${friend}`);
  await shot("08-customer-referrals");
  await axe("customer-referrals");

  // Without the services: a note in those cards only.
  await notConfigured(/\/v1\/customers\/[^/]+\/(tier\/history|referrals)(\?|$)/, "not connected");
  await page.getByRole("button", { name: "Look up" }).click();
  await card.getByText("Unavailable: this gateway has no referral service configured.").waitFor();
  await page.getByTestId("tier-history").getByText("Unavailable: this gateway has no tiers service configured.").waitFor();
  await page.getByTestId("balance-available").waitFor();
  assert.equal(await page.getByTestId("assign-form").count(), 1, "the assignment form stands");
  assert.equal(await status().innerText(), "", "nothing else complains");
  await shot("08-customer-not-configured");
  await page.unrouteAll();
});

test("the customer page's new cards speak German, Chinese (simplified and traditional) and Turkish", async () => {
  await page.getByRole("button", { name: "Look up" }).click();
  await page.getByTestId("tier-change").first().waitFor();
  const expectations = [
    ["de", "Statusverlauf", "Geworbene Freunde", "Status zuweisen"],
    ["zh-Hans", "等级变更记录", "推荐的好友", "指定等级"],
    ["zh-Hant", "等級變更紀錄", "推薦的好友", "指定等級"],
    ["tr", "Seviye geçmişi", "Tavsiye edilen arkadaşlar", "Seviye ata"],
  ];
  for (const [lang, historyTitle, referredTitle, assignTitle] of expectations) {
    await page.selectOption("#language", lang);
    await page.waitForFunction((l) => document.documentElement.lang === l, lang);
    await page.getByTestId("tier-change").first().waitFor();
    assert.equal(await page.locator("#tier-history-heading").innerText(), historyTitle, `${lang}: the history`);
    assert.equal(await page.locator("#referred-heading").innerText(), referredTitle, `${lang}: the referrals`);
    assert.equal(await page.locator("#assign-heading").innerText(), assignTitle, `${lang}: the assignment`);
    const reasons = await page.getByTestId("tier-change").locator("td:nth-child(4)").allInnerTexts();
    assert.ok(!reasons.some((reason) => /Assigned by hand|Reached the threshold/.test(reason)), `${lang}: the reasons translated`);
    await shot(`08-customer-${lang}`);
    await axe(`customer-${lang}`);
  }
  await page.selectOption("#language", "en");
  await page.waitForFunction(() => document.documentElement.lang === "en");
});

test("signing out forgets the key, and a key revoked meanwhile signs the console out", async () => {
  await page.getByTestId("sign-out").click();
  await page.getByTestId("signin").waitFor();
  await status().filter({ hasText: "You are signed out." }).waitFor();
  assert.equal(await storedKey(), null);
  // A key that stops working while kept in the tab (revoked): the console says so at the next call.
  await page.evaluate((name) => sessionStorage.setItem(name, "lk_live_revoked_meanwhile_0000"), KEY_STORAGE);
  await page.reload();
  await status().filter({ hasText: "Your key is no longer accepted" }).waitFor();
  assert.equal(await page.getByTestId("signin").count(), 1);
  assert.equal(await storedKey(), null);
  await shot("07-signed-out");
});

test("the page asked nothing of anyone but the gateway, and broke no rule of its CSP", () => {
  const allowed = (url) => {
    if (url === "about:blank") return true;
    const parsed = new URL(url);
    if (parsed.origin !== origin) return false;
    return parsed.pathname === "/admin" || parsed.pathname === "/admin/console.js" || parsed.pathname.startsWith("/v1/") || parsed.pathname === "/favicon.ico";
  };
  assert.deepEqual(requests.filter((url) => !allowed(url)), []);
  assert.deepEqual(cspViolations, []);
});
