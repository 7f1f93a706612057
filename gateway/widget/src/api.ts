// Calls to the gateway. A storefront key is public; what proves who the
// customer is, is the token the shop's back end signed for them.

export interface Balance {
  available: number;
  pending: number;
  next_expiry_points: number;
  next_expiry_at?: string;
}

export interface ExpiringSoon {
  within_days: number;
  total_points: number;
  expiring: { points: number; expires_at?: string }[];
}

export interface Reward {
  reward_id: string;
  name: string;
  description: string;
  point_cost: number;
  /** Set on rewards limited to tiers: only members who may redeem them see them. */
  minimum_tier_id?: string;
  eligible_tier_ids?: string[];
}

export interface LoyaltyPage {
  customer_id: string;
  points: Balance & { expiring_soon: ExpiringSoon };
  tier: {
    available: boolean;
    tier_id?: string;
    tier_name?: string;
    qualifying_points?: number;
    next_tier_name?: string;
    points_to_next_tier?: number;
    perks?: string[];
  };
  referral: {
    available: boolean;
    code?: string;
    enabled?: boolean;
    stats?: { invited: number; completed: number; points_earned: number };
  };
  rewards: { available: boolean; redeemable?: Reward[] };
  /** The member's own part of the profile; absent until one is written. Birth month 0: not given. */
  profile?: { birth_month: number; birth_day: number };
}

/** A campaign running now: a multiplier or a bonus, on `applies_to` (empty: everything), for `tier_ids` (empty: everyone). */
export interface Campaign {
  campaign_id: string;
  name: string;
  kind: "multiplier" | "bonus";
  multiplier_bp?: number;
  bonus_points?: number;
  ends_at?: string;
  tier_ids: string[];
  applies_to: string[];
}

export interface ProgramOverview {
  currency: string;
  earn_rate: { points: number; per_amount_minor: number };
  ways_to_earn: { activity_type: string; points: number }[];
  campaigns: Campaign[];
  tiers: { available: boolean; tiers: { tier_id: string; name: string; threshold: number; perks?: string[] }[] };
  rewards: { available: boolean; rewards: Reward[] };
  referral: { available: boolean; enabled: boolean; referrer_points: number; referee_points: number };
}

export interface Redemption {
  redemption_id?: string;
  status: string;
  voucher_code?: string;
  reward_name: string;
  voucher_expires_at?: string;
}

/** A problem+json answer, by its machine-readable code. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
  ) {
    super(`${status} ${code}`);
  }
}

export class Gateway {
  constructor(
    private readonly base: string,
    private readonly apiKey: string,
    private readonly token: string | null,
  ) {}

  program(): Promise<ProgramOverview> {
    return this.call("GET", "/v1/program");
  }

  loyaltyPage(customer: string): Promise<LoyaltyPage> {
    return this.call("GET", `/v1/customers/${encodeURIComponent(customer)}/loyalty`);
  }

  /** Makes the customer's referral code (once; later calls answer the same code). */
  createReferralCode(customer: string): Promise<{ code?: string }> {
    return this.call("POST", `/v1/customers/${encodeURIComponent(customer)}/referral`, {});
  }

  /** The customer's vouchers still to be used, newest first. */
  async heldVouchers(customer: string): Promise<Redemption[]> {
    const page = await this.call<{ redemptions: Redemption[] }>(
      "GET",
      `/v1/customers/${encodeURIComponent(customer)}/redemptions?page_size=50`,
    );
    return page.redemptions.filter((r) => r.status === "active" && r.voucher_code);
  }

  /** The member gives their birthday (once). */
  setBirthday(customer: string, month: number, day: number): Promise<unknown> {
    return this.call("PUT", `/v1/customers/${encodeURIComponent(customer)}/birthday`, { birth_month: month, birth_day: day });
  }

  redeem(customer: string, rewardId: string): Promise<Redemption> {
    return this.call("POST", `/v1/customers/${encodeURIComponent(customer)}/redemptions`, { reward_id: rewardId });
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.apiKey}`, Accept: "application/json" };
    if (this.token) headers["X-Customer-Token"] = this.token;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      // One key per click: a network retry of the same request redeems once.
      headers["Idempotency-Key"] = randomKey();
    }
    const answer = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
    });
    if (answer.ok) return (await answer.json()) as T;
    let code = "UNKNOWN";
    try {
      code = ((await answer.json()) as { code?: string }).code ?? code;
    } catch {
      // Not problem+json (a proxy's error page): the status says enough.
    }
    throw new Problem(answer.status, code);
  }
}

function randomKey(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The customer id a token carries (`v1.<base64url id>.<issued at>.<signature>`); the gateway checks the rest. */
export function tokenCustomer(token: string): string | null {
  const parts = token.split(".");
  if (parts.length !== 4 || parts[0] !== "v1") return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const id = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
    return id.length > 0 ? id : null;
  } catch {
    return null;
  }
}
