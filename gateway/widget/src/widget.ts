// <loyalty-widget>: a customer's points, tier, rewards and referral link on
// a shop's own pages, or how the program works for guests.
//
//   <script src="https://loyalty.example/widget.js" defer></script>
//   <loyalty-widget api-key="lk_…" customer-token="v1.…"></loyalty-widget>
//
// Attributes: `api-key` (a storefront key), `customer-token` (signed by the
// shop's back end; absent: the guest view), `gateway` (default: where this
// script came from), `referral-url`, `signup-url`, `signin-url`, `lang`
// (default: the page's), `strings` (JSON overrides, see i18n.ts).
// Events: `loyalty-widget:redeemed` ({ detail: { voucherCode } }) and
// `loyalty-widget:token-refused` ({ detail: { code } }: ask the back end for
// a fresh token and set it).

import { Gateway, LoyaltyPage, Problem, ProgramOverview, Redemption, Reward, tokenCustomer } from "./api";
import { fill, Key, Lang, Overrides, pickLang, Strings, strings } from "./i18n";
import { STYLES } from "./styles";

/** Where the script was loaded from: the gateway, unless the `gateway` attribute says otherwise. */
const SCRIPT_ORIGIN = (() => {
  const script = document.currentScript as HTMLScriptElement | null;
  try {
    return script?.src ? new URL(script.src).origin : location.origin;
  } catch {
    return location.origin;
  }
})();

interface Notice {
  key: Key;
  reason?: Key;
}

interface View {
  loading: boolean;
  program: ProgramOverview | null;
  page: LoyaltyPage | null;
  /** Vouchers the customer holds; empty when they could not be read (the rest still shows). */
  held: Redemption[];
  notice: Notice | null;
  voucher: { reward: string; code?: string } | null;
  busyReward: string | null;
}

const EMPTY: View = { loading: true, program: null, page: null, held: [], notice: null, voucher: null, busyReward: null };

type Child = Node | string | null | undefined | false;

/** A small element builder: text is always set as text, never parsed as HTML. */
/** A reward only some tiers may redeem. */
function tierOnly(reward: Reward): boolean {
  return Boolean(reward.minimum_tier_id) || (reward.eligible_tier_ids?.length ?? 0) > 0;
}

function h(tag: string, attributes: Record<string, string | boolean | EventListener> = {}, ...children: Child[]) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else if (value !== false) element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) element.append(child);
  }
  return element;
}

class LoyaltyWidget extends HTMLElement {
  static observedAttributes = [
    "api-key",
    "customer-token",
    "gateway",
    "lang",
    "strings",
    "referral-url",
    "signup-url",
    "signin-url",
  ];

