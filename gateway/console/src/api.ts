// Calls to the gateway's public HTTP API, same-origin and relative (`/v1/…`),
// with the admin key as a bearer token. Every refusal is a problem+json
// document, thrown as a `Problem`. Shapes follow gateway/src/model and the
// golden file gateway/tests/golden/response_shapes.json.

/** One invalid field of a request, as the API names it (`points`, `reason`). */
export interface FieldError {
  field: string;
  description: string;
}

/** A refused or failed call. `status` 0: the gateway was not reached at all. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly errors: FieldError[] = [],
  ) {
    super(`${status} ${code}: ${detail}`);
  }
}

// ---------------------------------------------------------------- shapes

export interface EarnRate {
  points: number;
  per_amount_minor: number;
}

/** `down` or `nearest`. */
export type Rounding = "down" | "nearest";
export type ExpiryKind = "never" | "days_after_earn" | "end_of_nth_month";
export type CapPeriod = "lifetime" | "year" | "month" | "week" | "day";

export interface ActivityRule {
  activity_type: string;
  points: number;
  active: boolean;
  /** At most this many awards per customer per `cap_period`; 0: no cap. */
  cap_count?: number;
  cap_period?: CapPeriod;
  /** At most one award per `activity_ref`. */
  once_per_ref?: boolean;
}

/** Points paying for part of an order: `points` points pay `amount_minor`. */
export interface CheckoutPoints {
  points: number;
  amount_minor: number;
  min_points: number;
  /** At most this share of the order, in basis points (5000: half). */
  max_share_bp: number;
  step_points: number;
}

export interface Settings {
  /** ISO 4217; empty accepts any. */
  currency: string;
  earn_rate: EarnRate;
  rounding: Rounding;
  minimum_order_minor: number;
  pending_days: number;
  expiry: { kind: ExpiryKind; count?: number };
  /** 0: 14. */
  expiry_reminder_days: number;
  activity_rules: ActivityRule[];
  /** Absent: points cannot pay for orders. */
  checkout?: CheckoutPoints;
  /** Grows with every change. */
  version: number;
}

/** `PUT /v1/settings`: refused with 409 `VERSION_MISMATCH` unless `expected_version` is still the stored one. */
export type SettingsBody = Omit<Settings, "version"> & { expected_version: number };

export type WindowKind = "calendar_year" | "rolling_days" | "lifetime";
export type DowngradeKind = "immediate" | "grace_days" | "end_of_next_period";
export type QualificationBasis = "all_earned" | "order_points_base" | "order_points_all" | "spend";

export interface TierBenefits {
  free_shipping: boolean;
  early_access_hours: number;
  /** 0: none; else 10000 (1x) to 100000. */
  birthday_multiplier_bp: number;
  flags: string[];
}

export interface Tier {
  tier_id: string;
  name: string;
  /** Qualifying points needed; ignored for hidden tiers. */
  threshold: number;
  /** 10000 is 1x. */
  multiplier_bp: number;
  perks: string[];
  /** Only assigned by hand. */
  hidden: boolean;
  benefits: TierBenefits;
}

export interface Ladder {
  /** Lowest first. */
  tiers: Tier[];
  window: { kind: WindowKind; days?: number };
  downgrade: { kind: DowngradeKind; grace_days?: number };
  qualification_basis: QualificationBasis;
  /** 0: never set. */
  version: number;
}

/** `PUT /v1/tiers/ladder`: with `expected_version`, refused with 409 `VERSION_MISMATCH` unless it is still the stored one. */
export type LadderBody = Omit<Ladder, "version"> & { expected_version?: number };

/** Members per tier, most first; `tier_id` empty: no tier reached yet. */
export interface TierDistribution {
  tiers: { tier_id: string; members: number }[];
  members: number;
}

export type RewardKind = "fixed_discount" | "percent_discount" | "free_shipping" | "free_product" | "custom";

