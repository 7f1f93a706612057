// The dashboard: the program's key figures over a period, two trend charts
// and the customers by segment, from the insights service, and the members
// by tier from the tiers service. Without insights (503
// `BACKEND_NOT_CONFIGURED` or `UNAVAILABLE`) it says so and shows what the
// points and rewards services can: the settings and the catalog's size.
// Without tiers, only the tiers' card says so.

import { Granularity, KpiReport, Ladder, Problem, SegmentCounts, Settings, SurveyScores, TierDistribution } from "./api";
import { lineChart } from "./charts";
import { Context, problemText, View } from "./context";
import { Child, facts, field, h, table } from "./dom";
import { unavailable } from "./forms";
import { counted, fill, Key, named } from "./i18n";

interface Period {
  days: number;
  granularity: Granularity;
  label: Key;
}

const PERIODS: Period[] = [
  { days: 7, granularity: "day", label: "period7" },
  { days: 30, granularity: "day", label: "period30" },
  { days: 90, granularity: "week", label: "period90" },
  { days: 365, granularity: "month", label: "period365" },
];

const PER: Record<Granularity, Key> = { day: "perDay", week: "perWeek", month: "perMonth" };
/** Pixels one period's label needs on a chart's x axis. */
const LABEL_WIDTH: Record<Granularity, number> = { day: 56, week: 112, month: 72 };
const SEGMENTS = ["new", "active", "loyal", "at_risk", "churned"];
const DAY_MS = 86_400_000;

/** The period picked last, kept while the page is open (a language switch re-renders the view). */
let chosen = 30;

export const dashboardView: View = (context, _route, root) => {
  const { t } = context;
  const select = h("select", {}, ...PERIODS.map((p) => h("option", { value: String(p.days) }, t[p.label])));
  select.value = String(chosen);
  const period = field("period", t.period, select);
  const refresh = h("button", { type: "submit", class: "secondary" }, t.refresh);
  const form = h("form", { class: "inline", novalidate: true }, period.block, h("div", { class: "actions" }, refresh));
  const content = h("div", { class: "view", "aria-busy": "true" }, h("p", { class: "muted" }, t.loading));
  root.append(h("h1", { tabindex: "-1" }, t.dashTitle), form, content);

  // Charts of the previous load let go of their observers when the next one replaces them.
  let cleanups: (() => void)[] = [];
  const scoped: Context = { ...context, onDispose: (cleanup) => cleanups.push(cleanup) };
  context.onDispose(() => cleanups.forEach((cleanup) => cleanup()));

  const load = async () => {
    cleanups.forEach((cleanup) => cleanup());
    cleanups = [];
    const picked = PERIODS.find((p) => p.days === chosen) ?? PERIODS[1];
    const to = new Date();
    const from = new Date(to.getTime() - (picked.days - 1) * DAY_MS);
    content.setAttribute("aria-busy", "true");
    refresh.disabled = true;
    const [kpis, segments, surveys, settings, distribution, ladder] = await Promise.allSettled([
      context.api.kpis(from, to, picked.granularity),
      context.api.segments(),
      context.api.surveys(from, to),
      context.api.settings(),
      context.api.tierDistribution(),
      context.api.ladder(),
    ]);
    if (!context.alive()) return;
    refresh.disabled = false;
    content.setAttribute("aria-busy", "false");
    const currency = settings.status === "fulfilled" ? settings.value.currency : "";
    const tiers = tierSection(context, distribution, ladder);
    if (kpis.status === "fulfilled") {
      content.replaceChildren(...insights(scoped, kpis.value, segments, surveys, currency), tiers);
      return;
    }
    const error = kpis.reason;
    if (error instanceof Problem && error.status === 503 && (error.code === "BACKEND_NOT_CONFIGURED" || error.code === "UNAVAILABLE")) {
      content.replaceChildren(...(await fallback(context, error.code, settings)), tiers);
      return;
    }
    content.replaceChildren();
    context.fail(error);
  };

  select.addEventListener("change", () => {
    chosen = Number(select.value);
    void load();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void load();
  });
  void load();
};

