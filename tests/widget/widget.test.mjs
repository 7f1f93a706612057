// The storefront widget end to end: headless Chromium (Debian's, driven by
// playwright-core) on the quick-start mesh's /demo page. One browser, one
// page, the scenarios in order, as a person would go through them.
//
// Environment (run.sh sets it): GATEWAY_URL, EXPIRED_TOKEN (a token for anna
// signed with the demo program's secret an hour ago), ADMIN_KEY (the demo
// program's, for changes a shop's back office would make), ARTIFACTS (where
// screenshots and axe reports go), CHROMIUM (default /usr/bin/chromium).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = require("axe-core").source;

const gateway = required("GATEWAY_URL");
const expiredToken = required("EXPIRED_TOKEN");
const adminKey = required("ADMIN_KEY");
const artifacts = process.env.ARTIFACTS ?? join(import.meta.dirname, "artifacts");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const VOUCHER = /^[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}$/;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run tests/widget/run.sh)`);
  return value;
}

let context;
let page;
let profile;
/** The voucher code redeemed in the keyboard test. */
let redeemedVoucher = "";

/** A call the shop's back office would make, with the admin key. */
async function admin(method, path, body) {
  const answer = await fetch(`${gateway}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${adminKey}`,
      "Content-Type": "application/json",
      "Idempotency-Key": `widget-test-${Date.now()}-${Math.random()}`,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await answer.json();
  assert.ok(answer.ok, `${method} ${path}: ${answer.status} ${JSON.stringify(json)}`);
  return json;
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  profile = mkdtempSync(join(tmpdir(), "loyalty-widget-chromium-"));
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
    viewport: { width: 1100, height: 1000 },
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gateway });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (error) => {
    throw new Error(`the page threw: ${error.message}`);
  });
  await page.goto(`${gateway}/demo`);
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

const widget = (selector) => page.locator(`loyalty-widget ${selector}`);

async function shot(name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

async function setLanguage(lang) {
  await page.selectOption("#language", lang);
}

/** Numbers as the widget shows them, without grouping separators. */
async function shownNumber(selector) {
  const text = await widget(selector).innerText();
  return Number(text.replace(/[^\d]/g, ""));
}

/** Until `check` passes, clicking nothing: the demo page refreshes the widget itself after a change. */
async function eventually(check, what) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${what}: ${error.message}`);
      await page.evaluate(() => document.getElementById("widget").refresh());
      await page.waitForTimeout(300);
    }
  }
}

async function axe(name) {
  await page.addScriptTag({ content: axeSource });
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  writeFileSync(join(artifacts, `axe-${name}.json`), JSON.stringify(results.violations, null, 2));
  const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  const summary = serious.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(summary, [], `serious accessibility violations on the ${name} view`);
}

test("a guest sees how the program works and a call to join", async () => {
  await widget('[data-testid="join"]').waitFor();
  assert.equal(await widget('[data-testid="join"]').innerText(), "Join now");
  const earn = await widget('[data-testid="ways-to-earn"]').innerText();
  for (const way of ["Create an account", "Celebrate your birthday", "Write a review", "Follow us", "Shop with us"]) {
    assert.match(earn, new RegExp(way), earn);
  }
  // The demo's campaign runs now: a shopper sees it, not only the base rate.
  const campaigns = await widget('[data-testid="campaigns"]').innerText();
  assert.match(campaigns, /Double points on reviews[\s\S]*2× points until Dec 31, 2034/, campaigns);
  assert.match(await widget(".card").innerText(), /Silver[\s\S]*from 300 points/);
  assert.match(await widget(".card").innerText(), /Gold[\s\S]*from 1,000 points[\s\S]*free returns/, "perks on the tier cards");
  const catalog = await widget('[aria-labelledby="loyalty-catalog"]').innerText();
  assert.match(catalog, /€5 off/);
  assert.doesNotMatch(catalog, /10% off/, "a tier-only reward is shown only to those who may redeem it");
  await shot("01-guest");
  await axe("guest");
});

