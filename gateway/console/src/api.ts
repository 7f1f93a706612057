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

export interface ActivityRule {
  activity_type: string;
  points: number;
  active: boolean;
}

export interface Settings {
  currency: string;
  earn_rate: EarnRate;
  rounding: string;
  minimum_order_minor: number;
  pending_days: number;
  expiry: { kind: string; count?: number };
  expiry_reminder_days: number;
  activity_rules: ActivityRule[];
  version: number;
}

export interface Reward {
  reward_id: string;
  name: string;
  point_cost: number;
  archived?: boolean;
}

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
  perks?: string[];
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

  async rewards(): Promise<Reward[]> {
    return (await this.call<{ rewards: Reward[] }>("GET", "/v1/rewards")).rewards;
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
    return this.call("POST", `/v1/redemptions/${encodeURIComponent(redemption)}/cancel`, undefined, true);
  }

  adjust(customer: string, points: number, reason: string): Promise<{ transaction_id: string; balance: Balance }> {
    return this.call("POST", `${customerPath(customer)}/adjustments`, { points, reason }, true);
  }

  async audit(filters: { actor?: string; entity?: string }, token?: string): Promise<Page<AuditEntry>> {
    const page = await this.call<{ entries: AuditEntry[]; next_page_token?: string }>(
      "GET",
      `/v1/audit${query({ page_size: "50", page_token: token, actor: filters.actor, entity: filters.entity })}`,
    );
    return { items: page.entries, next: page.next_page_token };
  }

  /** One request; writes carry a fresh `Idempotency-Key`, so a network retry of the same click applies once. */
  private async call<T>(method: string, path: string, body?: unknown, write = false): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (write) headers["Idempotency-Key"] = idempotencyKey();
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

function idempotencyKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
