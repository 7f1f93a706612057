// The rewards catalog (`/v1/rewards`, archived ones included): each reward
// with its cost and stock, made, changed and archived here. A reward's PUT
// replaces it whole, so an edit sends back what the form does not show
// (its eligible tiers, its dates) as it was read, with the version it was
// read at (`expected_version`): a reward changed meanwhile is refused (409
// `VERSION_MISMATCH`) and the form shows the "changed meanwhile" warning.

import { Action, Problem, Reward, RewardBody, RewardKind, Tier } from "./api";
import { Context } from "./context";
import { checkbox, h, table } from "./dom";
import {
  areaField,
  busy,
  CURRENCY,
  MAX_AMOUNT_MINOR,
  MAX_DAYS,
  MAX_ID_CHARS,
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

const KINDS: RewardKind[] = ["fixed_discount", "percent_discount", "free_shipping", "free_product", "custom"];

export function catalogPart(context: Context, body: HTMLElement): void {
  const { t, fmt } = context;
  const listHeading = h("h3", { id: "catalog-heading", tabindex: "-1" }, t.catalogTitle);
  const formHeading = h("h3", { id: "reward-form-heading", tabindex: "-1" });
  const rewardsTable = table(
    [{ label: t.colReward }, { label: t.colKind }, { label: t.colCost, numeric: true }, { label: t.colStock }, { label: t.colStatus }, { label: t.colActions }],
    t.catalogTitle,
  );
  const empty = h("p", { class: "muted" }, t.catalogEmpty);
  const editorSlot = h("div", { class: "view" });
  let rewards: Reward[] = [];
  let tiers: Tier[] = [];
  let currency = "";
  /** Which reward the form edits (null: a new one). */
  let editing: Reward | null = null;
  const archiving = new Action();

  /** The catalog, program currency and tiers as stored now; false (and a notice) when the catalog cannot be read. */
  const load = async (): Promise<boolean> => {
    const [list, ladder, settings] = await Promise.allSettled([context.api.rewards(true), context.api.ladder(), context.api.settings()]);
    if (!context.alive()) return false;
    if (list.status === "rejected") {
      body.replaceChildren(unavailable(context, list.reason, "rewards"));
      context.fail(list.reason);
      return false;
    }
    rewards = list.value;
    tiers = ladder.status === "fulfilled" ? ladder.value.tiers : [];
    currency = settings.status === "fulfilled" ? settings.value.currency : "";
    showList();
    return true;
  };

  const showList = () => {
    rewardsTable.body.replaceChildren(...rewards.map(row));
    rewardsTable.table.hidden = rewards.length === 0;
    empty.hidden = rewards.length > 0;
  };

  const row = (reward: Reward): HTMLTableRowElement => {
    const archived = reward.archived === true;
    const actions: HTMLElement[] = [];
    if (!archived) {
      const edit = h("button", { type: "button", class: "secondary", "aria-label": fill(t.editRewardLabel, { name: reward.name }) }, t.edit);
      edit.addEventListener("click", () => {
        openEditor(reward);
        formHeading.focus();
      });
      const archive = h("button", { type: "button", class: "danger", "aria-label": fill(t.archiveRewardLabel, { name: reward.name }) }, t.archive);
      archive.addEventListener("click", () => void archiveReward(reward, archive));
      actions.push(edit, archive);
    }
    const stock =
      reward.total_stock === undefined
        ? t.stockUnlimited
        : fill(t.stockLeft, { left: fmt.number(reward.remaining_stock ?? 0), total: fmt.number(reward.total_stock) });
    return h(
      "tr",
      { "data-testid": "reward-row", "data-reward": reward.reward_id, "data-status": archived ? "archived" : "active" },
      h("th", { scope: "row" }, reward.name, reward.description ? h("span", { class: "hint block" }, reward.description) : null),
      h("td", {}, describe(context, reward)),
      h("td", { class: "num" }, fmt.number(reward.point_cost)),
      h("td", { "data-testid": "reward-stock" }, stock),
      h("td", { "data-testid": "reward-status" }, archived ? t.rewardArchived : t.rewardOffered),
      h("td", { class: "row-actions" }, ...actions),
    );
  };

  const archiveReward = async (reward: Reward, button: HTMLButtonElement) => {
    if (!window.confirm(fill(t.archiveConfirm, { name: reward.name }))) return;
    button.disabled = true;
    try {
      await context.api.archiveReward(reward.reward_id, archiving.keyFor({ archive: reward.reward_id }));
      archiving.settled();
      if (!context.alive()) return;
      context.say(fill(t.rewardArchivedSaid, { name: reward.name }));
      if (editing?.reward_id === reward.reward_id) openEditor(null);
      await load();
      listHeading.focus();
    } catch (error) {
      archiving.settled(error);
      button.disabled = false;
      context.fail(error);
    }
  };

  /** The form, for `reward` or a new one. */
  const openEditor = (reward: Reward | null) => {
    editing = reward;
    formHeading.textContent = reward ? fill(t.editRewardTitle, { name: reward.name }) : t.newRewardTitle;
    editorSlot.replaceChildren(
      rewardForm(context, reward, tiers, currency, {
        saved: async (answer, created) => {
          context.say(fill(created ? t.rewardCreated : t.rewardSaved, { name: answer.name }));
          openEditor(null);
          await load();
          listHeading.focus();
        },
        cancel: () => {
          openEditor(null);
          listHeading.focus();
        },
        reload: async () => {
          if (!(await load())) return;
          openEditor(rewards.find((r) => r.reward_id === reward?.reward_id) ?? null);
          formHeading.focus();
        },
      }),
    );
  };

  void load().then((ok) => {
    body.setAttribute("aria-busy", "false");
    if (!ok) return;
    openEditor(null);
    body.replaceChildren(
      h("section", { class: "panel", "aria-labelledby": listHeading.id, "data-testid": "catalog" }, listHeading, rewardsTable.table, empty),
      h("section", { class: "panel", "aria-labelledby": formHeading.id, "data-testid": "reward-editor" }, formHeading, editorSlot),
    );
  });
}

/** What a reward gives: "€5.00 off", "10% off", "Free shipping". */
function describe(context: Context, reward: Reward): string {
  const { t, fmt, lang } = context;
  switch (reward.kind) {
    case "fixed_discount":
      return fill(t.rewardAmountOff, { amount: fmt.money(reward.amount_minor ?? 0, reward.currency ?? "") });
    case "percent_discount": {
      const percent = new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 2 }).format((reward.percent_bp ?? 0) / 10_000);
      return fill(t.rewardPercentOff, { percent });
    }
    case "free_product":
      return fill(t.rewardFreeProduct, { sku: reward.sku ?? "" });
    default:
      return named(t, "rewardKind", reward.kind ?? "custom");
  }
}