/** The numbers, the charts and the segments. */
function insights(
  context: Context,
  report: KpiReport,
  segments: PromiseSettledResult<SegmentCounts>,
  surveys: PromiseSettledResult<SurveyScores>,
  currency: string,
): Node[] {
  const { t, fmt } = context;
  const total = report.total;
  const nps = surveys.status === "fulfilled" ? surveys.value.nps : undefined;
  const cards: [Key, string, string, string?][] = [
    ["kpiMembers", fmt.number(total.members), "members"],
    ["kpiActive", fmt.number(total.active_members), "active-members", t.kpiActiveHint],
    ["kpiRepeat", fmt.percent(total.repeat_purchase_rate_percent), "repeat-purchase-rate"],
    ["kpiIssued", fmt.number(total.points_issued), "points-issued"],
    ["kpiRedeemed", fmt.number(total.points_redeemed), "points-redeemed"],
    ["kpiExpired", fmt.number(total.points_expired), "points-expired"],
    ["kpiOutstanding", fmt.number(total.points_outstanding), "points-outstanding"],
    [
      "kpiLiability",
      fmt.money(report.liability_minor, currency),
      "liability",
      fill(t.kpiLiabilityHint, { percent: fmt.percent(report.expected_redemption_percent) }),
    ],
    ["kpiRedemptionRate", fmt.percent(total.redemption_rate_percent), "redemption-rate"],
    ["kpiChurn", fmt.percent(total.churn_rate_percent), "churn-rate"],
    [
      "kpiNps",
      nps && nps.responses > 0 ? fmt.number(nps.nps) : "—",
      "nps",
      surveys.status === "rejected"
        ? problemText(t, surveys.reason)
        : nps && nps.responses > 0
          ? counted(t, context.lang, "kpiNpsAnswers", nps.responses, { count: fmt.number(nps.responses) })
          : t.kpiNpsNone,
    ],
  ];
  if (report.referrals) {
    const r = report.referrals;
    cards.push([
      "kpiReferrals",
      fmt.percent(r.conversion_percent),
      "referral-conversion",
      fill(t.kpiReferralsHint, { completed: fmt.number(r.completed), signedUp: fmt.number(r.signed_up) }),
    ]);
  }
  const figures = h(
    "dl",
    { class: "kpis" },
    ...cards.map(([label, value, testid, hint]) =>
      h("div", {}, h("dt", {}, t[label]), h("dd", { "data-kpi": testid }, h("span", { "data-testid": `kpi-${testid}` }, value), hint ? h("span", { class: "hint" }, hint) : null)),
    ),
  );

  const granularity = report.granularity;
  const labels = report.periods.map((p) => fmt.period(p.from, p.to, granularity));
  const caption = (what: string) => fill(t.captionPer, { what, per: t[PER[granularity] ?? "perDay"] });
  const common = { labels, labelWidth: LABEL_WIDTH[granularity] ?? 72, firstColumn: t.colPeriod };
  const pointsChart = lineChart(context, {
    ...common,
    testid: "chart-points",
    caption: caption(t.chartPoints),
    lines: [
      { label: t.kpiIssued, values: report.periods.map((p) => p.points_issued), color: "#0a58ca" },
      { label: t.kpiRedeemed, values: report.periods.map((p) => p.points_redeemed), color: "#1a7f37", dash: [8, 4] },
      { label: t.kpiExpired, values: report.periods.map((p) => p.points_expired), color: "#bf3989", dash: [2, 3] },
    ],
  });
  const membersChart = lineChart(context, {
    ...common,
    testid: "chart-members",
    caption: caption(t.chartMembers),
    lines: [
      { label: t.kpiMembers, values: report.periods.map((p) => p.members), color: "#0a58ca" },
      { label: t.kpiActive, values: report.periods.map((p) => p.active_members), color: "#8250df", dash: [8, 4] },
    ],
  });

  return [
    report.referrals_unavailable ? h("p", { class: "notice" }, t.referralsUnavailable) : null,
    h("section", { "aria-labelledby": "kpi-heading", class: "view" }, h("h2", { id: "kpi-heading" }, t.kpiTitle), figures),
    report.periods.length > 0 &&
      h(
        "section",
        { "aria-labelledby": "trends-heading", class: "panel" },
        h("h2", { id: "trends-heading" }, t.trendsTitle),
        h("div", { class: "columns" }, pointsChart, membersChart),
      ),
    h("section", { "aria-labelledby": "segments-heading", class: "panel" }, h("h2", { id: "segments-heading" }, t.segmentsTitle), segmentFigure(context, segments)),
  ].filter((node): node is HTMLElement => node instanceof HTMLElement);
}

/** The customers by segment: a table whose share column carries a bar, so the chart and its text are one. */
function segmentFigure(context: Context, segments: PromiseSettledResult<SegmentCounts>): Child {
  const { t, fmt } = context;
  if (segments.status === "rejected") return h("p", { class: "notice" }, fill(t.partUnavailable, { detail: problemText(t, segments.reason) }));
  const counts = new Map(segments.value.counts.map((c) => [c.segment, c.customers]));
  const order = [...SEGMENTS, ...[...counts.keys()].filter((s) => !SEGMENTS.includes(s))];
  const sum = [...counts.values()].reduce((a, b) => a + b, 0);
  if (sum === 0) return h("p", { class: "muted", "data-testid": "segments-empty" }, t.segmentsEmpty);
  const { table: element, body } = table([{ label: t.colSegment }, { label: t.colCustomers, numeric: true }, { label: t.colShare }]);
  for (const segment of order) {
    const customers = counts.get(segment) ?? 0;
    const share = Math.round((100 * customers) / sum);
    const bar = h("span", { class: "bar" });
    bar.style.width = `${share}%`;
    body.append(
      h(
        "tr",
        { "data-segment": segment },
        h("th", { scope: "row" }, named(t, "segment", segment)),
        h("td", { class: "num" }, fmt.number(customers)),
        h("td", {}, h("span", { class: "bar-track", "aria-hidden": "true" }, bar), fmt.percent(share)),
      ),
    );
  }
  return h("figure", { "data-testid": "segments" }, h("figcaption", { class: "sr-only" }, t.segmentsTitle), element);
}