test("a signed-in customer sees their balance, tier and rewards", async () => {
  await page.getByRole("button", { name: "Sign in as Anna" }).click();
  await widget('[data-testid="available"]').waitFor();
  assert.equal(await shownNumber('[data-testid="available"]'), 200, "the sign-up bonus");
  assert.equal(await shownNumber('[data-testid="pending"]'), 0);
  assert.match(await widget('[data-testid="expiring"]').innerText(), /No points expire in the next 30 days/);
  // The tiers service follows the points ledger: the first tier arrives a moment after the points.
  await eventually(async () => {
    assert.equal(await widget('[data-testid="tier"]').innerText(), "Current tier: Bronze");
    assert.equal(await widget('[role="progressbar"]').getAttribute("aria-valuenow"), "67");
  }, "the first tier");
  await shot("02-signed-in");
});

test("an order brings points and a tier change", async () => {
  await page.selectOption("#amount", "15000");
  await page.getByRole("button", { name: "Place a fake order" }).click();
  await eventually(async () => {
    assert.equal(await shownNumber('[data-testid="available"]'), 350);
    assert.equal(await widget('[data-testid="tier"]').innerText(), "Current tier: Silver");
    assert.equal(await widget('[data-testid="perks"]').innerText(), "1.25x points on orders");
  }, "points and tier after the order");
  await shot("03-after-order");
});

test("a reward is redeemed with the keyboard alone and its voucher code copied", async () => {
  // Tab from the top of the page until a redeem button has focus, then press Enter.
  await page.evaluate(() => document.activeElement?.blur());
  let focused = "";
  for (let i = 0; i < 40 && !focused.startsWith("Redeem €5 off"); i++) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => {
      const inner = document.querySelector("loyalty-widget")?.shadowRoot?.activeElement;
      return inner?.getAttribute("aria-label") ?? "";
    });
  }
  assert.equal(focused, "Redeem €5 off for 150 points", "the redeem button is reachable by Tab");
  const outline = await page.evaluate(() => {
    const button = document.querySelector("loyalty-widget").shadowRoot.activeElement;
    return getComputedStyle(button).outlineStyle;
  });
  assert.equal(outline, "solid", "keyboard focus is visible");
  await page.keyboard.press("Enter");
  const code = widget('[data-testid="voucher-code"]');
  await code.waitFor();
  const voucher = await code.innerText();
  assert.match(voucher, VOUCHER);
  redeemedVoucher = voucher;
  assert.equal(await shownNumber('[data-testid="available"]'), 200, "150 points spent");
  const focusedAfter = await page.evaluate(
    () => document.querySelector("loyalty-widget").shadowRoot.activeElement?.getAttribute("data-focus"),
  );
  assert.equal(focusedAfter, "voucher", "focus moves to the new voucher");
  await widget('button[aria-label="Copy voucher code"]').click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), voucher);
  await widget('[role="status"]').filter({ hasText: "Copied" }).waitFor({ state: "attached" });
  await shot("04-voucher");
});

test("the referral link is made on request, copied, and a completed referral shows in the stats", async () => {
  // Reading the page made no code: the customer asks for one.
  assert.equal(await widget('[data-testid="referral-link"]').count(), 0, "no link before it is asked for");
  await widget('button:has-text("Get my referral link")').click();
  await widget('[data-testid="referral-link"]').waitFor();
  const link = await widget('[data-testid="referral-link"]').inputValue();
  assert.match(link, /[?&]ref=[A-Z0-9]{8}$/);
  await widget('button[aria-label="Copy referral link"]').click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), link);
  await page.getByRole("button", { name: "A friend uses my referral link and orders" }).click();
  await eventually(async () => {
    assert.equal(await shownNumber('[data-testid="referrals-completed"]'), 1);
    assert.equal(await shownNumber('[data-testid="available"]'), 500, "300 points for the referral");
    assert.equal(await widget('[data-testid^="tier-only-"]').innerText(), "For Silver members", "the tier-only reward is marked");
  }, "the completed referral");
  await shot("05-referral");
  await axe("signed-in");
});

