// The program's configuration, through the public API like everything else:
// its earning rules, tier ladder, rewards catalog, campaigns and referral
// settings, each a part with its own address (`#/program/<part>`) under one
// heading and one navigation of its own.

import { campaignsPart } from "./campaigns";
import { catalogPart } from "./catalog";
import { Context, View } from "./context";
import { h } from "./dom";
import { earningPart } from "./earning";
import { Key } from "./i18n";
import { ladderPart } from "./ladder";
import { referralsPart } from "./referrals";
import { href, PROGRAM_PARTS, ProgramPart, Route } from "./router";

type ProgramRoute = Extract<Route, { view: "program" }>;

/** A part renders into `body` (which says "Loading…" until it does); `heading` is its h2, for the focus after a change. */
export type Part = (context: Context, body: HTMLElement, heading: HTMLElement) => void;

const PARTS: Record<ProgramPart, { label: Key; render: Part }> = {
  earning: { label: "progEarning", render: earningPart },
  tiers: { label: "progTiers", render: ladderPart },
  rewards: { label: "progRewards", render: catalogPart },
  campaigns: { label: "progCampaigns", render: campaignsPart },
  referrals: { label: "progReferrals", render: referralsPart },
};

export const programView: View<ProgramRoute> = (context, route, root) => {
  const { t } = context;
  const part = PARTS[route.part];
  document.title = `${t[part.label]} – ${t.progTitle} – ${t.appName}`;
  const heading = h("h2", { id: "part-heading", tabindex: "-1" }, t[part.label]);
  const body = h("div", { class: "view", "aria-busy": "true" }, h("p", { class: "muted" }, t.loading));
  const links = PROGRAM_PARTS.map((name) =>
    h(
      "li",
      {},
      h(
        "a",
        { href: href({ view: "program", part: name }), "aria-current": name === route.part ? "page" : null, "data-testid": `program-${name}` },
        t[PARTS[name].label],
      ),
    ),
  );
  root.append(
    h("h1", { tabindex: "-1" }, t.progTitle),
    h("nav", { class: "subnav", "aria-label": t.progNavLabel }, h("ul", {}, ...links)),
    h("section", { class: "view", "aria-labelledby": heading.id, "data-testid": `part-${route.part}` }, heading, body),
  );
  part.render(context, body, heading);
};