export interface Reward {
  reward_id: string;
  name: string;
  description?: string;
  kind?: RewardKind;
  amount_minor?: number;
  currency?: string;
  percent_bp?: number;
  sku?: string;
  point_cost: number;
  minimum_tier_id?: string;
  eligible_tier_ids?: string[];
  /** Absent: unlimited. */
  total_stock?: number;
  /** Vouchers left, when `total_stock` is set. */
  remaining_stock?: number;
  per_customer_limit?: number;
  limit_period_days?: number;
  starts_at?: string;
  ends_at?: string;
  voucher_validity_days?: number;
  refund_expired?: boolean;
  archived?: boolean;
  /** 1 when created, one more with every change. */
  version?: number;
}

/** A reward as created or replaced (`PUT` replaces it whole: what is left out is reset). */
export interface RewardBody {
  name: string;
  description: string;
  kind: RewardKind;
  amount_minor?: number;
  currency?: string;
  percent_bp?: number;
  sku?: string;
  point_cost: number;
  minimum_tier_id?: string;
  eligible_tier_ids: string[];
  total_stock?: number;
  per_customer_limit: number;
  limit_period_days: number;
  starts_at?: string;
  ends_at?: string;
  voucher_validity_days: number;
  refund_expired: boolean;
  /** On an edit: the version it was read at (a change made meanwhile is refused). */
  expected_version?: number;
}

export type CampaignKind = "multiplier" | "bonus";

export interface Campaign {
  campaign_id: string;
  name: string;
  kind: CampaignKind;
  /** For `multiplier`: 20000 is 2x. */
  multiplier_bp?: number;
  /** For `bonus`. */
  bonus_points?: number;
  starts_at?: string;
  ends_at?: string;
  tier_ids: string[];
  /** `order` and/or activity types; empty: every earn. */
  applies_to: string[];
  segment_ids: string[];
}

export type CampaignBody = Omit<Campaign, "campaign_id">;

export interface ReferralSettings {
  enabled: boolean;
  referrer_points: number;
  referee_points: number;
  minimum_order_minor: number;
  /** 0: no cap. */
  cap_count: number;
  cap_period_days: number;
  attribution_window_days: number;
  clawback_window_days: number;
  /** Absent: none. */
  referee_reward_id?: string;
  referrer_reward_id?: string;
  version: number;
}

/** `PUT /v1/referrals/settings`: `expected_version` as for the ladder. */
export type ReferralSettingsBody = Omit<ReferralSettings, "version"> & { expected_version?: number };

export interface Kpis {
  from?: string;
  to?: string;
  new_members: number;
  members: number;
  orders: number;
  revenue_minor: number;
  refunded_minor: number;
  average_order_minor: number;
  points_issued: number;
  points_redeemed: number;
  points_expired: number;
  points_reversed: number;
  points_outstanding: number;
  redemption_rate_percent: number;
  active_members: number;
  buyers: number;
  repeat_buyers: number;
  repeat_purchase_rate_percent: number;
  churned: number;
  reactivated: number;
  churn_rate_percent: number;
}

export type Granularity = "day" | "week" | "month";

export interface KpiReport {
  granularity: Granularity;
  periods: Kpis[];
  total: Kpis;
  liability_minor: number;
  expected_redemption_percent: number;
  referrals?: { signed_up: number; completed: number; conversion_percent: number };
  referrals_unavailable: boolean;
}

export interface SegmentCounts {
  /** Every segment (`new`, `active`, `loyal`, `at_risk`, `churned`), zeros included. */
  counts: { segment: string; customers: number }[];
}

export interface SurveyScores {
  from?: string;
  to?: string;
  nps?: { nps: number; responses: number; promoters: number; passives: number; detractors: number };
  csat?: { csat_percent: number; responses: number; satisfied: number; average_centi: number };
}

