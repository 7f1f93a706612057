// One customer: look them up by id, see their balance, tier, referral and
// profile, adjust their points, read their ledger and cancel an unused voucher.

import { Balance, LoyaltyPage, Problem, Redemption, TierStatus, Transaction } from "./api";
import { Context, problemText, View } from "./context";
import { Child, facts, field, h, table } from "./dom";
import { fill, named } from "./i18n";
import { pager } from "./pager";
import { Route } from "./router";

type CustomersRoute = Extract<Route, { view: "customers" }>;

export const customersView: View<CustomersRoute> = (context, route, root) => {
  const { t } = context;
  const input = h("input", { type: "text", autocomplete: "off", spellcheck: "false", value: route.customer ?? "" });
  const id = field("customer-id", t.customerId, input);
  const form = h(
    "form",
    { class: "inline", role: "search", novalidate: true, "data-testid": "lookup" },
    id.block,
    h("div", { class: "actions" }, h("button", { type: "submit" }, t.lookUp)),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const customer = input.value.trim();
    if (!customer) {
      id.invalid(t.idRequired);
      input.focus();
      return;
    }
    id.invalid(null);
    context.navigate({ view: "customers", customer });
  });
  root.append(h("h1", { tabindex: "-1" }, t.custTitle), form);
  if (route.customer) customer(context, route.customer, root);
};

