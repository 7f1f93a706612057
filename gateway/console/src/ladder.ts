// The tier ladder (`GET`/`PUT /v1/tiers/ladder`): the tiers, lowest first,
// with their thresholds, multipliers, perks and benefits; the qualifying
// window, the downgrade policy and what qualifies. A save sends the version
// the form was loaded at as `expected_version`: a change made meanwhile
// answers 409 `VERSION_MISMATCH`, and the form says so instead of
// overwriting it.

import { Action, DowngradeKind, Ladder, LadderBody, QualificationBasis, Tier, WindowKind } from "./api";
import { Context } from "./context";
import { checkbox, Field, h } from "./dom";
import {
  ACTIVITY_TYPE,
  areaField,
  loadPart,
  MAX_ID_CHARS,
  numberField,
  onSave,
  selectField,
  textField,
  unavailable,
} from "./forms";
import { fill, named } from "./i18n";

const WINDOW_KINDS: WindowKind[] = ["lifetime", "calendar_year", "rolling_days"];
const DOWNGRADE_KINDS: DowngradeKind[] = ["immediate", "grace_days", "end_of_next_period"];
const BASES: QualificationBasis[] = ["all_earned", "order_points_base", "order_points_all", "spend"];
/** The most tiers a ladder may have. */
const MAX_TIERS = 50;
const ONE_X = 10_000;
const TEN_X = 100_000;

export function ladderPart(context: Context, body: HTMLElement, heading: HTMLElement): void {
  const load = (focus: boolean) =>
    loadPart(
      context,
      body,
      () => context.api.ladder(),
      (ladder) => [ladderForm(context, ladder, show, () => void load(true))],
      (error) => [unavailable(context, error, "tiers")],
    ).then(() => {
      if (focus && context.alive()) heading.focus();
    });
  const show = (ladder: Ladder) => {
    body.replaceChildren(ladderForm(context, ladder, show, () => void load(true)));
    heading.focus();
  };
  void load(false);
}

interface TierRow {
  block: HTMLFieldSetElement;
  legend: HTMLLegendElement;
  up: HTMLButtonElement;
  down: HTMLButtonElement;
  remove: HTMLButtonElement;
  id: Field;
  name: Field;
  threshold: Field;
  multiplier: Field;
  hidden: Field;
  perks: Field;
  shipping: Field;
  early: Field;
  birthday: Field;
  flags: Field;
}