test("a fresh load lists the vouchers the customer holds", async () => {
  const element = page.locator("#widget");
  const token = await element.getAttribute("customer-token");
  await element.evaluate((e) => e.removeAttribute("customer-token"));
  await widget('[data-testid="join"]').waitFor();
  await element.evaluate((e, value) => e.setAttribute("customer-token", value), token);
  const held = widget('[data-testid="held-vouchers"]');
  await held.waitFor();
  const text = await held.innerText();
  assert.match(text, new RegExp(`€5 off · ${redeemedVoucher}`), text);
  assert.match(text, /valid until/, text);
  await widget(`button[aria-label="Copy voucher code ${redeemedVoucher}"]`).click();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), redeemedVoucher);
  await shot("05b-held-vouchers");
});

test("a balance below zero is explained", async () => {
  const before = await shownNumber('[data-testid="available"]');
  assert.equal(await widget('[data-testid="negative-balance"]').count(), 0, "no explanation while the balance is positive");
  const debt = before + 50;
  await admin("POST", "/v1/customers/anna/adjustments", { points: -debt, reason: "widget test: a debt", allow_debt: true });
  await eventually(async () => {
    assert.match(await widget('[data-testid="available"]').innerText(), /^[-−]50$/);
    assert.match(await widget('[data-testid="negative-balance"]').innerText(), /taken back[\s\S]*New points pay this back first/);
  }, "the negative balance and its explanation");
  await shot("05c-negative-balance");
  await axe("negative-balance");
  await admin("POST", "/v1/customers/anna/adjustments", { points: debt, reason: "widget test: debt repaid", never_expires: true });
  await eventually(async () => {
    assert.equal(await shownNumber('[data-testid="available"]'), before);
    assert.equal(await widget('[data-testid="negative-balance"]').count(), 0);
  }, "the balance back");
});

test("the widget speaks German, Chinese (simplified and traditional) and Turkish", async () => {
  const expectations = [
    ["de", "Verfügbare Punkte", "Aktueller Status: Silver", "Einlösen"],
    ["zh-Hans", "可用积分", "当前等级：Silver", "兑换"],
    ["zh-Hant", "可用積分", "目前等級：Silver", "兌換"],
    ["tr", "Kullanılabilir puan", "Mevcut seviye: Silver", "Kullan"],
  ];
  for (const [lang, available, tier, redeem] of expectations) {
    await setLanguage(lang);
    await widget(`.card[lang="${lang}"]`).waitFor();
    const text = await widget(".card").innerText();
    assert.match(text, new RegExp(available), `${lang}: ${text}`);
    assert.equal(await widget('[data-testid="tier"]').innerText(), tier);
    assert.ok(await widget(`button:text-is("${redeem}")`).count() > 0, `${lang}: a "${redeem}" button`);
    await shot(`06-lang-${lang}`);
  }
  // Numbers follow the locale: over a thousand points read 1.234 in German, 1,234 in English.
  await page.selectOption("#amount", "90000");
  await page.getByRole("button", { name: "Place a fake order" }).click();
  await setLanguage("de");
  await eventually(async () => {
    assert.match(await widget('[data-testid="available"]').innerText(), /^1\.\d{3}$/);
  }, "German grouping");
  await setLanguage("en");
  await eventually(async () => {
    assert.match(await widget('[data-testid="available"]').innerText(), /^1,\d{3}$/);
  }, "English grouping");
});

test("the shop overrides strings per language and themes the widget with custom properties", async () => {
  await setLanguage("en");
  await page.evaluate(() => {
    const element = document.getElementById("widget");
    element.setAttribute("strings", JSON.stringify({ title: "Fern Club", de: { title: "Fern-Klub" } }));
    element.style.setProperty("--loyalty-accent", "rgb(122, 46, 142)");
  });
  await eventually(async () => {
    assert.equal(await widget("#loyalty-title").innerText(), "Fern Club");
  }, "the overridden title");
  const accent = await widget('[data-testid="available"]').evaluate((node) => getComputedStyle(node).color);
  assert.equal(accent, "rgb(122, 46, 142)", "the balance takes the shop's accent colour");
  await setLanguage("de");
  await eventually(async () => {
    assert.equal(await widget("#loyalty-title").innerText(), "Fern-Klub");
  }, "the German override");
  await shot("09-themed");
  await page.evaluate(() => {
    const element = document.getElementById("widget");
    element.removeAttribute("strings");
    element.style.removeProperty("--loyalty-accent");
  });
  await setLanguage("en");
});

