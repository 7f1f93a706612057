// Campaigns (`/v1/campaigns`): the running and upcoming ones (and the ended
// ones when asked), those running now marked as such; a new one made here,
// a running or upcoming one ended here. The list's "ended" is the API's:
// `ends_at` passed, or an upcoming campaign ended before it began (the API
// then sets its end to its start).

import { Action, Campaign, CampaignBody, CampaignKind, Problem, Tier } from "./api";
import { Context } from "./context";
import { checkbox, h, table } from "./dom";
import {
  ACTIVITY_TYPE,
  busy,
  Checker,
  choicesField,
  localMoment,
  MAX_POINTS,
  numberField,
  selectField,
  textField,
  unavailable,
} from "./forms";
import { fill, named } from "./i18n";

const KINDS: CampaignKind[] = ["multiplier", "bonus"];
const SEGMENTS = ["new", "active", "loyal", "at_risk", "churned"];
const DAY_MS = 86_400_000;

type Phase = "active" | "upcoming" | "ended";

/** Running now, still to come, or over (a campaign whose end is not after its start never runs). */
function phase(campaign: Campaign, now: number): Phase {
  const start = Date.parse(campaign.starts_at ?? "");
  const end = Date.parse(campaign.ends_at ?? "");
  if (!(end > start) || end <= now) return "ended";
  return start <= now ? "active" : "upcoming";
}

export function campaignsPart(context: Context, body: HTMLElement): void {
  const { t, fmt } = context;
  const listHeading = h("h3", { id: "campaigns-heading", tabindex: "-1" }, t.campaignsListTitle);
  const formHeading = h("h3", { id: "campaign-form-heading", tabindex: "-1" }, t.newCampaignTitle);
  const showEnded = checkbox("campaigns-ended", t.showEnded, false);
  const campaignsTable = table(
    [
      { label: t.colCampaign },
      { label: t.colEffect },
      { label: t.colAppliesTo },
      { label: t.colStarts },
      { label: t.colEnds },
      { label: t.colStatus },
      { label: t.colActions },
    ],
    t.campaignsListTitle,
  );
  const empty = h("p", { class: "muted", "data-testid": "campaigns-empty" }, t.campaignsEmpty);
  const formSlot = h("div");
  let tiers: Tier[] = [];
  const ending = new Action();

  const tierName = (id: string) => tiers.find((tier) => tier.tier_id === id)?.name ?? id;

  const list = async (): Promise<boolean> => {
    try {
      const campaigns = await context.api.campaigns((showEnded.input as HTMLInputElement).checked);
      if (!context.alive()) return false;
      const now = Date.now();
      campaignsTable.body.replaceChildren(...campaigns.map((campaign) => row(campaign, now)));
      campaignsTable.table.hidden = campaigns.length === 0;
      empty.hidden = campaigns.length > 0;
      return true;
    } catch (error) {
      if (!context.alive()) return false;
      body.replaceChildren(unavailable(context, error, "points"));
      context.fail(error);
      return false;
    }
  };

  const row = (campaign: Campaign, now: number): HTMLTableRowElement => {
    const state = phase(campaign, now);
    const factor = new Intl.NumberFormat(context.lang, { maximumFractionDigits: 2 }).format((campaign.multiplier_bp ?? 0) / 10_000);
    const effect = campaign.kind === "multiplier" ? fill(t.effectMultiplier, { factor }) : fill(t.effectBonus, { points: fmt.number(campaign.bonus_points ?? 0) });
    const scope = [campaign.applies_to.length ? campaign.applies_to.join(", ") : t.everyEarn];
    if (campaign.tier_ids.length) scope.push(fill(t.onlyTiers, { tiers: campaign.tier_ids.map(tierName).join(", ") }));
    if (campaign.segment_ids.length) scope.push(fill(t.onlySegments, { segments: campaign.segment_ids.map((s) => named(t, "segment", s)).join(", ") }));
    let action: HTMLElement | null = null;
    if (state !== "ended") {
      const end = h("button", { type: "button", class: "danger", "aria-label": fill(t.endCampaignLabel, { name: campaign.name }) }, t.endCampaign);
      end.addEventListener("click", () => void endCampaign(campaign, end));
      action = end;
    }
    return h(
      "tr",
      { "data-testid": "campaign-row", "data-campaign": campaign.campaign_id, "data-status": state },
      h("th", { scope: "row" }, campaign.name),
      h("td", {}, effect),
      h("td", {}, scope.join("; ")),
      h("td", { class: "when" }, fmt.dateTime(campaign.starts_at)),
      h("td", { class: "when" }, fmt.dateTime(campaign.ends_at)),
      h("td", { "data-testid": "campaign-status" }, h("span", { class: `badge ${state}` }, named(t, "phase", state))),
      h("td", { class: "row-actions" }, action),
    );
  };

  const endCampaign = async (campaign: Campaign, button: HTMLButtonElement) => {
    if (!window.confirm(fill(t.endConfirm, { name: campaign.name }))) return;
    button.disabled = true;
    try {
      await context.api.endCampaign(campaign.campaign_id, ending.keyFor({ end: campaign.campaign_id }));
      ending.settled();
      if (!context.alive()) return;
      context.say(fill(t.campaignEndedSaid, { name: campaign.name }));
      if (await list()) listHeading.focus();
    } catch (error) {
      ending.settled(error);
      button.disabled = false;
      context.fail(error);
    }
  };

  const newForm = () =>
    formSlot.replaceChildren(
      campaignForm(context, tiers, async (made) => {
        context.say(fill(t.campaignCreated, { name: made.name }));
        newForm();
        if (await list()) listHeading.focus();
      }),
    );

  showEnded.input.addEventListener("change", () => void list());

  void (async () => {
    const ladder = await context.api.ladder().catch(() => null);
    if (!context.alive()) return;
    tiers = ladder?.tiers ?? [];
    const ok = await list();
    body.setAttribute("aria-busy", "false");
    if (!ok) return;
    newForm();
    body.replaceChildren(
      h("section", { class: "panel", "aria-labelledby": listHeading.id, "data-testid": "campaigns" }, listHeading, showEnded.block, campaignsTable.table, empty),
      h("section", { class: "panel", "aria-labelledby": formHeading.id, "data-testid": "campaign-editor" }, formHeading, formSlot),
    );
  })();
}

