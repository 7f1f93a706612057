// The program's earning rules (`GET`/`PUT /v1/settings`): the earn rate and
// its rounding, the currency and the minimum order, the return window,
// expiry, the ways to earn (activity rules) and points at checkout. A save
// sends the version the form was loaded at as `expected_version`: a change
// made meanwhile answers 409 `VERSION_MISMATCH`, and the form says so instead
// of overwriting it.

import { Action, ActivityRule, CapPeriod, CheckoutPoints, ExpiryKind, Rounding, Settings, SettingsBody } from "./api";
import { Context } from "./context";
import { checkbox, Field, h } from "./dom";
import {
  ACTIVITY_TYPE,
  CURRENCY,
  loadPart,
  MAX_AMOUNT_MINOR,
  MAX_INT32,
  MAX_POINTS,
  minorHint,
  numberField,
  onSave,
  selectField,
  textField,
  unavailable,
} from "./forms";
import { fill, named } from "./i18n";

const CAP_PERIODS: CapPeriod[] = ["lifetime", "year", "month", "week", "day"];
const EXPIRY_KINDS: ExpiryKind[] = ["never", "days_after_earn", "end_of_nth_month"];
/** What a program that turns points at checkout on starts from: 100 points pay 1.00, up to half an order. */
const CHECKOUT_START: CheckoutPoints = { points: 100, amount_minor: 100, min_points: 0, max_share_bp: 5_000, step_points: 0 };

export function earningPart(context: Context, body: HTMLElement, heading: HTMLElement): void {
  const load = (focus: boolean) =>
    loadPart(
      context,
      body,
      () => context.api.settings(),
      (settings) => [settingsForm(context, settings, show, () => void load(true))],
      (error) => [unavailable(context, error, "points")],
    ).then(() => {
      if (focus && context.alive()) heading.focus();
    });
  /** What a save answered, shown as the form's new starting point. */
  const show = (settings: Settings) => {
    body.replaceChildren(settingsForm(context, settings, show, () => void load(true)));
    heading.focus();
  };
  void load(false);
}

interface RuleRow {
  block: HTMLFieldSetElement;
  legend: HTMLLegendElement;
  remove: HTMLButtonElement;
  type: Field;
  points: Field;
  cap: Field;
  period: Field;
  active: Field;
  once: Field;
}

