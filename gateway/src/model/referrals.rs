//! Referral codes, sign-ups, stats and settings.

use super::*;

/// The referral cap's period when the settings do not say.
fn default_cap_period_days() -> i32 {
    30
}

// ---------------------------------------------------------------- referrals

/// How a customer's referrals went, served as the referral service answers it.
pub use referral_pb::GetReferralStatsResponse as ReferralStats;

/// The customer's own referral code, and how their referrals went.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerReferral {
    pub customer_id: String,
    /// Stable once issued; absent until `POST /v1/customers/{customer_id}/referral` made it
    /// (reading makes nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// False when there is no code yet, the code was disabled, or the program has referrals off.
    pub enabled: bool,
    pub stats: ReferralStats,
}

impl CustomerReferral {
    pub fn from_proto(customer_id: String, r: referral_pb::GetReferralSummaryResponse) -> Self {
        let (code, stats) = (r.code.unwrap_or_default(), r.stats.unwrap_or_default());
        Self { customer_id, code: non_empty(code.code), enabled: code.enabled, stats }
    }
}

pub fn code_request(program_id: &str, customer_id: &str) -> referral_pb::GetOrCreateCodeRequest {
    referral_pb::GetOrCreateCodeRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

/// The code and its stats, in one referral call.
pub fn referral_summary_request(program_id: &str, customer_id: &str) -> referral_pb::GetReferralSummaryRequest {
    referral_pb::GetReferralSummaryRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned() }
}

/// What a code is worth, for a storefront ("Anna invited you: 500 points").
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeInfo {
    pub code: String,
    /// False for unknown or disabled codes, or when referrals are off.
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer_customer_id: Option<String>,
    /// The friend's welcome bonus.
    pub referee_points: i64,
    /// The friend's first order must reach this amount to qualify.
    pub minimum_order_minor: i64,
}

impl CodeInfo {
    pub fn from_proto(code: String, r: referral_pb::ResolveCodeResponse) -> Self {
        Self {
            code,
            valid: r.valid,
            referrer_customer_id: non_empty(r.referrer_customer_id).filter(|_| r.valid),
            referee_points: r.referee_points,
            minimum_order_minor: r.minimum_order_minor,
        }
    }
}

pub fn resolve_code_request(program_id: &str, code: String) -> referral_pb::ResolveCodeRequest {
    referral_pb::ResolveCodeRequest { program_id: program_id.to_owned(), code }
}

/// A friend signed up with a code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    pub code: String,
    /// The friend's customer id.
    pub customer_id: String,
}

impl SignupBody {
    pub fn into_proto(self, program_id: &str, key: String) -> referral_pb::RecordSignupRequest {
        signup_request(program_id, self.code, self.customer_id, key)
    }
}

pub fn signup_request(
    program_id: &str,
    code: String,
    referee_customer_id: String,
    key: String,
) -> referral_pb::RecordSignupRequest {
    referral_pb::RecordSignupRequest {
        program_id: program_id.to_owned(),
        code,
        referee_customer_id,
        idempotency_key: key,
    }
}

/// A referral, served as the referral service answers it; an unspecified or unknown status is
/// `unknown`.
pub use referral_pb::{ListReferralsResponse as ReferralPage, Referral, ReferralStatus};

/// The friends a customer referred, newest first.
pub fn referrals_request(program_id: &str, customer_id: &str, page: PageQuery) -> referral_pb::ListReferralsRequest {
    referral_pb::ListReferralsRequest {
        program_id: program_id.to_owned(),
        referrer_customer_id: customer_id.to_owned(),
        page_size: page.page_size.unwrap_or(0),
        page_token: page.page_token.unwrap_or_default(),
    }
}

/// What became of an order's `referral_code`. The order earns its points either way.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralOutcome {
    pub recorded: bool,
    /// Why not, when not recorded: the referral service's reason (`ALREADY_REFERRED`, `UNKNOWN_CODE`,
    /// `SELF_REFERRAL`, `EXISTING_CUSTOMER`, `REFERRALS_DISABLED`, ...), or `BACKEND_NOT_CONFIGURED`
    /// / `UNAVAILABLE` when the service could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pending referral, when recorded; it completes on its own once the order counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral: Option<Referral>,
}

impl ReferralOutcome {
    /// The sign-up's answer; a refusal or an outage is reported, never raised.
    pub fn from_signup(answer: Result<referral_pb::RecordSignupResponse, Problem>) -> Self {
        match answer {
            Ok(r) => Self { recorded: true, reason: None, referral: Some(r.referral.unwrap_or_default()) },
            Err(problem) => {
                if problem.status().is_server_error() {
                    tracing::warn!(code = %problem.code, "an order's referral sign-up was not recorded");
                }
                Self { recorded: false, reason: Some(problem.code.clone()), referral: None }
            }
        }
    }
}

/// A referral program's rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralSettingsBody {
    /// Off until a shop turns it on.
    pub enabled: bool,
    pub referrer_points: i64,
    /// The friend's welcome bonus.
    pub referee_points: i64,
    /// The friend's first order must reach this amount to qualify.
    #[serde(default)]
    pub minimum_order_minor: i64,
    /// At most `cap_count` referrals per referrer per `cap_period_days`; 0 (the default): no cap.
    #[serde(default)]
    pub cap_count: i32,
    /// The cap's period; absent: 30 days.
    #[serde(default = "default_cap_period_days")]
    #[schema(default = 30)]
    pub cap_period_days: i32,
    /// Days from sign-up to the qualifying order.
    pub attribution_window_days: i32,
    /// Days after completion in which a refund of the qualifying order claws back.
    pub clawback_window_days: i32,
    /// The friend's welcome voucher: a reward given at sign-up, beside `referee_points`; absent: none.
    #[serde(default)]
    pub referee_reward_id: String,
    /// The referrer's reward as a voucher of this reward instead of `referrer_points`; absent: points.
    #[serde(default)]
    pub referrer_reward_id: String,
    /// When set, the change is refused (409 `VERSION_MISMATCH`) unless the stored version still matches.
    pub expected_version: Option<i64>,
}

impl ReferralSettingsBody {
    pub fn into_proto(self, program_id: &str, actor: String, key: String) -> referral_pb::PutReferralSettingsRequest {
        referral_pb::PutReferralSettingsRequest {
            program_id: program_id.to_owned(),
            settings: Some(referral_pb::ReferralSettings {
                enabled: self.enabled,
                referrer_points: self.referrer_points,
                referee_points: self.referee_points,
                minimum_order_minor: self.minimum_order_minor,
                cap_count: self.cap_count,
                cap_period_days: self.cap_period_days,
                attribution_window_days: self.attribution_window_days,
                clawback_window_days: self.clawback_window_days,
                version: 0,
                referee_reward_id: self.referee_reward_id,
                referrer_reward_id: self.referrer_reward_id,
            }),
            actor,
            idempotency_key: key,
            expected_version: self.expected_version,
        }
    }
}

/// The referral rules as stored, served as the referral service answers them.
pub use referral_pb::ReferralSettings;

pub fn referral_settings_request(program_id: &str) -> referral_pb::GetReferralSettingsRequest {
    referral_pb::GetReferralSettingsRequest { program_id: program_id.to_owned() }
}