interface Handlers {
  saved(answer: Reward, created: boolean): Promise<void>;
  cancel(): void;
  reload(): Promise<void>;
}

function rewardForm(context: Context, reward: Reward | null, tiers: Tier[], currency: string, on: Handlers): HTMLFormElement {
  const { t, fmt } = context;
  const action = new Action();
  const name = textField("reward-name", t.rewardName, reward?.name ?? "");
  const description = areaField("reward-description", t.rewardDescription, reward?.description ?? "", t.rewardDescriptionHint);
  const kind = selectField("reward-kind", t.rewardKindLabel, KINDS.map((k) => [k, named(t, "rewardKind", k)]), reward?.kind ?? "fixed_discount");
  const amount = numberField("reward-amount", t.rewardAmount, reward?.amount_minor, minorHint(context));
  const rewardCurrency = textField("reward-currency", t.currency, reward?.currency ?? currency, t.rewardCurrencyHint, {
    spellcheck: "false",
    autocapitalize: "characters",
    maxlength: 3,
    class: "short",
  });
  const percent = numberField("reward-percent", t.rewardPercent, reward?.percent_bp, fill(t.rewardPercentHint, { example: fmt.number(1_000), percent: fmt.percent(10) }));
  const sku = textField("reward-sku", t.rewardSku, reward?.sku ?? "", undefined, { spellcheck: "false" });
  const cost = numberField("reward-cost", t.rewardCost, reward?.point_cost);
  const stock = numberField("reward-stock", t.rewardStock, reward?.total_stock, t.rewardStockHint);
  const limit = numberField("reward-limit", t.rewardLimit, reward?.per_customer_limit ?? 0, t.rewardLimitHint);
  const limitDays = numberField("reward-limit-days", t.rewardLimitDays, reward?.limit_period_days || undefined, t.rewardLimitDaysHint);
  const validity = numberField("reward-validity", t.rewardValidity, reward?.voucher_validity_days ?? 90);
  const refund = checkbox("reward-refund", t.rewardRefund, reward?.refund_expired ?? false);
  const tierOptions: [string, string][] = [["", t.anyone], ...tiers.map((tier): [string, string] => [tier.tier_id, tier.name])];
  const minimum = reward?.minimum_tier_id ?? "";
  if (minimum && !tiers.some((tier) => tier.tier_id === minimum)) tierOptions.push([minimum, minimum]);
  const tier = selectField("reward-tier", t.rewardTier, tierOptions, minimum, t.rewardTierHint);
  const showKind = () => {
    const chosen = kind.input.value;
    amount.block.hidden = rewardCurrency.block.hidden = chosen !== "fixed_discount";
    percent.block.hidden = chosen !== "percent_discount";
    sku.block.hidden = chosen !== "free_product";
  };
  kind.input.addEventListener("change", showKind);
  showKind();

  const submit = h("button", { type: "submit" }, reward ? t.saveReward : t.createReward);
  const cancel = h("button", { type: "button", class: "secondary" }, t.cancelEditing);
  cancel.addEventListener("click", () => on.cancel());
  const conflict = h("div");
  const form = h(
    "form",
    { class: "stacked", novalidate: true, "data-testid": "reward-form" },
    h("div", { class: "fields" }, name.block, kind.block, amount.block, rewardCurrency.block, percent.block, sku.block),
    description.block,
    h("div", { class: "fields" }, cost.block, stock.block, limit.block, limitDays.block, validity.block, tier.block),
    refund.block,
    conflict,
    h("div", { class: "actions" }, submit, reward ? cancel : null),
  );

  onSave(context, {
    form,
    submit,
    conflict,
    reload: () => void on.reload(),
    read: (check) => {
      const chosen = check.choice<RewardKind>("kind", kind);
      const fixed = chosen === "fixed_discount";
      const rewardName = check.text("name", name, { required: true, max: 200 });
      const perCustomer = check.integer("per_customer_limit", limit, 0, MAX_INT32);
      const body: RewardBody = {
        name: rewardName,
        description: check.text("description", description, { max: 2_000 }),
        kind: chosen,
        amount_minor: fixed ? check.integer("amount_minor", amount, 1, MAX_AMOUNT_MINOR) : undefined,
        currency: fixed ? check.text("currency", rewardCurrency, { required: true, pattern: CURRENCY, message: t.rewardCurrencyInvalid, upper: true }) : undefined,
        percent_bp: chosen === "percent_discount" ? check.integer("percent_bp", percent, 1, 10_000) : undefined,
        sku: chosen === "free_product" ? check.text("sku", sku, { required: true, max: MAX_ID_CHARS }) : undefined,
        point_cost: check.integer("point_cost", cost, 1, MAX_POINTS),
        total_stock: check.optionalInteger("total_stock", stock, 0, Number.MAX_SAFE_INTEGER),
        per_customer_limit: perCustomer,
        limit_period_days: perCustomer > 0 ? check.integer("limit_period_days", limitDays, 1, MAX_DAYS) : (check.optionalInteger("limit_period_days", limitDays, 0, MAX_DAYS) ?? 0),
        voucher_validity_days: check.integer("voucher_validity_days", validity, 1, MAX_DAYS),
        refund_expired: check.checked("refund_expired", refund),
        minimum_tier_id: check.choice("minimum_tier_id", tier) || undefined,
        // Not on the form: sent back as they were, since a PUT replaces the reward whole.
        eligible_tier_ids: reward?.eligible_tier_ids ?? [],
        starts_at: reward?.starts_at,
        ends_at: reward?.ends_at,
        expected_version: reward?.version,
      };
      return body;
    },
    send: (body, key) => (reward ? context.api.updateReward(reward.reward_id, body, key) : context.api.createReward(body, key)),
    saved: (answer) => on.saved(answer, reward === null),
  });
  return form;
}