/**
 * The members by tier, in the ladder's order and by the ladder's names, with
 * a share bar like the segments'; then tiers no longer on the ladder (by id)
 * and the members who reached none yet. Without the tiers service, the card
 * says so and nothing else does.
 */
function tierSection(context: Context, distribution: PromiseSettledResult<TierDistribution>, ladder: PromiseSettledResult<Ladder>): HTMLElement {
  const { t } = context;
  return h(
    "section",
    { "aria-labelledby": "tiers-heading", class: "panel", "data-testid": "tier-distribution" },
    h("h2", { id: "tiers-heading" }, t.tierDistTitle),
    distribution.status === "rejected" ? unavailable(context, distribution.reason, "tiers") : tierFigure(context, distribution.value, ladder),
  );
}

function tierFigure(context: Context, distribution: TierDistribution, ladder: PromiseSettledResult<Ladder>): Child {
  const { t, fmt } = context;
  const counts = new Map(distribution.tiers.map((c) => [c.tier_id, c.members]));
  const rungs = ladder.status === "fulfilled" ? ladder.value.tiers : [];
  const rows: { id: string; name: string; members: number }[] = rungs.map((tier) => ({ id: tier.tier_id, name: tier.name, members: counts.get(tier.tier_id) ?? 0 }));
  for (const c of distribution.tiers) {
    if (c.tier_id && !rungs.some((tier) => tier.tier_id === c.tier_id)) rows.push({ id: c.tier_id, name: c.tier_id, members: c.members });
  }
  const none = counts.get("") ?? 0;
  if (none > 0) rows.push({ id: "", name: t.tierNoneYet, members: none });
  const total = distribution.members || [...counts.values()].reduce((a, b) => a + b, 0);
  if (total === 0) return h("p", { class: "muted", "data-testid": "tiers-empty" }, t.tierDistEmpty);
  const { table: element, body } = table([{ label: t.colTier }, { label: t.colMembers, numeric: true }, { label: t.colShare }]);
  for (const row of rows) {
    const share = Math.round((100 * row.members) / total);
    const bar = h("span", { class: "bar" });
    bar.style.width = `${share}%`;
    body.append(
      h(
        "tr",
        { "data-tier": row.id },
        h("th", { scope: "row" }, row.name),
        h("td", { class: "num" }, fmt.number(row.members)),
        h("td", {}, h("span", { class: "bar-track", "aria-hidden": "true" }, bar), fmt.percent(share)),
      ),
    );
  }
  return h("figure", { "data-testid": "tiers" }, h("figcaption", { class: "sr-only" }, t.tierDistTitle), element);
}

/** Insights is missing or down: say so, and show the program as the other services report it. */
async function fallback(context: Context, code: string, settings: PromiseSettledResult<Settings>): Promise<Node[]> {
  const { t } = context;
  const nodes: Node[] = [
    h("p", { class: "notice", "data-testid": "insights-unavailable" }, code === "BACKEND_NOT_CONFIGURED" ? t.insightsNotConfigured : t.insightsDown),
    h("p", {}, t.fallbackIntro),
  ];
  let rewards: number | null = null;
  try {
    rewards = (await context.api.rewards()).length;
  } catch (error) {
    context.fail(error);
  }
  if (settings.status === "rejected") {
    context.fail(settings.reason);
    if (rewards !== null) nodes.push(h("section", { class: "panel" }, facts([[t.rewardsCount, context.fmt.number(rewards), "rewards-count"]])));
    return nodes;
  }
  nodes.push(
    h(
      "section",
      { "aria-labelledby": "program-heading", class: "panel", "data-testid": "program-summary" },
      h("h2", { id: "program-heading" }, t.programTitle),
      facts(programFacts(context, settings.value, rewards)),
    ),
  );
  return nodes;
}

function programFacts(context: Context, s: Settings, rewards: number | null): [string, Child, string?][] {
  const { t, fmt } = context;
  const rate = s.earn_rate;
  const count = s.expiry.count ?? 0;
  const expiry =
    s.expiry.kind === "days_after_earn" || s.expiry.kind === "end_of_nth_month"
      ? counted(t, context.lang, `expiry_${s.expiry.kind}`, count, { count: fmt.number(count) })
      : named(t, "expiry", s.expiry.kind);
  const pairs: [string, Child, string?][] = [
    [t.currency, s.currency || t.anyCurrency, "currency"],
    [t.earnRate, counted(t, context.lang, "earnRateValue", rate.points, { points: fmt.number(rate.points), amount: fmt.money(rate.per_amount_minor, s.currency) }), "earn-rate"],
    [t.rounding, named(t, "rounding", s.rounding)],
    [t.returnWindow, counted(t, context.lang, "days", s.pending_days, { count: fmt.number(s.pending_days) })],
    [t.expiry, expiry],
    [t.waysToEarn, fmt.number(s.activity_rules.filter((rule) => rule.active).length)],
    [t.settingsVersion, fmt.number(s.version)],
  ];
  if (rewards !== null) pairs.push([t.rewardsCount, fmt.number(rewards), "rewards-count"]);
  return pairs;
}