export interface Balance {
  available: number;
  pending: number;
  lifetime_earned?: number;
  spent?: number;
  expired?: number;
  reversed?: number;
  next_expiry_points?: number;
  next_expiry_at?: string;
  /** Grows with every change of the account. */
  version?: number;
}

export interface LoyaltyPage {
  customer_id: string;
  points: Balance & { expiring_soon: { within_days: number; total_points: number; expiring: { points: number; expires_at?: string }[] } };
  tier: { available: boolean; tier_id?: string; tier_name?: string; qualifying_points?: number; perks?: string[] };
  referral: { available: boolean; code?: string; enabled?: boolean; stats?: { invited: number; completed: number; points_earned: number } };
  rewards: { available: boolean; redeemable?: Reward[] };
  profile?: { birth_month?: number; birth_day?: number; enrolled_at?: string; locale?: string; time_zone?: string };
}

export interface TierStatus {
  customer_id?: string;
  tier_id?: string;
  tier_name?: string;
  qualifying_points?: number;
  since?: string;
  /** Set by hand (a tier assignment) rather than earned. */
  assigned?: boolean;
  /** When the assignment ends; absent: until it is removed. */
  assignment_ends_at?: string;
  perks?: string[];
}

/** `threshold`, `grace_expired`, `period_ended`, `manual`, `assignment_ended`, `points_reversed` or `unknown`. */
export interface TierChange {
  /** Empty: no tier before. */
  from_tier_id: string;
  to_tier_id: string;
  reason: string;
  changed_at?: string;
  /** Who assigned it, for `manual` changes only. */
  actor?: string;
}

/** `POST /v1/customers/{id}/tier-assignment`. */
export interface AssignmentBody {
  tier_id: string;
  /** RFC 3339; absent: until removed. */
  ends_at?: string;
}

/** A friend this customer referred; `status` is `pending`, `completed`, `reversed` or `unknown`. */
export interface Referral {
  referral_id: string;
  code: string;
  referrer_customer_id: string;
  referee_customer_id: string;
  status: string;
  created_at?: string;
  completed_at?: string;
  reversed_at?: string;
  qualifying_order_id?: string;
}

export interface Transaction {
  transaction_id: string;
  /** `earn`, `spend`, `reverse`, `adjust`, `activate`, `expire`, `restore` or `unknown`. */
  kind: string;
  points: number;
  pending_points: number;
  reason: string;
  created_at?: string;
  expires_at?: string;
}

export interface Redemption {
  redemption_id: string;
  reward_id: string;
  reward_name: string;
  /** `pending`, `active` (issued, unused), `used`, `cancelled`, `expired`, `failed` or `unknown`. */
  status: string;
  points_spent: number;
  voucher_code?: string;
  voucher_expires_at?: string;
  created_at?: string;
}

export interface AuditEntry {
  audit_id: number;
  actor: string;
  changed_at?: string;
  entity: string;
  entity_id: string;
  old_value?: unknown;
  new_value?: unknown;
}

/** One page of a newest-first list. */
export interface Page<T> {
  items: T[];
  next?: string;
}

/** `settings`, `campaign`, `profile`, `customer_export` or `customer_erasure`. */
export const AUDIT_ENTITIES = ["settings", "campaign", "profile", "customer_export", "customer_erasure"] as const;

// ---------------------------------------------------------------- calls

export class Api {
  /**
   * `onUnauthorized` runs on any 401 (the key was revoked meanwhile) before the
   * problem is thrown; the sign-in check passes none.
   */
  constructor(
    private readonly key: string,
    private readonly onUnauthorized?: (problem: Problem) => void,
  ) {}

  settings(): Promise<Settings> {
    return this.call("GET", "/v1/settings");
  }

  /** Settings as stored; 409 `VERSION_MISMATCH` when they changed since `expected_version`. */
  putSettings(body: SettingsBody, key: string): Promise<Settings> {
    return this.call("PUT", "/v1/settings", body, key);
  }