/** Everything about one customer, each part loaded (and failing) on its own. */
function customer(context: Context, customerId: string, root: HTMLElement) {
  const { t, fmt } = context;
  const heading = h("h2", { id: "customer-heading", tabindex: "-1", "data-testid": "customer-heading" }, fill(t.customerHeading, { id: customerId }));
  const balance = panel("balance", t.balanceTitle);
  const tier = panel("tier", t.tierTitle);
  const referral = panel("referral", t.referralTitle);
  const profile = panel("profile", t.profileTitle);
  const adjust = panel("adjust", t.adjustTitle);
  const ledger = panel("ledger", t.ledgerTitle);
  const vouchers = panel("vouchers", t.vouchersTitle);
  for (const part of [balance, tier, referral, profile]) part.body.append(h("p", { class: "muted" }, t.loading));
  root.append(
    h(
      "section",
      { "aria-labelledby": "customer-heading", class: "view" },
      heading,
      h("div", { class: "columns" }, balance.section, tier.section, referral.section, profile.section),
      adjust.section,
      ledger.section,
      vouchers.section,
    ),
  );

  /** The newest balance an adjustment answered: a read that is older (a cache) does not hide it. */
  let newest: Balance | null = null;

  const loadSummary = async () => {
    const [page, status] = await Promise.allSettled([context.api.loyalty(customerId), context.api.tier(customerId)]);
    if (!context.alive()) return;
    if (page.status === "fulfilled") {
      const points = { ...page.value.points, ...(newest && (newest.version ?? 0) > (page.value.points.version ?? 0) ? newest : {}) };
      balance.body.replaceChildren(balanceFacts(context, { ...page.value, points }));
      referral.body.replaceChildren(referralFacts(context, page.value));
      profile.body.replaceChildren(profileFacts(context, page.value));
    } else {
      const note = unavailable(context, page.reason);
      balance.body.replaceChildren(note);
      referral.body.replaceChildren();
      profile.body.replaceChildren();
      context.fail(page.reason);
    }
    if (status.status === "fulfilled") tier.body.replaceChildren(tierFacts(context, status.value));
    else if (status.reason instanceof Problem && status.reason.status === 404) tier.body.replaceChildren(h("p", { "data-testid": "tier-name" }, t.tierNone));
    else tier.body.replaceChildren(unavailable(context, status.reason));
  };

  // ---- the ledger, newest first, 20 at a time
  const ledgerTable = table(
    [
      { label: t.colDate },
      { label: t.colKind },
      { label: t.colPoints, numeric: true },
      { label: t.colPending, numeric: true },
      { label: t.colReason },
      { label: t.colExpires },
    ],
    t.ledgerTitle,
  );
  const ledgerEmpty = h("p", { class: "muted" }, t.ledgerEmpty);
  const ledgerPages = pager<Transaction>(context, {
    body: ledgerTable.body,
    table: ledgerTable.table,
    empty: ledgerEmpty,
    read: (token) => context.api.transactions(customerId, token),
    row: (entry) =>
      h(
        "tr",
        { "data-testid": "ledger-row", "data-kind": entry.kind },
        h("td", { class: "when" }, fmt.dateTime(entry.created_at)),
        h("td", {}, named(t, "kind", entry.kind)),
        h("td", { class: "num" }, entry.points ? fmt.signed(entry.points) : ""),
        h("td", { class: "num" }, entry.pending_points ? fmt.signed(entry.pending_points) : ""),
        h("td", { "data-testid": "ledger-reason" }, entry.reason),
        h("td", {}, entry.expires_at ? fmt.date(entry.expires_at) : ""),
      ),
    focusAfter: ledger.heading,
    testid: "ledger",
  });
  ledger.body.append(ledgerTable.table, ledgerEmpty, ledgerPages.more);

  // ---- vouchers, with "Cancel" on the unused ones
  const voucherTable = table(
    [
      { label: t.colReward },
      { label: t.colCode },
      { label: t.colStatus },
      { label: t.colPoints, numeric: true },
      { label: t.colValidUntil },
      { label: t.colActions },
    ],
    t.vouchersTitle,
  );
  const voucherEmpty = h("p", { class: "muted" }, t.vouchersEmpty);
  const voucherPages = pager<Redemption>(context, {
    body: voucherTable.body,
    table: voucherTable.table,
    empty: voucherEmpty,
    read: (token) => context.api.redemptions(customerId, token),
    row: (redemption) => {
      const code = redemption.voucher_code ?? "";
      let action: Child = null;
      if (redemption.status === "active") {
        const cancel = h("button", { type: "button", class: "danger", "aria-label": fill(t.cancelLabel, { code: code || redemption.redemption_id }) }, t.cancel);
        cancel.addEventListener("click", () => void cancelVoucher(redemption, cancel));
        action = cancel;
      }
      return h(
        "tr",
        { "data-testid": "voucher-row", "data-status": redemption.status, "data-redemption": redemption.redemption_id },
        h("td", {}, redemption.reward_name),
        h("td", { class: "code" }, code),
        h("td", {}, named(t, "status", redemption.status)),
        h("td", { class: "num" }, fmt.number(redemption.points_spent)),
        h("td", {}, redemption.voucher_expires_at ? fmt.date(redemption.voucher_expires_at) : ""),
        h("td", {}, action),
      );
    },
    focusAfter: vouchers.heading,
    testid: "vouchers",
  });
  vouchers.body.append(voucherTable.table, voucherEmpty, voucherPages.more);

  const cancelVoucher = async (redemption: Redemption, button: HTMLButtonElement) => {
    const code = redemption.voucher_code || redemption.redemption_id;
    if (!window.confirm(fill(t.cancelConfirm, { code }))) return;
    button.disabled = true;
    try {
      await context.api.cancelRedemption(redemption.redemption_id);
      if (!context.alive()) return;
      context.say(fill(t.cancelled, { code }));
      await Promise.all([voucherPages.reload(), loadSummary(), ledgerPages.reload()]);
      vouchers.heading.focus();
    } catch (error) {
      button.disabled = false;
      context.fail(error);
    }
  };

  // ---- the adjustment form: validated as the API does, its field errors shown by the fields
  const pointsInput = h("input", { type: "number", step: "1", inputmode: "numeric", autocomplete: "off" });
  const reasonInput = h("input", { type: "text", autocomplete: "off" });
  const pointsField = field("adjust-points", t.adjustPoints, pointsInput);
  const reasonField = field("adjust-reason", t.adjustReason, reasonInput, t.adjustHint);
  const submit = h("button", { type: "submit" }, t.adjustSubmit);
  const form = h("form", { class: "inline", novalidate: true, "data-testid": "adjust" }, pointsField.block, reasonField.block, h("div", { class: "actions" }, submit));
  adjust.body.append(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const raw = pointsInput.value.trim();
    const points = Number(raw);
    const reason = reasonInput.value.trim();
    const pointsError =
      pointsInput.validity.badInput || raw === "" || !Number.isSafeInteger(points) ? t.pointsInvalid : points === 0 ? t.pointsZero : null;
    const reasonError = reason ? null : t.reasonRequired;
    pointsField.invalid(pointsError);
    reasonField.invalid(reasonError);
    if (pointsError || reasonError) {
      (pointsError ? pointsInput : reasonInput).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = t.adjusting;
    try {
      const adjusted = await context.api.adjust(customerId, points, reason);
      if (!context.alive()) return;
      newest = adjusted.balance;
      pointsInput.value = "";
      reasonInput.value = "";
      context.say(fill(t.adjusted, { points: fmt.signed(points), customer: customerId }));
      await Promise.all([loadSummary(), ledgerPages.reload()]);
    } catch (error) {
      if (!context.alive()) return;
      context.fail(error);
      if (error instanceof Problem) {
        for (const invalid of error.errors) {
          if (invalid.field === "points") pointsField.invalid(invalid.description);
          else if (invalid.field === "reason") reasonField.invalid(invalid.description);
        }
        const first = error.errors.find((e) => e.field === "points" || e.field === "reason");
        if (first) (first.field === "points" ? pointsInput : reasonInput).focus();
      }
    } finally {
      submit.disabled = false;
      submit.textContent = t.adjustSubmit;
    }
  });

  void loadSummary();
  for (const list of [ledgerPages, voucherPages]) list.reload().catch((error: unknown) => context.fail(error));
}