function campaignForm(context: Context, tiers: Tier[], created: (campaign: Campaign) => Promise<void>): HTMLFormElement {
  const { t, fmt } = context;
  const action = new Action();
  const now = new Date();
  const name = textField("campaign-name", t.campaignName, "");
  const kind = selectField("campaign-kind", t.campaignKindLabel, KINDS.map((k) => [k, named(t, "campaignKind", k)]), "multiplier");
  const multiplier = numberField("campaign-multiplier", t.campaignMultiplier, 20_000, fill(t.campaignMultiplierHint, { double: fmt.number(20_000) }));
  const bonus = numberField("campaign-bonus", t.campaignBonus, undefined);
  const starts = textField("campaign-starts", t.campaignStarts, localMoment(now), t.localTimeHint, { type: "datetime-local" });
  const ends = textField("campaign-ends", t.campaignEnds, localMoment(new Date(now.getTime() + 7 * DAY_MS)), t.localTimeHint, { type: "datetime-local" });
  const appliesTo = textField("campaign-applies", t.appliesTo, "", t.appliesToHint, { spellcheck: "false" });
  const tierChoices = tiers.length
    ? choicesField("campaign-tiers", t.campaignTiers, tiers.map((tier): [string, string] => [tier.tier_id, tier.name]), [], t.everyoneHint)
    : null;
  const segmentChoices = choicesField("campaign-segments", t.campaignSegments, SEGMENTS.map((s): [string, string] => [s, named(t, "segment", s)]), [], t.everyoneHint);
  const showKind = () => {
    multiplier.block.hidden = kind.input.value !== "multiplier";
    bonus.block.hidden = kind.input.value !== "bonus";
  };
  kind.input.addEventListener("change", showKind);
  showKind();

  const submit = h("button", { type: "submit" }, t.createCampaign);
  const form = h(
    "form",
    { class: "stacked", novalidate: true, "data-testid": "campaign-form" },
    h("div", { class: "fields" }, name.block, kind.block, multiplier.block, bonus.block, starts.block, ends.block),
    appliesTo.block,
    tierChoices?.block,
    segmentChoices.block,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const check = new Checker(context);
    const chosen = check.choice<CampaignKind>("kind", kind);
    const body: CampaignBody = {
      name: check.text("name", name, { required: true, max: 200 }),
      kind: chosen,
      multiplier_bp: chosen === "multiplier" ? check.integer("multiplier_bp", multiplier, 10_001, 100_000) : undefined,
      bonus_points: chosen === "bonus" ? check.integer("bonus_points", bonus, 1, MAX_POINTS) : undefined,
      starts_at: check.moment("starts_at", starts),
      ends_at: check.moment("ends_at", ends),
      applies_to: check.list("applies_to", appliesTo, /[,\s]+/, 100, (target) => ACTIVITY_TYPE.test(target), t.appliesToInvalid),
      tier_ids: tierChoices ? check.chosen("tier_ids", tierChoices) : [],
      segment_ids: check.chosen("segment_ids", segmentChoices),
    };
    if (!check.passed()) return;
    const done = busy(submit, t.saving);
    try {
      const made = await context.api.createCampaign(body, action.keyFor(body));
      action.settled();
      if (!context.alive()) return;
      await created(made);
    } catch (error) {
      action.settled(error);
      if (!context.alive()) return;
      context.fail(error);
      if (error instanceof Problem) check.refused(error);
    } finally {
      done();
    }
  });
  return form;
}