  /** The active rewards, or every one with `archived`. */
  async rewards(archived = false): Promise<Reward[]> {
    return (await this.call<{ rewards: Reward[] }>("GET", `/v1/rewards${archived ? "?include_archived=true" : ""}`)).rewards;
  }

  createReward(body: RewardBody, key: string): Promise<Reward> {
    return this.call("POST", "/v1/rewards", body, key);
  }

  updateReward(reward: string, body: RewardBody, key: string): Promise<Reward> {
    return this.call("PUT", `/v1/rewards/${encodeURIComponent(reward)}`, body, key);
  }

  archiveReward(reward: string, key: string): Promise<Reward> {
    return this.call("POST", `/v1/rewards/${encodeURIComponent(reward)}/archive`, undefined, key);
  }

  ladder(): Promise<Ladder> {
    return this.call("GET", "/v1/tiers/ladder");
  }

  putLadder(body: LadderBody, key: string): Promise<Ladder> {
    return this.call("PUT", "/v1/tiers/ladder", body, key);
  }

  tierDistribution(): Promise<TierDistribution> {
    return this.call("GET", "/v1/tiers/distribution");
  }

  /** Current and upcoming campaigns, and ended ones with `ended`. */
  async campaigns(ended: boolean): Promise<Campaign[]> {
    return (await this.call<{ campaigns: Campaign[] }>("GET", `/v1/campaigns${ended ? "?include_ended=true" : ""}`)).campaigns;
  }

  createCampaign(body: CampaignBody, key: string): Promise<Campaign> {
    return this.call("POST", "/v1/campaigns", body, key);
  }

  /** Ends it now (one that has not started ends at its start). */
  endCampaign(campaign: string, key: string): Promise<Campaign> {
    return this.call("POST", `/v1/campaigns/${encodeURIComponent(campaign)}/end`, undefined, key);
  }

  referralSettings(): Promise<ReferralSettings> {
    return this.call("GET", "/v1/referrals/settings");
  }

  putReferralSettings(body: ReferralSettingsBody, key: string): Promise<ReferralSettings> {
    return this.call("PUT", "/v1/referrals/settings", body, key);
  }

  kpis(from: Date, to: Date, granularity: Granularity): Promise<KpiReport> {
    return this.call("GET", `/v1/insights/kpis${query({ from: from.toISOString(), to: to.toISOString(), granularity })}`);
  }

  segments(): Promise<SegmentCounts> {
    return this.call("GET", "/v1/insights/segments");
  }

  surveys(from: Date, to: Date): Promise<SurveyScores> {
    return this.call("GET", `/v1/insights/surveys${query({ from: from.toISOString(), to: to.toISOString() })}`);
  }

  loyalty(customer: string): Promise<LoyaltyPage> {
    return this.call("GET", `${customerPath(customer)}/loyalty`);
  }

  tier(customer: string): Promise<TierStatus> {
    return this.call("GET", `${customerPath(customer)}/tier`);
  }

  async tierHistory(customer: string, token?: string): Promise<Page<TierChange>> {
    const page = await this.call<{ changes: TierChange[]; next_page_token?: string }>(
      "GET",
      `${customerPath(customer)}/tier/history${query({ page_size: "20", page_token: token })}`,
    );
    return { items: page.changes, next: page.next_page_token };
  }

  /** Gives the customer a tier by hand (a hidden one too) until `ends_at`, or until removed. */
  assignTier(customer: string, body: AssignmentBody, key: string): Promise<TierStatus> {
    return this.call("POST", `${customerPath(customer)}/tier-assignment`, body, key);
  }

  /** Ends the assignment: the tier follows the customer's points again. */
  endAssignment(customer: string, key: string): Promise<TierStatus> {
    return this.call("DELETE", `${customerPath(customer)}/tier-assignment`, undefined, key);
  }