function settingsForm(context: Context, settings: Settings, saved: (settings: Settings) => void, reload: () => void): HTMLFormElement {
  const { t, fmt } = context;
  const action = new Action();

  // ---- the earn rate
  const points = numberField("earn-points", t.earnPoints, settings.earn_rate.points);
  const perAmount = numberField("earn-per-amount", t.earnPerAmount, settings.earn_rate.per_amount_minor, minorHint(context));
  const rounding = selectField("rounding", t.rounding, [["down", t.roundDown], ["nearest", t.roundNearest]], settings.rounding);
  const currency = textField("currency", t.currency, settings.currency, t.currencyHint, { spellcheck: "false", autocapitalize: "characters", maxlength: 3, class: "short" });
  const minimum = numberField("minimum-order", t.minimumOrder, settings.minimum_order_minor, t.minimumOrderHint);

  // ---- the return window and expiry
  const pending = numberField("pending-days", t.pendingDays, settings.pending_days, t.pendingDaysHint);
  const expiryKind = selectField(
    "expiry-kind",
    t.expiry,
    EXPIRY_KINDS.map((kind) => [kind, named(t, "expiryKind", kind)]),
    settings.expiry.kind,
  );
  const expiryCount = numberField("expiry-count", t.expiryDays, settings.expiry.kind === "never" ? undefined : settings.expiry.count ?? 0);
  const expiryLabel = expiryCount.block.querySelector("label");
  const showExpiry = () => {
    const kind = expiryKind.input.value;
    expiryCount.block.hidden = kind === "never";
    if (expiryLabel) expiryLabel.textContent = kind === "end_of_nth_month" ? t.expiryMonths : t.expiryDays;
  };
  expiryKind.input.addEventListener("change", showExpiry);
  showExpiry();
  const reminder = numberField("reminder-days", t.reminderDays, settings.expiry_reminder_days, fill(t.reminderHint, { days: fmt.number(14) }));

  // ---- the ways to earn
  const rows: RuleRow[] = [];
  const list = h("div", { class: "rows" });
  let serial = 0;
  const renumber = () =>
    rows.forEach((row, i) => {
      row.legend.textContent = fill(t.ruleLegend, { n: fmt.number(i + 1) });
      row.remove.setAttribute("aria-label", fill(t.removeRule, { n: fmt.number(i + 1) }));
    });
  const addRule = (rule: ActivityRule | null): RuleRow => {
    const n = ++serial;
    const row: RuleRow = {
      block: h("fieldset", { class: "row", "data-testid": "rule" }),
      legend: h("legend"),
      remove: h("button", { type: "button", class: "danger" }, t.remove),
      type: textField(`rule-${n}-type`, t.activityType, rule?.activity_type ?? "", t.activityTypeHint, { spellcheck: "false" }),
      points: numberField(`rule-${n}-points`, t.rulePoints, rule?.points),
      cap: numberField(`rule-${n}-cap`, t.capCount, rule?.cap_count ?? 0, t.capCountHint),
      period: selectField(
        `rule-${n}-period`,
        t.capPeriod,
        CAP_PERIODS.map((period) => [period, named(t, "cap", period)]),
        rule?.cap_period ?? "lifetime",
      ),
      active: checkbox(`rule-${n}-active`, t.ruleActive, rule?.active ?? true),
      once: checkbox(`rule-${n}-once`, t.oncePerRef, rule?.once_per_ref ?? false, t.oncePerRefHint),
    };
    row.block.append(
      row.legend,
      h("div", { class: "fields" }, row.type.block, row.points.block, row.cap.block, row.period.block, row.active.block, row.once.block),
      h("div", { class: "row-actions" }, row.remove),
    );
    row.remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(row), 1);
      row.block.remove();
      renumber();
      add.focus();
    });
    rows.push(row);
    list.append(row.block);
    renumber();
    return row;
  };
  const add = h("button", { type: "button", class: "secondary", "data-testid": "add-rule" }, t.addRule);
  add.addEventListener("click", () => addRule(null).type.input.focus());
  settings.activity_rules.forEach(addRule);

  // ---- points at checkout
  const start = settings.checkout ?? CHECKOUT_START;
  const checkoutOn = checkbox("checkout-enabled", t.checkoutEnabled, settings.checkout !== undefined);
  const checkoutPoints = numberField("checkout-points", t.checkoutPoints, start.points);
  const checkoutAmount = numberField("checkout-amount", t.checkoutAmount, start.amount_minor, minorHint(context));
  const checkoutMin = numberField("checkout-min", t.checkoutMin, start.min_points, t.checkoutMinHint);
  const checkoutShare = numberField("checkout-share", t.checkoutShare, start.max_share_bp, fill(t.checkoutShareHint, { half: fmt.number(5_000), whole: fmt.number(10_000) }));
  const checkoutStep = numberField("checkout-step", t.checkoutStep, start.step_points, t.checkoutStepHint);
  const checkoutFields = h("div", { class: "fields" }, checkoutPoints.block, checkoutAmount.block, checkoutMin.block, checkoutShare.block, checkoutStep.block);
  const showCheckout = () => (checkoutFields.hidden = !(checkoutOn.input as HTMLInputElement).checked);
  checkoutOn.input.addEventListener("change", showCheckout);
  showCheckout();

  const submit = h("button", { type: "submit" }, t.saveEarning);
  const conflict = h("div");
  const form = h(
    "form",
    { class: "stacked", novalidate: true, "data-testid": "earning-form" },
    h("fieldset", {}, h("legend", {}, t.earnRateLegend), h("div", { class: "fields" }, points.block, perAmount.block, rounding.block, currency.block, minimum.block)),
    h("fieldset", {}, h("legend", {}, t.expiryLegend), h("div", { class: "fields" }, pending.block, expiryKind.block, expiryCount.block, reminder.block)),
    h("fieldset", {}, h("legend", {}, t.waysToEarnLegend), h("p", { class: "hint" }, t.waysToEarnHint), list, h("div", {}, add)),
    h("fieldset", {}, h("legend", {}, t.checkoutLegend), checkoutOn.block, checkoutFields),
    conflict,
    h("div", { class: "actions" }, submit, h("p", { class: "hint", "data-testid": "settings-version" }, fill(t.loadedVersion, { version: fmt.number(settings.version) }))),
  );

  onSave(context, {
    form,
    submit,
    conflict,
    reload,
    read: (check) => {
      const kind = check.choice<ExpiryKind>("expiry.kind", expiryKind);
      const body: SettingsBody = {
        earn_rate: {
          points: check.integer("earn_rate.points", points, 0, 1_000_000),
          per_amount_minor: check.integer("earn_rate.per_amount_minor", perAmount, 1, MAX_POINTS),
        },
        rounding: check.choice<Rounding>("rounding", rounding),
        currency: check.text("currency", currency, { pattern: CURRENCY, message: t.currencyInvalid, upper: true }),
        minimum_order_minor: check.integer("minimum_order_minor", minimum, 0, MAX_AMOUNT_MINOR),
        pending_days: check.integer("pending_days", pending, 0, 365),
        expiry:
          kind === "never"
            ? { kind }
            : { kind, count: kind === "days_after_earn" ? check.integer("expiry.count", expiryCount, 1, 3_650) : check.integer("expiry.count", expiryCount, 0, 120) },
        expiry_reminder_days: check.integer("expiry_reminder_days", reminder, 0, 365),
        activity_rules: rows.map((row, i) => {
          const path = `activity_rules[${i}]`;
          return {
            activity_type: check.text(`${path}.activity_type`, row.type, { required: true, pattern: ACTIVITY_TYPE, message: t.activityTypeInvalid }),
            points: check.integer(`${path}.points`, row.points, 1, MAX_POINTS),
            active: check.checked(`${path}.active`, row.active),
            cap_count: check.integer(`${path}.cap_count`, row.cap, 0, MAX_INT32),
            cap_period: check.choice<CapPeriod>(`${path}.cap_period`, row.period),
            once_per_ref: check.checked(`${path}.once_per_ref`, row.once),
          };
        }),
        checkout: check.checked("checkout", checkoutOn)
          ? {
              points: check.integer("checkout.points", checkoutPoints, 1, MAX_POINTS),
              amount_minor: check.integer("checkout.amount_minor", checkoutAmount, 1, MAX_POINTS),
              min_points: check.integer("checkout.min_points", checkoutMin, 0, MAX_POINTS),
              max_share_bp: check.integer("checkout.max_share_bp", checkoutShare, 1, 10_000),
              step_points: check.integer("checkout.step_points", checkoutStep, 0, MAX_POINTS),
            }
          : undefined,
        expected_version: settings.version,
      };
      return body;
    },
    send: (body, key) => {
      // The currency as it is sent (in capitals).
      currency.input.value = body.currency;
      return context.api.putSettings(body, key);
    },
    saved: (answer) => {
      context.say(fill(t.earningSaved, { version: fmt.number(answer.version) }));
      saved(answer);
    },
  });
  return form;
}
