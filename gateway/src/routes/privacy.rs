//! A customer's rights over their data (scope `admin`): the export of
//! everything every service holds about a customer, and erasure. Each
//! service answers for what it holds (`loyalty.privacy.v1`); the gateway
//! asks every service it has an address for and answers for the mesh.

use axum::extract::State;
use axum::response::Response;

use loyalty_common::privacy::anonymous_id;

use crate::extract::{AdminScope, Authorized, Segment};
use crate::model::{self, CustomerErasure, CustomerExport, ServiceErasure};
use crate::problem::{Problem, ProblemDocument};
use crate::routes::{AppState, json};
use crate::rpc;
use crate::upstream::Reply;

/// The answers, or the problem of the first service that failed.
fn all_answered<T>(
    answers: Vec<(&'static str, Result<Reply<T>, tonic::Status>)>,
) -> Result<Vec<(&'static str, T)>, Problem> {
    answers
        .into_iter()
        .map(|(name, answer)| {
            answer.map(|reply| (name, reply.message)).map_err(|status| Problem::from_upstream(name, &status))
        })
        .collect()
}

/// Everything the loyalty services hold about a customer, as one JSON
/// document (the customer's right of access).
///
/// One part per service the gateway has an address for; the export is
/// audited in the program's audit log (`customer_export`, by the key). A
/// service that does not answer fails the whole export (503): an export with
/// a part missing would look complete.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/export",
    tag = "admin",
    operation_id = "exportCustomer",
    security(("api_key" = ["admin"])),
    params(("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id")),
    responses(
        (status = 200, description = "Everything held about the customer, service by service", body = CustomerExport),
        (status = 422, description = "The customer id is invalid", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
) -> Result<Response, Problem> {
    let request = model::export_request(auth.program(), &customer_id, auth.actor());
    let answers = all_answered(state.upstreams.every_service(request, rpc!(export_customer)).await)?;
    let not_configured = state.upstreams.not_configured();
    Ok(json(&CustomerExport::from_answers(auth.program(), customer_id, answers, not_configured)?))
}

/// Erases a customer (the right to erasure): their personal data leaves
/// every service, and what the program's totals are made of stays under an
/// anonymous id.
///
/// Ledger entries, lots, orders, memberships, redemptions, referrals and the
/// insights' counts move to one fresh anonymous id (`anon-` and 32 hex
/// digits, the same in every service and linked to the customer nowhere),
/// with free text (reasons, survey comments) blanked; the profile, the
/// referral code, webhook events and deliveries, reminders and saved answers
/// naming the customer are deleted; a cached balance is dropped. Balances,
/// KPIs, tier distributions and referral counts do not change. A gift to
/// the erased id is refused afterwards (409 `CUSTOMER_ERASED`). Audited in
/// the program's audit log (`customer_erasure`, under the anonymous id).
///
/// Points is erased first, then the others at once. Safe to repeat: when a
/// service fails (503), retry; what is left is erased (under another
/// anonymous id) and the answer counts what this call did. Writes about the
/// customer sent after the erasure make new records under their id.
#[utoipa::path(
    delete,
    path = "/v1/customers/{customer_id}",
    tag = "admin",
    operation_id = "eraseCustomer",
    security(("api_key" = ["admin"])),
    params(("customer_id" = String, Path, min_length = 1, max_length = 128, description = "The shop's customer id")),
    responses(
        (status = 200, description = "What each service did", body = CustomerErasure),
        (status = 422, description = "The customer id is invalid (or already an anonymous id)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    auth: Authorized<AdminScope>,
    Segment(customer_id): Segment<String>,
) -> Result<Response, Problem> {
    let request = model::erase_request(auth.program(), &customer_id, anonymous_id(), auth.actor());
    let answers = all_answered(state.upstreams.every_service(request, rpc!(erase_customer)).await)?;
    let services = answers.into_iter().map(ServiceErasure::from).collect();
    Ok(json(&CustomerErasure { services, not_configured: state.upstreams.not_configured() }))
}
