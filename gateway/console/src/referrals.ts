// Referral settings (`GET`/`PUT /v1/referrals/settings`): whether referrals
// are on, what each side gets (points, or a voucher of a reward in the
// catalog), the friend's qualifying order and the windows. As for the earning
// rules and the ladder, a save sends the version the form was loaded at as
// `expected_version`, and a change made meanwhile (409 `VERSION_MISMATCH`)
// gets the "changed meanwhile" warning instead of being overwritten.

import { Action, ReferralSettings, ReferralSettingsBody, Reward } from "./api";
import { Context } from "./context";
import { checkbox, h } from "./dom";
import {
  loadPart,
  MAX_AMOUNT_MINOR,
  MAX_DAYS,
  MAX_INT32,
  MAX_POINTS,
  minorHint,
  numberField,
  onSave,
  selectField,
  unavailable,
} from "./forms";
import { fill } from "./i18n";

export function referralsPart(context: Context, body: HTMLElement, heading: HTMLElement): void {
  /** The settings, and the active rewards a voucher may be of (none when the catalog cannot be read). */
  const read = async (): Promise<[ReferralSettings, Reward[]]> => {
    const [settings, rewards] = await Promise.allSettled([context.api.referralSettings(), context.api.rewards()]);
    if (settings.status === "rejected") throw settings.reason;
    return [settings.value, rewards.status === "fulfilled" ? rewards.value : []];
  };
  const load = (focus: boolean) =>
    loadPart(
      context,
      body,
      read,
      ([settings, rewards]) => [referralForm(context, settings, rewards, (answer) => show(answer, rewards), () => void load(true))],
      (error) => [unavailable(context, error, "referral")],
    ).then(() => {
      if (focus && context.alive()) heading.focus();
    });
  const show = (settings: ReferralSettings, rewards: Reward[]) => {
    body.replaceChildren(referralForm(context, settings, rewards, (answer) => show(answer, rewards), () => void load(true)));
    heading.focus();
  };
  void load(false);
}

function referralForm(
  context: Context,
  settings: ReferralSettings,
  rewards: Reward[],
  saved: (settings: ReferralSettings) => void,
  reload: () => void,
): HTMLFormElement {
  const { t, fmt } = context;
  const action = new Action();
  const enabled = checkbox("referral-enabled", t.referralsOn, settings.enabled, t.referralsOnHint);
  const referrerPoints = numberField("referrer-points", t.referrerPoints, settings.referrer_points);
  const refereePoints = numberField("referee-points", t.refereePoints, settings.referee_points);
  const minimum = numberField("referral-minimum", t.referralMinimum, settings.minimum_order_minor, minorHint(context));
  const cap = numberField("referral-cap", t.referralCap, settings.cap_count, t.referralCapHint);
  const capDays = numberField("referral-cap-days", t.referralCapDays, settings.cap_period_days);
  const attribution = numberField("attribution-days", t.attributionDays, settings.attribution_window_days, t.attributionDaysHint);
  const clawback = numberField("clawback-days", t.clawbackDays, settings.clawback_window_days, t.clawbackDaysHint);
  const voucherOptions = (current: string | undefined): [string, string][] => {
    const options: [string, string][] = [["", t.noVoucher], ...rewards.map((reward): [string, string] => [reward.reward_id, reward.name])];
    if (current && !rewards.some((reward) => reward.reward_id === current)) options.push([current, current]);
    return options;
  };
  const refereeReward = selectField("referee-reward", t.refereeReward, voucherOptions(settings.referee_reward_id), settings.referee_reward_id ?? "");
  const referrerReward = selectField("referrer-reward", t.referrerReward, voucherOptions(settings.referrer_reward_id), settings.referrer_reward_id ?? "", t.referrerRewardHint);

  const submit = h("button", { type: "submit" }, t.saveReferrals);
  const conflict = h("div");
  const form = h(
    "form",
    { class: "stacked", novalidate: true, "data-testid": "referral-form" },
    enabled.block,
    h("fieldset", {}, h("legend", {}, t.referralRewardsLegend), h("div", { class: "fields" }, referrerPoints.block, refereePoints.block, referrerReward.block, refereeReward.block)),
    h("fieldset", {}, h("legend", {}, t.referralRulesLegend), h("div", { class: "fields" }, minimum.block, attribution.block, clawback.block, cap.block, capDays.block)),
    conflict,
    h("div", { class: "actions" }, submit, h("p", { class: "hint", "data-testid": "referral-version" }, fill(t.loadedVersion, { version: fmt.number(settings.version) }))),
  );

  onSave(context, {
    form,
    submit,
    conflict,
    reload,
    read: (check) => {
      const body: ReferralSettingsBody = {
        enabled: check.checked("enabled", enabled),
        referrer_points: check.integer("referrer_points", referrerPoints, 0, MAX_POINTS),
        referee_points: check.integer("referee_points", refereePoints, 0, MAX_POINTS),
        referrer_reward_id: check.choice("referrer_reward_id", referrerReward),
        referee_reward_id: check.choice("referee_reward_id", refereeReward),
        minimum_order_minor: check.integer("minimum_order_minor", minimum, 0, MAX_AMOUNT_MINOR),
        attribution_window_days: check.integer("attribution_window_days", attribution, 1, MAX_DAYS),
        clawback_window_days: check.integer("clawback_window_days", clawback, 0, MAX_DAYS),
        cap_count: check.integer("cap_count", cap, 0, MAX_INT32),
        cap_period_days: check.integer("cap_period_days", capDays, 1, MAX_DAYS),
        expected_version: settings.version,
      };
      return body;
    },
    send: (body, key) => context.api.putReferralSettings(body, key),
    saved: (answer) => {
      context.say(t.referralsSaved);
      saved(answer);
    },
  });
  return form;
}
