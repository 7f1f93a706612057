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

before(async () => {
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
  await page.route("**/v1/insights/**", (route) =>
    route.fulfill({
      status: 503,
      contentType: "application/problem+json",
      body: JSON.stringify({
        type: "urn:loyalty:problem:backend_not_configured",
        title: "Service Unavailable",
        status: 503,
        code: "BACKEND_NOT_CONFIGURED",
        detail: "the gateway has no address for the insights service",
      }),
    }),
  );
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
