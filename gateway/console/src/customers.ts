// One customer: look them up by id, see their balance, tier, referral and
// profile, adjust their points, assign a tier by hand (a hidden one too) or
// end that assignment, read their tier history, the friends they referred and
// their ledger, and cancel an unused voucher.

import { Action, AssignmentBody, Balance, Ladder, LoyaltyPage, Problem, Redemption, Referral, TierChange, TierStatus, Transaction } from "./api";
import { Context, problemText, View } from "./context";
import { Child, facts, field, h, table } from "./dom";
import { onSave, selectField, textField, unavailable as serviceUnavailable } from "./forms";
import { fill, named } from "./i18n";
import { pager } from "./pager";
import { href, Route } from "./router";

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
  const assign = panel("assign", t.assignTitle);
  const history = panel("tier-history", t.tierHistoryTitle);
  const referred = panel("referred", t.referredTitle);
  const ledger = panel("ledger", t.ledgerTitle);
  const vouchers = panel("vouchers", t.vouchersTitle);
  for (const part of [balance, tier, referral, profile, assign, history, referred]) part.body.append(h("p", { class: "muted" }, t.loading));
  root.append(
    h(
      "section",
      { "aria-labelledby": "customer-heading", class: "view" },
      heading,
      h("div", { class: "columns" }, balance.section, tier.section, referral.section, profile.section),
      adjust.section,
      assign.section,
      history.section,
      referred.section,
      ledger.section,
      vouchers.section,
    ),
  );

  /** The ladder, for the tiers' names and the tiers an assignment may give; null when it cannot be read. */
  const ladderRead = context.api.ladder();
  const ladder: Promise<Ladder | null> = ladderRead.catch(() => null);
  const tierName = (known: Ladder | null, tierId: string) =>
    tierId ? (known?.tiers.find((candidate) => candidate.tier_id === tierId)?.name ?? tierId) : t.noTierBefore;

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
    if (status.status === "fulfilled") tier.body.replaceChildren(...tierFacts(context, status.value, endButton));
    else if (status.reason instanceof Problem && status.reason.status === 404) tier.body.replaceChildren(h("p", { "data-testid": "tier-name" }, t.tierNone));
    else tier.body.replaceChildren(unavailable(context, status.reason));
  };

  // ---- ending a tier assignment: the button in the tier card while there is one
  const ending = new Action();
  const endButton = h("button", { type: "button", class: "danger", "data-testid": "end-assignment" }, t.endAssignment);
  endButton.addEventListener("click", async () => {
    if (!window.confirm(fill(t.endAssignmentConfirm, { customer: customerId }))) return;
    endButton.disabled = true;
    try {
      await context.api.endAssignment(customerId, ending.keyFor({ end: customerId }));
      ending.settled();
      if (!context.alive()) return;
      context.say(fill(t.assignmentEndedSaid, { customer: customerId }));
      await Promise.all([loadSummary(), loadHistory()]);
      tier.heading.focus();
    } catch (error) {
      ending.settled(error);
      context.fail(error);
    } finally {
      endButton.disabled = false;
    }
  });

  // ---- the tier history, newest first, 20 at a time, with the ladder's names
  const historyTable = table(
    [{ label: t.colDate }, { label: t.colFrom }, { label: t.colTo }, { label: t.colReason }, { label: t.colBy }],
    t.tierHistoryTitle,
  );
  const historyEmpty = h("p", { class: "muted" }, t.tierHistoryEmpty);
  let names: Ladder | null = null;
  const historyPages = pager<TierChange>(context, {
    body: historyTable.body,
    table: historyTable.table,
    empty: historyEmpty,
    read: async (token) => {
      names = await ladder;
      return context.api.tierHistory(customerId, token);
    },
    row: (change) =>
      h(
        "tr",
        { "data-testid": "tier-change", "data-from": change.from_tier_id, "data-to": change.to_tier_id, "data-reason": change.reason },
        h("td", { class: "when" }, fmt.dateTime(change.changed_at)),
        h("td", {}, tierName(names, change.from_tier_id)),
        h("td", {}, tierName(names, change.to_tier_id)),
        h("td", {}, named(t, "tierReason", change.reason)),
        h("td", { class: "code", "data-testid": "tier-change-actor" }, change.actor ?? ""),
      ),
    focusAfter: history.heading,
    testid: "tier-history",
  });
  const loadHistory = () =>
    historyPages.reload().then(
      () => {
        if (context.alive()) history.body.replaceChildren(historyTable.table, historyEmpty, historyPages.more);
      },
      (error: unknown) => partFailed(context, history.body, error, "tiers"),
    );

  // ---- the friends this customer referred, newest first, 20 at a time
  const referredTable = table(
    [{ label: t.colFriend }, { label: t.colStatus }, { label: t.colSignedUp }, { label: t.colCompleted }, { label: t.colReversed }],
    t.referredTitle,
  );
  const referredEmpty = h("p", { class: "muted" }, t.referredEmpty);
  const referredPages = pager<Referral>(context, {
    body: referredTable.body,
    table: referredTable.table,
    empty: referredEmpty,
    read: (token) => context.api.referrals(customerId, token),
    row: (friend) =>
      h(
        "tr",
        { "data-testid": "referred-row", "data-friend": friend.referee_customer_id, "data-status": friend.status },
        h("td", {}, h("a", { href: href({ view: "customers", customer: friend.referee_customer_id }) }, friend.referee_customer_id)),
        h("td", {}, named(t, "referralStatus", friend.status)),
        h("td", { class: "when" }, fmt.dateTime(friend.created_at)),
        h("td", { class: "when" }, friend.completed_at ? fmt.dateTime(friend.completed_at) : ""),
        h("td", { class: "when" }, friend.reversed_at ? fmt.dateTime(friend.reversed_at) : ""),
      ),
    focusAfter: referred.heading,
    testid: "referred",
  });
  const loadReferred = () =>
    referredPages.reload().then(
      () => {
        if (context.alive()) referred.body.replaceChildren(referredTable.table, referredEmpty, referredPages.more);
      },
      (error: unknown) => partFailed(context, referred.body, error, "referral"),
    );

  // ---- assigning a tier: any of the ladder's, hidden ones marked, until an optional end
  const showAssign = (known: Ladder | null, error: unknown) => {
    if (!context.alive()) return;
    if (!known) {
      partFailed(context, assign.body, error, "tiers");
      return;
    }
    if (!known.tiers.length) {
      assign.body.replaceChildren(h("p", { class: "muted" }, t.assignNoTiers));
      return;
    }
    const options = known.tiers.map((option): [string, string] => [option.tier_id, option.hidden ? fill(t.tierHiddenMark, { name: option.name }) : option.name]);
    const tierField = selectField("assign-tier", t.assignTier, options, known.tiers.find((option) => option.hidden)?.tier_id ?? options[0][0]);
    const endsField = textField("assign-ends", t.assignEnds, "", t.assignEndsHint, { type: "datetime-local" });
    const submit = h("button", { type: "submit" }, t.assignSubmit);
    const conflict = h("div");
    const form = h(
      "form",
      { class: "inline", novalidate: true, "data-testid": "assign-form" },
      tierField.block,
      endsField.block,
      conflict,
      h("div", { class: "actions" }, submit),
    );
    onSave<AssignmentBody, TierStatus>(context, {
      form,
      submit,
      conflict,
      reload: () =>
        void context.api.ladder().then(
          (again) => showAssign(again, null),
          (error: unknown) => showAssign(null, error),
        ),
      read: (check) => {
        const body: AssignmentBody = { tier_id: check.choice("tier_id", tierField) };
        if (check.text("ends_at", endsField)) body.ends_at = check.moment("ends_at", endsField);
        return body;
      },
      send: (body, key) => context.api.assignTier(customerId, body, key),
      saved: async (answer) => {
        endsField.input.value = "";
        context.say(fill(t.tierAssignedSaid, { tier: answer.tier_name ?? tierName(known, answer.tier_id ?? ""), customer: customerId }));
        await Promise.all([loadSummary(), loadHistory()]);
      },
    });
    assign.body.replaceChildren(form);
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
  void loadHistory();
  void loadReferred();
  ladderRead.then(
    (known) => showAssign(known, null),
    (error: unknown) => showAssign(null, error),
  );
  for (const list of [ledgerPages, voucherPages]) list.reload().catch((error: unknown) => context.fail(error));
}