  /** The friends the customer referred, newest first. */
  async referrals(customer: string, token?: string): Promise<Page<Referral>> {
    const page = await this.call<{ referrals: Referral[]; next_page_token?: string }>(
      "GET",
      `${customerPath(customer)}/referrals${query({ page_size: "20", page_token: token })}`,
    );
    return { items: page.referrals, next: page.next_page_token };
  }

  async transactions(customer: string, token?: string): Promise<Page<Transaction>> {
    const page = await this.call<{ entries: Transaction[]; next_page_token?: string }>(
      "GET",
      `${customerPath(customer)}/transactions${query({ page_size: "20", page_token: token })}`,
    );
    return { items: page.entries, next: page.next_page_token };
  }

  async redemptions(customer: string, token?: string): Promise<Page<Redemption>> {
    const page = await this.call<{ redemptions: Redemption[]; next_page_token?: string }>(
      "GET",
      `${customerPath(customer)}/redemptions${query({ page_size: "20", page_token: token })}`,
    );
    return { items: page.redemptions, next: page.next_page_token };
  }

  /** Gives an unused voucher's points back. */
  cancelRedemption(redemption: string): Promise<Redemption> {
    return this.call("POST", `/v1/redemptions/${encodeURIComponent(redemption)}/cancel`, undefined, idempotencyKey());
  }

  adjust(customer: string, points: number, reason: string): Promise<{ transaction_id: string; balance: Balance }> {
    return this.call("POST", `${customerPath(customer)}/adjustments`, { points, reason }, idempotencyKey());
  }

  async audit(filters: { actor?: string; entity?: string }, token?: string): Promise<Page<AuditEntry>> {
    const page = await this.call<{ entries: AuditEntry[]; next_page_token?: string }>(
      "GET",
      `/v1/audit${query({ page_size: "50", page_token: token, actor: filters.actor, entity: filters.entity })}`,
    );
    return { items: page.entries, next: page.next_page_token };
  }

  /** One request; a write carries its action's `Idempotency-Key`, so a retry of the same click applies once. */
  private async call<T>(method: string, path: string, body?: unknown, idempotency?: string): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotency) headers["Idempotency-Key"] = idempotency;
    let answer: Response;
    try {
      answer = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new Problem(0, "NETWORK", "");
    }
    if (answer.ok) return (await answer.json()) as T;
    const problem = await readProblem(answer);
    if (problem.status === 401) this.onUnauthorized?.(problem);
    throw problem;
  }
}

async function readProblem(answer: Response): Promise<Problem> {
  try {
    const document = (await answer.json()) as { code?: string; detail?: string; errors?: FieldError[] };
    return new Problem(answer.status, document.code ?? "UNKNOWN", document.detail ?? answer.statusText, document.errors ?? []);
  } catch {
    // Not problem+json (a proxy's error page): the status says enough.
    return new Problem(answer.status, "UNKNOWN", answer.statusText || String(answer.status));
  }
}

function customerPath(customer: string): string {
  return `/v1/customers/${encodeURIComponent(customer)}`;
}

/** `?a=1&b=2` of the parameters that are set, or nothing. */
function query(parameters: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) if (value) search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * The `Idempotency-Key` of one user action (a save, a create, an archive): the
 * same key while the same body goes out again after an answer that settled
 * nothing (no answer at all, a 5xx), so the retry applies once; a new key for
 * another body, or once an answer settled the action (done, or refused).
 */
export class Action {
  private current = "";
  private sent = "";

  keyFor(body: unknown): string {
    const text = JSON.stringify(body ?? null);
    if (!this.current || text !== this.sent) {
      this.current = idempotencyKey();
      this.sent = text;
    }
    return this.current;
  }

  /** The action's answer: done (no error) or a refusal start the next action afresh; an outage keeps the key for the retry. */
  settled(error?: unknown): void {
    if (error instanceof Problem && (error.status === 0 || error.status >= 500)) return;
    this.current = "";
  }
}

function idempotencyKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