  private readonly root: ShadowRoot;
  private readonly content: HTMLElement;
  /** Announces short confirmations ("Copied") without moving focus. */
  private readonly status: HTMLElement;
  private view: View = { ...EMPTY };
  private overrides: Overrides | undefined;
  private generation = 0;
  private readonly langWatch = new MutationObserver(() => this.render());

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = STYLES;
    this.content = h("div");
    this.status = h("p", { role: "status", class: "sr-only" });
    this.root.append(style, this.content, this.status);
  }

  connectedCallback() {
    this.langWatch.observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
    void this.load(false);
  }

  disconnectedCallback() {
    this.langWatch.disconnect();
  }

  attributeChangedCallback(name: string, old: string | null, value: string | null) {
    if (old === value || !this.isConnected) return;
    if (name === "strings" || name === "lang" || name.endsWith("-url")) this.render();
    else void this.load(false);
  }

  /** String overrides as an object (the `strings` attribute takes the same as JSON). */
  set strings(value: Overrides | undefined) {
    this.overrides = value;
    this.render();
  }

  get strings(): Overrides | undefined {
    return this.overrides;
  }

  /** Reads everything again, e.g. after an order. */
  refresh(): Promise<void> {
    return this.load(true);
  }

  private get token(): string | null {
    return this.getAttribute("customer-token")?.trim() || null;
  }

  private gateway(): Gateway {
    const base = (this.getAttribute("gateway") || SCRIPT_ORIGIN).replace(/\/+$/, "");
    return new Gateway(base, this.getAttribute("api-key") ?? "", this.token);
  }

  private async load(keepVoucher: boolean) {
    const generation = ++this.generation;
    const token = this.token;
    const customer = token ? tokenCustomer(token) : null;
    const voucher = keepVoucher ? this.view.voucher : null;
    if (!keepVoucher) {
      this.view = { ...EMPTY, voucher };
      this.render();
    }
    const gateway = this.gateway();
    let notice: Notice | null = null;
    let page: LoyaltyPage | null = null;
    let program: ProgramOverview | null = null;
    let held: Redemption[] = [];
    try {
      const pageRequest = customer ? gateway.loyaltyPage(customer).then(
        (answer) => answer,
        (error: unknown) => {
          if (!(error instanceof Problem)) throw error;
          if (error.code === "CUSTOMER_NOT_FOUND") return emptyPage(customer);
          if (error.code === "CUSTOMER_TOKEN_EXPIRED") notice = { key: "tokenExpired" };
          else if (error.code.startsWith("CUSTOMER_TOKEN")) notice = { key: "tokenInvalid" };
          else throw error;
          this.dispatchEvent(new CustomEvent("loyalty-widget:token-refused", { bubbles: true, detail: { code: error.code } }));
          return null;
        },
      ) : Promise.resolve(null);
      if (token && !customer) notice = { key: "tokenInvalid" };
      const heldRequest = customer ? gateway.heldVouchers(customer).catch(() => []) : Promise.resolve([]);
      [program, page, held] = await Promise.all([gateway.program(), pageRequest, heldRequest]);
    } catch {
      notice = { key: "unavailable" };
    }
    if (generation !== this.generation) return;
    this.view = { loading: false, program, page, held: page ? held : [], notice, voucher, busyReward: null };
    this.render();
  }

  private language(): { lang: Lang; locale: string } {
    const tag =
      this.closest("[lang]")?.getAttribute("lang") || document.documentElement.lang || navigator.language || "en";
    const lang = pickLang(tag);
    let locale: string = lang;
    try {
      locale = Intl.NumberFormat.supportedLocalesOf([tag])[0] ?? lang;
    } catch {
      // An invalid tag: the language's own formats.
    }
    return { lang, locale };
  }

  private texts(lang: Lang): Strings {
    let overrides = this.overrides;
    const attribute = this.getAttribute("strings");
    if (attribute) {
      try {
        overrides = JSON.parse(attribute) as Overrides;
      } catch {
        // A broken override must not break the widget: the built-in words stay.
      }
    }
    return strings(lang, overrides);
  }

  private render() {
    const { lang, locale } = this.language();
    const t = this.texts(lang);
    const number = new Intl.NumberFormat(locale);
    const n = (value: number) => number.format(value);
    const date = (iso: string) => new Intl.DateTimeFormat(locale, { dateStyle: "medium" }).format(new Date(iso));
    const view = this.view;
    // Re-rendering replaces the elements: put focus back where it was.
    const focused = (this.root.activeElement as HTMLElement | null)?.dataset.focus;

    const card = h("div", { class: "card", lang, "aria-busy": view.loading ? "true" : "false" });
    const region = h("section", { "aria-labelledby": "loyalty-title", role: "region" }, h("h2", { id: "loyalty-title" }, t.title));
    card.append(region);
    if (view.notice) {
      const text = fill(t[view.notice.key], { reason: view.notice.reason ? t[view.notice.reason] : "" });
      card.append(h("p", { class: "notice", role: "alert" }, text));
    }
    if (view.loading) {
      card.append(h("p", { class: "muted" }, t.loading));
    } else if (view.page) {
      card.append(...this.member(view.page, t, n, date));
      if (view.program) card.append(this.waysToEarn(view.program, t, n, locale));
    } else if (view.program) {
      card.append(...this.guest(view.program, t, n, locale));
    }
    this.content.replaceChildren(card);
    if (focused) (this.root.querySelector(`[data-focus="${CSS.escape(focused)}"]`) as HTMLElement | null)?.focus();
  }

  private member(page: LoyaltyPage, t: Strings, n: (v: number) => string, date: (iso: string) => string): Node[] {
    const balance = page.points;
    const soon = page.points.expiring_soon;
    const nodes: Node[] = [];
    const expiry = soon.total_points > 0 && soon.expiring[0]?.expires_at
      ? fill(t.expiringSome, { points: n(soon.total_points), date: date(soon.expiring[0].expires_at) })
      : fill(t.expiringNone, { days: n(soon.within_days) });
    nodes.push(
      h(
        "section",
        { "aria-label": t.available },
        h(
          "div",
          { class: "balance" },
          h("div", {}, h("div", { class: "muted" }, t.available), h("div", { class: "big", "data-testid": "available" }, n(balance.available))),
          h("div", {}, h("div", { class: "muted" }, t.pending), h("div", { "data-testid": "pending" }, n(balance.pending))),
        ),
        balance.pending > 0 && h("p", { class: "muted" }, t.pendingHint),
        balance.available < 0 && h("p", { class: "notice", "data-testid": "negative-balance" }, t.negativeBalance),
        h("p", { "data-testid": "expiring" }, expiry),
      ),
    );
    if (page.tier.available) nodes.push(this.tier(page, t, n));
    // The voucher just redeemed shows in its own box above.
    const held = this.view.held.filter((v) => v.voucher_code !== this.view.voucher?.code);
    if (held.length > 0) nodes.push(this.held(held, t, date));
    nodes.push(this.rewards(page, t, n));
    if (page.referral.available && page.referral.enabled && page.referral.code) nodes.push(this.referral(page, t, n));
    else if (page.referral.available && !page.referral.code && this.view.program?.referral.enabled) nodes.push(this.referralInvite(t, n));
    const birthday = this.view.program?.ways_to_earn.find((w) => w.activity_type === "birthday");
    if (birthday) nodes.push(this.birthday(page, birthday.points, t, n));
    return nodes;
  }

  /** The member's birthday: shown once given, else asked for (once: the gateway keeps the first). */
  private birthday(page: LoyaltyPage, points: number, t: Strings, n: (v: number) => string): Node {
    const section = h("section", { "aria-labelledby": "loyalty-birthday" }, h("h3", { id: "loyalty-birthday" }, t.birthdayTitle));
    const { locale } = this.language();
    // A leap year, so that 29 February has a name.
    const day = (month: number, d: number) =>
      new Intl.DateTimeFormat(locale, { month: "long", day: "numeric", timeZone: "UTC" }).format(new Date(Date.UTC(2000, month - 1, d)));
    const given = page.profile?.birth_month ? page.profile : null;
    if (given) {
      section.append(h("p", { "data-testid": "birthday" }, fill(t.birthdayShown, { date: day(given.birth_month, given.birth_day) })));
      return section;
    }
    section.append(h("p", {}, fill(t.birthdayOffer, { points: n(points) })));
    const monthName = new Intl.DateTimeFormat(locale, { month: "long", timeZone: "UTC" });
    const month = h(
      "select",
      { id: "loyalty-birth-month", "data-focus": "birth-month" },
      ...Array.from({ length: 12 }, (_, i) => h("option", { value: String(i + 1) }, monthName.format(new Date(Date.UTC(2000, i, 1))))),
    ) as HTMLSelectElement;
    const dayOf = h(
      "select",
      { id: "loyalty-birth-day", "data-focus": "birth-day" },
      ...Array.from({ length: 31 }, (_, i) => h("option", { value: String(i + 1) }, n(i + 1))),
    ) as HTMLSelectElement;
    const save = h("button", { type: "button", "data-focus": "birthday-save" }, t.birthdaySave) as HTMLButtonElement;
    save.addEventListener("click", () => void this.saveBirthday(save, Number(month.value), Number(dayOf.value), t));
    section.append(
      h(
        "div",
        { class: "row" },
        h("label", { for: "loyalty-birth-month" }, t.birthdayMonth),
        month,
        h("label", { for: "loyalty-birth-day" }, t.birthdayDay),
        dayOf,
        save,
      ),
    );
    return section;
  }

  private async saveBirthday(button: HTMLButtonElement, month: number, day: number, t: Strings) {
    const customer = this.view.page?.customer_id;
    if (!customer) return;
    button.disabled = true;
    try {
      await this.gateway().setBirthday(customer, month, day);
      this.status.textContent = t.birthdaySaved;
      this.view = { ...this.view, notice: null };
      await this.load(true);
    } catch (error) {
      const invalid = error instanceof Problem && error.status === 422;
      this.view = { ...this.view, notice: { key: invalid ? "birthdayInvalid" : "unavailable" } };
      this.render();
    }
  }

  /** Referrals are on but the customer has no code yet: reading the page made none, a click does. */
  private referralInvite(t: Strings, n: (v: number) => string): Node {
    const section = h("section", { "aria-labelledby": "loyalty-referral" }, h("h3", { id: "loyalty-referral" }, t.referralTitle));
    const offer = this.view.program?.referral;
    if (offer?.available && offer.enabled) {
      section.append(h("p", {}, fill(t.referralOffer, { referee: n(offer.referee_points), referrer: n(offer.referrer_points) })));
    }
    const button = h("button", { type: "button", class: "secondary", "data-focus": "referral-create" }, t.referralCreate) as HTMLButtonElement;
    button.addEventListener("click", () => void this.createReferralCode(button));
    section.append(button);
    return section;
  }

  private async createReferralCode(button: HTMLButtonElement) {
    const customer = this.view.page?.customer_id;
    if (!customer) return;
    button.disabled = true;
    try {
      await this.gateway().createReferralCode(customer);
      await this.load(true);
      (this.root.querySelector('[data-focus="referral-input"]') as HTMLElement | null)?.focus();
    } catch {
      this.view = { ...this.view, notice: { key: "unavailable" } };
      this.render();
    }
  }

  private tier(page: LoyaltyPage, t: Strings, n: (v: number) => string): Node {
    const tier = page.tier;
    const section = h("section", { "aria-labelledby": "loyalty-tier" }, h("h3", { id: "loyalty-tier" }, t.tierTitle));
    section.append(h("p", { "data-testid": "tier" }, tier.tier_name ? fill(t.tierCurrent, { tier: tier.tier_name }) : t.tierNone));
    if (tier.next_tier_name && tier.points_to_next_tier !== undefined) {
      const have = tier.qualifying_points ?? 0;
      const percent = Math.max(0, Math.min(100, Math.round((100 * have) / Math.max(1, have + tier.points_to_next_tier))));
      const label = fill(t.tierProgress, { tier: tier.next_tier_name });
      section.append(
        h(
          "div",
          {
            class: "progress",
            role: "progressbar",
            "aria-label": label,
            "aria-valuemin": "0",
            "aria-valuemax": "100",
            "aria-valuenow": String(percent),
            "aria-valuetext": `${percent}%`,
          },
          h("div", { style: `width: ${percent}%` }),
        ),
        h("p", { class: "muted" }, fill(t.tierNext, { points: n(tier.points_to_next_tier), tier: tier.next_tier_name })),
      );
    } else if (tier.tier_name) {
      section.append(h("p", { class: "muted" }, t.tierTop));
    }
    const perks = tier.perks ?? [];
    if (perks.length > 0) {
      section.append(
        h("h4", { id: "loyalty-perks" }, t.tierPerks),
        h("ul", { class: "perks", "aria-labelledby": "loyalty-perks", "data-testid": "perks" }, ...perks.map((perk) => h("li", {}, perk))),
      );
    }
    return section;
  }

  /** The vouchers the customer holds, each with its code to copy. */
  private held(held: Redemption[], t: Strings, date: (iso: string) => string): Node {
    const list = h("ul", { "data-testid": "held-vouchers" });
    for (const voucher of held) {
      const code = voucher.voucher_code ?? "";
      const copy = h("button", { type: "button", class: "secondary", "data-focus": `copy-held-${code}`, "aria-label": `${t.copyCode} ${code}` }, t.copy) as HTMLButtonElement;
      copy.addEventListener("click", () => void this.copy(code, copy, t));
      list.append(
        h(
          "li",
          { class: "row" },
          h(
            "span",
            {},
            h("strong", {}, voucher.reward_name),
            " · ",
            h("span", { class: "code" }, code),
            voucher.voucher_expires_at ? h("span", { class: "muted" }, " · ", fill(t.heldValidUntil, { date: date(voucher.voucher_expires_at) })) : null,
          ),
          copy,
        ),
      );
    }
    return h("section", { "aria-labelledby": "loyalty-held" }, h("h3", { id: "loyalty-held" }, t.heldTitle), list);
  }

  private rewards(page: LoyaltyPage, t: Strings, n: (v: number) => string): Node {
    const section = h("section", { "aria-labelledby": "loyalty-rewards" }, h("h3", { id: "loyalty-rewards" }, t.rewardsTitle));
    const voucher = this.view.voucher;
    if (voucher) {
      const box = h(
        "div",
        { class: "voucher", tabindex: "-1", "data-focus": "voucher", "aria-labelledby": "loyalty-voucher" },
        h("h3", { id: "loyalty-voucher" }, fill(t.voucherTitle, { reward: voucher.reward })),
      );
      if (voucher.code) {
        const code = voucher.code;
        const copy = h("button", { type: "button", class: "secondary", "data-focus": "copy-code", "aria-label": t.copyCode }, t.copy) as HTMLButtonElement;
        copy.addEventListener("click", () => void this.copy(code, copy, t));
        box.append(h("div", { class: "row" }, h("span", { class: "code", "data-testid": "voucher-code" }, code), copy), h("p", { class: "muted" }, t.voucherHint));
      } else {
        box.append(h("p", {}, t.voucherPending));
      }
      section.append(box);
    }
    const redeemable = page.rewards.available ? (page.rewards.redeemable ?? []) : [];
    if (redeemable.length === 0) {
      section.append(h("p", { class: "muted" }, t.rewardsNone));
      return section;
    }
    const list = h("ul");
    for (const reward of redeemable) {
      const busy = this.view.busyReward === reward.reward_id;
      const button = h(
        "button",
        {
          type: "button",
          "data-focus": `redeem-${reward.reward_id}`,
          "aria-label": fill(t.redeemLabel, { reward: reward.name, points: n(reward.point_cost) }),
          disabled: this.view.busyReward !== null,
        },
        busy ? t.redeeming : t.redeem,
      );
      button.addEventListener("click", () => void this.redeem(reward));
      list.append(
        h(
          "li",
          { class: "row" },
          h(
            "span",
            {},
            h("strong", {}, reward.name),
            " · ",
            h("span", { class: "muted" }, fill(t.cost, { points: n(reward.point_cost) })),
            ...(tierOnly(reward) && page.tier.tier_name
              ? [" ", h("span", { class: "badge", "data-testid": `tier-only-${reward.reward_id}` }, fill(t.tierOnly, { tier: page.tier.tier_name }))]
              : []),
          ),
          button,
        ),
      );
    }
    section.append(list);
    return section;
  }

  private referral(page: LoyaltyPage, t: Strings, n: (v: number) => string): Node {
    const link = this.referralLink(page.referral.code ?? "");
    const section = h("section", { "aria-labelledby": "loyalty-referral" }, h("h3", { id: "loyalty-referral" }, t.referralTitle));
    const offer = this.view.program?.referral;
    if (offer?.enabled) {
      section.append(h("p", {}, fill(t.referralOffer, { referee: n(offer.referee_points), referrer: n(offer.referrer_points) })));
    }
    const input = h("input", { type: "text", readonly: true, value: link, id: "loyalty-referral-link", "data-testid": "referral-link", "data-focus": "referral-input" });
    const copy = h("button", { type: "button", class: "secondary", "data-focus": "copy-link", "aria-label": t.copyLink }, t.copy) as HTMLButtonElement;
    copy.addEventListener("click", () => void this.copy(link, copy, t));
    section.append(h("label", { for: "loyalty-referral-link", class: "muted" }, t.referralLink), h("div", { class: "row" }, input, copy));
    const stats = page.referral.stats;
    if (stats) {
      section.append(
        h(
          "dl",
          { class: "stats", "data-testid": "referral-stats" },
          h("div", {}, h("dt", {}, t.referralInvited), h("dd", {}, n(stats.invited))),
          h("div", {}, h("dt", {}, t.referralCompleted), h("dd", { "data-testid": "referrals-completed" }, n(stats.completed))),
          h("div", {}, h("dt", {}, t.referralPoints), h("dd", {}, n(stats.points_earned))),
        ),
      );
    }
    return section;
  }

  private referralLink(code: string): string {
    try {
      const url = new URL(this.getAttribute("referral-url") || location.origin + location.pathname, location.href);
      url.searchParams.set("ref", code);
      return url.toString();
    } catch {
      return code;
    }
  }

  private waysToEarn(program: ProgramOverview, t: Strings, n: (v: number) => string, locale: string): Node {
    const section = h("section", { "aria-labelledby": "loyalty-earn" }, h("h3", { id: "loyalty-earn" }, t.earnTitle));
    const list = h("ul", { "data-testid": "ways-to-earn" });
    const rate = program.earn_rate;
    if (rate.points > 0 && rate.per_amount_minor > 0) {
      const amount = money(rate.per_amount_minor, program.currency, locale);
      list.append(h("li", { class: "row" }, h("span", {}, t.earnOrder), h("span", { class: "muted" }, fill(new Intl.PluralRules(locale).select(rate.points) === "one" ? t.earnOrderPointOne : t.earnOrderPoints, { points: n(rate.points), amount }))));
    }
    for (const rule of program.ways_to_earn) {
      const key = `activity_${rule.activity_type}` as Key;
      const label = key in t ? t[key] : rule.activity_type.replace(/_/g, " ");
      list.append(h("li", { class: "row" }, h("span", {}, label), h("span", { class: "muted" }, fill(t.earnPoints, { points: n(rule.points) }))));
    }
    section.append(list);
    // What runs now (a double-points weekend): shown first, so nobody reads "1 point per €1" during it.
    const campaigns = (program.campaigns ?? []).filter((c) => c.ends_at);
    if (campaigns.length > 0) {
      const date = (iso: string) => new Intl.DateTimeFormat(locale, { dateStyle: "medium" }).format(new Date(iso));
      const running = h("ul", { "data-testid": "campaigns" });
      for (const c of campaigns) {
        const until = date(c.ends_at as string);
        const effect =
          c.kind === "multiplier"
            ? fill(t.campaignMultiplier, { multiplier: new Intl.NumberFormat(locale, { maximumFractionDigits: 2 }).format((c.multiplier_bp ?? 10_000) / 10_000), date: until })
            : fill(t.campaignBonus, { points: n(c.bonus_points ?? 0), date: until });
        running.append(h("li", { class: "row" }, h("strong", {}, c.name), h("span", { class: "muted" }, effect)));
      }
      section.insertBefore(running, list);
    }
    return section;
  }

  private guest(program: ProgramOverview, t: Strings, n: (v: number) => string, locale: string): Node[] {
    const nodes: Node[] = [
      h("p", {}, t.guestIntro),
      h("ol", { class: "steps" }, h("li", {}, t.guestStep1), h("li", {}, t.guestStep2), h("li", {}, t.guestStep3)),
      h(
        "div",
        { class: "row", style: "justify-content: flex-start" },
        h("a", { class: "button", href: this.getAttribute("signup-url") || "/account/register", "data-testid": "join" }, t.join),
        h("a", { class: "button secondary", href: this.getAttribute("signin-url") || "/account/login" }, t.signIn),
      ),
      this.waysToEarn(program, t, n, locale),
    ];
    const tiers = program.tiers.available ? program.tiers.tiers : [];
    if (tiers.length > 0) {
      const list = h("ul");
      for (const tier of tiers) {
        const item = h("li", {}, h("div", { class: "row" }, h("strong", {}, tier.name), h("span", { class: "muted" }, fill(t.tierThreshold, { points: n(tier.threshold) }))));
        const perks = tier.perks ?? [];
        if (perks.length > 0) item.append(h("ul", { class: "perks" }, ...perks.map((perk) => h("li", {}, perk))));
        list.append(item);
      }
      nodes.push(h("section", { "aria-labelledby": "loyalty-tiers" }, h("h3", { id: "loyalty-tiers" }, t.tiersTitle), list));
    }
    const rewards = program.rewards.available ? program.rewards.rewards : [];
    if (rewards.length > 0) {
      const list = h("ul");
      for (const reward of rewards) {
        list.append(h("li", { class: "row" }, h("span", {}, reward.name), h("span", { class: "muted" }, fill(t.cost, { points: n(reward.point_cost) }))));
      }
      nodes.push(h("section", { "aria-labelledby": "loyalty-catalog" }, h("h3", { id: "loyalty-catalog" }, t.catalogTitle), list));
    }
    if (program.referral.available && program.referral.enabled) {
      const offer = fill(t.referralOffer, { referee: n(program.referral.referee_points), referrer: n(program.referral.referrer_points) });
      nodes.push(h("section", { "aria-labelledby": "loyalty-referral" }, h("h3", { id: "loyalty-referral" }, t.referralTitle), h("p", {}, offer)));
    }
    return nodes;
  }

  private async redeem(reward: Reward) {
    const customer = this.view.page?.customer_id;
    if (!customer) return;
    this.view = { ...this.view, busyReward: reward.reward_id, notice: null };
    this.render();
    try {
      const redemption = await this.gateway().redeem(customer, reward.reward_id);
      this.view = { ...this.view, voucher: { reward: redemption.reward_name || reward.name, code: redemption.voucher_code } };
      this.dispatchEvent(new CustomEvent("loyalty-widget:redeemed", { bubbles: true, detail: { voucherCode: redemption.voucher_code } }));
      await this.load(true);
      (this.root.querySelector('[data-focus="voucher"]') as HTMLElement | null)?.focus();
    } catch (error) {
      let notice: Notice = { key: "redeemFailed", reason: "tryAgain" };
      if (error instanceof Problem) {
        if (error.code === "CUSTOMER_TOKEN_EXPIRED") notice = { key: "tokenExpired" };
        else if (error.code.startsWith("CUSTOMER_TOKEN")) notice = { key: "tokenInvalid" };
        else if (error.code === "INSUFFICIENT_POINTS") notice = { key: "redeemFailed", reason: "notEnoughPoints" };
      }
      this.view = { ...this.view, busyReward: null, notice };
      this.render();
    }
  }

  private async copy(text: string, button: HTMLButtonElement, t: Strings) {
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      copied = this.copyBySelection(text);
    }
    this.status.textContent = copied ? t.copied : t.copyFailed;
    if (copied) {
      button.textContent = t.copied;
      setTimeout(() => {
        button.textContent = t.copy;
      }, 2000);
    }
  }

  /** Where the Clipboard API is missing or refused (plain http, older browsers). */
  private copyBySelection(text: string): boolean {
    const area = h("textarea", { readonly: true, class: "sr-only", "aria-hidden": "true" }) as HTMLTextAreaElement;
    area.value = text;
    this.root.append(area);
    area.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    } finally {
      area.remove();
    }
  }
}

/** A signed-in customer the program has no points activity for yet. */
function emptyPage(customer: string): LoyaltyPage {
  return {
    customer_id: customer,
    points: {
      available: 0,
      pending: 0,
      next_expiry_points: 0,
      expiring_soon: { within_days: 30, total_points: 0, expiring: [] },
    },
    tier: { available: false },
    referral: { available: false },
    rewards: { available: true, redeemable: [] },
  };
}

function money(minor: number, currency: string, locale: string): string {
  try {
    const format = new Intl.NumberFormat(locale, { style: "currency", currency });
    const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
    return format.format(minor / 10 ** digits);
  } catch {
    return `${minor} ${currency}`;
  }
}

if (!customElements.get("loyalty-widget")) customElements.define("loyalty-widget", LoyaltyWidget);