/** A titled part of the customer's page. */
function panel(name: string, title: string): { section: HTMLElement; heading: HTMLElement; body: HTMLElement } {
  const heading = h("h3", { id: `${name}-heading`, tabindex: "-1" }, title);
  const body = h("div", { class: "view" });
  const section = h("section", { class: "panel", "aria-labelledby": heading.id, "data-testid": name }, heading, body);
  return { section, heading, body };
}

function unavailable(context: Context, error: unknown): HTMLElement {
  return h("p", { class: "notice" }, fill(context.t.partUnavailable, { detail: problemText(context.t, error) }));
}

function balanceFacts(context: Context, page: LoyaltyPage): HTMLElement {
  const { t, fmt } = context;
  const p = page.points;
  const soon = p.expiring_soon;
  const pairs: [string, Child, string?][] = [
    [t.available, h("span", { class: "big" }, fmt.number(p.available)), "balance-available"],
    [t.pending, fmt.number(p.pending), "balance-pending"],
    [t.lifetimeEarned, fmt.number(p.lifetime_earned ?? 0), "balance-lifetime"],
    [t.spent, fmt.number(p.spent ?? 0)],
    [t.expired, fmt.number(p.expired ?? 0)],
    [t.reversed, fmt.number(p.reversed ?? 0)],
  ];
  if (soon) pairs.push([fill(t.expiringSoon, { days: fmt.number(soon.within_days) }), fmt.number(soon.total_points), "balance-expiring"]);
  if (page.rewards.available) pairs.push([t.redeemable, fmt.number(page.rewards.redeemable?.length ?? 0)]);
  return facts(pairs);
}

function tierFacts(context: Context, tier: TierStatus): HTMLElement {
  const { t, fmt } = context;
  if (!tier.tier_name && !tier.tier_id) return h("p", { "data-testid": "tier-name" }, t.tierNone);
  const pairs: [string, Child, string?][] = [
    [t.tierTitle, tier.assigned ? `${tier.tier_name ?? tier.tier_id} (${t.tierAssigned})` : (tier.tier_name ?? tier.tier_id), "tier-name"],
    [t.tierQualifying, fmt.number(tier.qualifying_points ?? 0)],
  ];
  if (tier.since) pairs.push([t.tierSince, fmt.date(tier.since)]);
  if (tier.perks?.length) pairs.push([t.perks, tier.perks.join(", ")]);
  return facts(pairs);
}

function referralFacts(context: Context, page: LoyaltyPage): HTMLElement {
  const { t, fmt } = context;
  const referral = page.referral;
  if (!referral.available) return h("p", { class: "muted" }, "—");
  if (!referral.code) return h("p", { class: "muted" }, t.referralNone);
  const pairs: [string, Child, string?][] = [[t.referralCode, h("span", { class: "code" }, referral.code)]];
  if (referral.stats) {
    pairs.push([t.invited, fmt.number(referral.stats.invited)], [t.completed, fmt.number(referral.stats.completed)]);
  }
  return facts(pairs);
}

function profileFacts(context: Context, page: LoyaltyPage): HTMLElement {
  const { t, fmt, lang } = context;
  const profile = page.profile;
  const birthday =
    profile?.birth_month && profile.birth_day
      ? new Intl.DateTimeFormat(lang, { month: "long", day: "numeric", timeZone: "UTC" }).format(new Date(Date.UTC(2000, profile.birth_month - 1, profile.birth_day)))
      : t.notGiven;
  const pairs: [string, Child, string?][] = [
    [t.enrolled, profile?.enrolled_at ? fmt.date(profile.enrolled_at) : "—"],
    [t.birthday, birthday],
  ];
  if (profile?.locale) pairs.push([t.language, profile.locale]);
  return facts(pairs);
}