function ladderForm(context: Context, ladder: Ladder, saved: (ladder: Ladder) => void, reload: () => void): HTMLFormElement {
  const { t, fmt } = context;
  const action = new Action();
  const multiplierHint = fill(t.multiplierHint, {
    base: fmt.number(ONE_X),
    example: fmt.number(15_000),
    factor: new Intl.NumberFormat(context.lang).format(1.5),
  });

  // ---- the tiers, lowest first
  const rows: TierRow[] = [];
  const list = h("div", { class: "rows" });
  let serial = 0;
  const arrange = () => {
    list.replaceChildren(...rows.map((row) => row.block));
    rows.forEach((row, i) => {
      const n = fmt.number(i + 1);
      row.legend.textContent = fill(t.tierLegend, { n });
      row.up.setAttribute("aria-label", fill(t.moveTierUp, { n }));
      row.down.setAttribute("aria-label", fill(t.moveTierDown, { n }));
      row.remove.setAttribute("aria-label", fill(t.removeTier, { n }));
      row.up.disabled = i === 0;
      row.down.disabled = i === rows.length - 1;
    });
    add.disabled = rows.length >= MAX_TIERS;
  };
  const move = (row: TierRow, by: number, button: HTMLButtonElement) => {
    const from = rows.indexOf(row);
    rows.splice(from, 1);
    rows.splice(from + by, 0, row);
    arrange();
    (button.disabled ? row.id.input : button).focus();
  };
  const addTier = (tier: Tier | null): TierRow => {
    const n = ++serial;
    const id = `tier-${n}`;
    const row: TierRow = {
      block: h("fieldset", { class: "row", "data-testid": "tier" }),
      legend: h("legend"),
      up: h("button", { type: "button", class: "secondary" }, t.moveUp),
      down: h("button", { type: "button", class: "secondary" }, t.moveDown),
      remove: h("button", { type: "button", class: "danger" }, t.remove),
      // A stored tier keeps its id: members hold it (and rewards and campaigns may name it).
      id: textField(`${id}-id`, t.tierId, tier?.tier_id ?? "", tier ? t.tierIdFixed : t.tierIdHint, { spellcheck: "false", readonly: tier !== null }),
      name: textField(`${id}-name`, t.tierName, tier?.name ?? ""),
      threshold: numberField(`${id}-threshold`, t.threshold, tier?.threshold, t.thresholdHint),
      multiplier: numberField(`${id}-multiplier`, t.multiplier, tier?.multiplier_bp ?? ONE_X, multiplierHint),
      hidden: checkbox(`${id}-hidden`, t.tierHidden, tier?.hidden ?? false),
      perks: areaField(`${id}-perks`, t.perks, (tier?.perks ?? []).join("\n"), t.perksHint),
      shipping: checkbox(`${id}-shipping`, t.freeShipping, tier?.benefits.free_shipping ?? false),
      early: numberField(`${id}-early`, t.earlyAccess, tier?.benefits.early_access_hours ?? 0, fill(t.earlyAccessHint, { max: fmt.number(8_760) })),
      birthday: numberField(`${id}-birthday`, t.birthdayMultiplier, tier?.benefits.birthday_multiplier_bp ?? 0, fill(t.birthdayMultiplierHint, { double: fmt.number(2 * ONE_X) })),
      flags: textField(`${id}-flags`, t.flags, (tier?.benefits.flags ?? []).join(", "), t.flagsHint, { spellcheck: "false" }),
    };
    row.block.append(
      row.legend,
      h("div", { class: "fields" }, row.id.block, row.name.block, row.threshold.block, row.multiplier.block, row.hidden.block),
      h("div", { class: "fields" }, row.perks.block, row.shipping.block, row.early.block, row.birthday.block, row.flags.block),
      h("div", { class: "row-actions" }, row.up, row.down, row.remove),
    );
    row.up.addEventListener("click", () => move(row, -1, row.up));
    row.down.addEventListener("click", () => move(row, 1, row.down));
    row.remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(row), 1);
      arrange();
      add.focus();
    });
    rows.push(row);
    return row;
  };
  const add = h("button", { type: "button", class: "secondary", "data-testid": "add-tier" }, t.addTier);
  add.addEventListener("click", () => {
    const row = addTier(null);
    arrange();
    row.id.input.focus();
  });
  ladder.tiers.forEach(addTier);
  arrange();

  // ---- how members qualify and fall back
  const windowKind = selectField("window-kind", t.windowKind, WINDOW_KINDS.map((kind) => [kind, named(t, "window", kind)]), ladder.window.kind);
  const windowDays = numberField("window-days", t.windowDays, ladder.window.days || 365);
  const downgradeKind = selectField("downgrade-kind", t.downgradeKind, DOWNGRADE_KINDS.map((kind) => [kind, named(t, "downgrade", kind)]), ladder.downgrade.kind);
  const graceDays = numberField("grace-days", t.graceDays, ladder.downgrade.grace_days || 30);
  const basis = selectField("basis", t.basis, BASES.map((b) => [b, named(t, "basis", b)]), ladder.qualification_basis, t.basisHint);
  const showDays = () => {
    windowDays.block.hidden = windowKind.input.value !== "rolling_days";
    graceDays.block.hidden = downgradeKind.input.value !== "grace_days";
  };
  windowKind.input.addEventListener("change", showDays);
  downgradeKind.input.addEventListener("change", showDays);
  showDays();

  const submit = h("button", { type: "submit" }, t.saveLadder);
  const conflict = h("div");
  const form = h(
    "form",
    { class: "stacked", novalidate: true, "data-testid": "ladder-form" },
    h("fieldset", {}, h("legend", {}, t.tiersLegend), h("p", { class: "hint" }, t.tiersHint), list, h("div", {}, add)),
    h(
      "fieldset",
      {},
      h("legend", {}, t.qualifyLegend),
      h("div", { class: "fields" }, windowKind.block, windowDays.block, downgradeKind.block, graceDays.block, basis.block),
    ),
    conflict,
    h("div", { class: "actions" }, submit, h("p", { class: "hint", "data-testid": "ladder-version" }, fill(t.loadedVersion, { version: fmt.number(ladder.version) }))),
  );

  onSave(context, {
    form,
    submit,
    conflict,
    reload,
    read: (check) => {
      /** 0 (none), or 1x to 10x. */
      const birthdayOf = (path: string, f: Field) => {
        const value = check.integer(path, f, 0, TEN_X);
        return value > 0 && value < ONE_X ? check.refuse(f, fill(t.birthdayMultiplierInvalid, { min: fmt.number(ONE_X), max: fmt.number(TEN_X) })) : value;
      };
      const tiers = rows.map((row, i): Tier => {
        const path = `tiers[${i}]`;
        return {
          tier_id: check.text(`${path}.tier_id`, row.id, { required: true, max: MAX_ID_CHARS }),
          name: check.text(`${path}.name`, row.name, { required: true, max: 100 }),
          threshold: check.integer(`${path}.threshold`, row.threshold, 0, Number.MAX_SAFE_INTEGER),
          multiplier_bp: check.integer(`${path}.multiplier_bp`, row.multiplier, ONE_X, TEN_X),
          hidden: check.checked(`${path}.hidden`, row.hidden),
          perks: check.list(`${path}.perks`, row.perks, /\n/, 50, (perk) => [...perk].length <= 200, fill(t.perksInvalid, { most: fmt.number(50), chars: fmt.number(200) })),
          benefits: {
            free_shipping: check.checked(`${path}.benefits.free_shipping`, row.shipping),
            early_access_hours: check.integer(`${path}.benefits.early_access_hours`, row.early, 0, 8_760),
            birthday_multiplier_bp: birthdayOf(`${path}.benefits.birthday_multiplier_bp`, row.birthday),
            flags: check.list(`${path}.benefits.flags`, row.flags, /[,\s]+/, 20, (flag) => ACTIVITY_TYPE.test(flag), fill(t.flagsInvalid, { most: fmt.number(20) })),
          },
        };
      });
      const kind = check.choice<WindowKind>("window.kind", windowKind);
      const downgrade = check.choice<DowngradeKind>("downgrade.kind", downgradeKind);
      const body: LadderBody = {
        tiers,
        window: kind === "rolling_days" ? { kind, days: check.integer("window.days", windowDays, 1, 3_660) } : { kind },
        downgrade: downgrade === "grace_days" ? { kind: downgrade, grace_days: check.integer("downgrade.grace_days", graceDays, 1, 730) } : { kind: downgrade },
        qualification_basis: check.choice<QualificationBasis>("qualification_basis", basis),
        expected_version: ladder.version,
      };
      return body;
    },
    send: (body, key) => context.api.putLadder(body, key),
    saved: (answer) => {
      context.say(fill(t.ladderSaved, { version: fmt.number(answer.version) }));
      saved(answer);
    },
  });
  return form;
}