/** A part whose service is not configured says so in its card only; any other failure is in the status message too. */
function partFailed(context: Context, body: HTMLElement, error: unknown, service: string) {
  if (!context.alive()) return;
  body.replaceChildren(serviceUnavailable(context, error, service));
  if (!(error instanceof Problem && error.status === 503 && error.code === "BACKEND_NOT_CONFIGURED")) context.fail(error);
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

/** The tier card: the tier, and while it is assigned by hand, until when and the button that ends it. */
function tierFacts(context: Context, tier: TierStatus, endButton: HTMLButtonElement): Node[] {
  const { t, fmt } = context;
  if (!tier.tier_name && !tier.tier_id) return [h("p", { "data-testid": "tier-name" }, t.tierNone)];
  const pairs: [string, Child, string?][] = [
    [t.tierTitle, tier.assigned ? `${tier.tier_name ?? tier.tier_id} (${t.tierAssigned})` : (tier.tier_name ?? tier.tier_id), "tier-name"],
    [t.tierQualifying, fmt.number(tier.qualifying_points ?? 0)],
  ];
  if (tier.since) pairs.push([t.tierSince, fmt.date(tier.since)]);
  if (tier.assigned && tier.assignment_ends_at) pairs.push([t.assignmentEndsAt, fmt.dateTime(tier.assignment_ends_at), "assignment-ends"]);
  if (tier.perks?.length) pairs.push([t.perks, tier.perks.join(", ")]);
  return tier.assigned ? [facts(pairs), h("div", { class: "actions" }, endButton)] : [facts(pairs)];
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