test("points pay for part of an order at the demo checkout", async () => {
  const before = await shownNumber('[data-testid="available"]');
  // At most half of €40.00 at 100 points = €1.00, in tens: 2000 points, or what anna has.
  const usable = Math.min(2000, before - (before % 10));
  await page.selectOption("#amount", "4000");
  await eventually(async () => {
    const offered = `(up to ${usable} points, €${(usable / 100).toFixed(2)} off)`;
    assert.equal(await page.locator("#points-offer").innerText(), offered);
  }, "the checkout's offer");
  await page.locator("#use-points").check();
  await page.getByRole("button", { name: "Place a fake order" }).click();
  const placed = page.locator("#log li").filter({ hasText: `paid ${usable} points` });
  await placed.waitFor();
  const earned = Number((await placed.innerText()).match(/\+(\d+) points/)[1]);
  assert.ok(earned > 0, "what is left to pay still earns");
  await eventually(async () => {
    assert.equal(await shownNumber('[data-testid="available"]'), before - usable + earned);
  }, "the balance after paying with points");
  await shot("09b-points-at-checkout");
  await page.locator("#use-points").uncheck();
});

test("the member gives their birthday once, and an impossible date is explained", async () => {
  const section = widget('section[aria-labelledby="loyalty-birthday"]');
  await section.waitFor();
  assert.match(await section.innerText(), /get 100 points every year/);
  await widget("#loyalty-birth-month").selectOption("2");
  await widget("#loyalty-birth-day").selectOption("30");
  await widget('button:has-text("Save my birthday")').click();
  await widget('[role="alert"]').filter({ hasText: "That date does not exist" }).waitFor();
  await widget("#loyalty-birth-month").selectOption("2");
  await widget("#loyalty-birth-day").selectOption("29");
  await widget('button:has-text("Save my birthday")').click();
  await eventually(async () => {
    assert.equal(await widget('[data-testid="birthday"]').innerText(), "Your birthday: February 29");
    assert.equal(await widget('[role="alert"]').count(), 0, "the explanation goes once it is right");
  }, "the birthday shown");
  assert.equal(await widget("#loyalty-birth-month").count(), 0, "given once: no form any more");
  await shot("09c-birthday");
  await axe("birthday");
});

test("a forged token is refused and the widget says so politely", async () => {
  const token = await page.locator("#widget").getAttribute("customer-token");
  const [payload, signature] = [token.slice(0, token.lastIndexOf(".")), token.slice(token.lastIndexOf(".") + 1)];
  const forged = `${payload}.${signature[0] === "A" ? "B" : "A"}${signature.slice(1)}`;
  await page.locator("#widget").evaluate((element, value) => element.setAttribute("customer-token", value), forged);
  const alert = widget('[role="alert"]');
  await alert.waitFor();
  assert.equal(await alert.innerText(), "We could not confirm your account. Please sign in again to see your points.");
  assert.equal(await widget('[data-testid="available"]').count(), 0, "no balance without a valid token");
  // Claiming another customer with anna's signature is forged too.
  const ben = `v1.${Buffer.from("ben").toString("base64url")}.${payload.split(".")[2]}.${signature}`;
  await page.locator("#widget").evaluate((element, value) => element.setAttribute("customer-token", value), ben);
  await alert.waitFor();
  assert.equal(await widget('[data-testid="available"]').count(), 0);
  await shot("07-forged-token");
});

test("an expired token is refused and the widget says so politely", async () => {
  await page.locator("#widget").evaluate((element, value) => element.setAttribute("customer-token", value), expiredToken);
  const alert = widget('[role="alert"]');
  await alert.filter({ hasText: "timed out" }).waitFor();
  assert.equal(await alert.innerText(), "Your session has timed out. Please refresh the page to see your points.");
  assert.equal(await widget('[data-testid="available"]').count(), 0);
  assert.equal(await widget('[data-testid="join"]').count(), 1, "the guest view instead");
  await setLanguage("de");
  await alert.filter({ hasText: "abgelaufen" }).waitFor();
  await shot("08-expired-token");
  await axe("expired-token");
  await setLanguage("en");
});
