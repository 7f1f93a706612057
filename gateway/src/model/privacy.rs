//! A customer's rights: the export of everything the mesh holds about a
//! customer and the account of an erasure.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use loyalty_proto::privacy::v1 as privacy_pb;

use crate::problem::Problem;

/// Everything the loyalty services hold about one customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerExport {
    pub program_id: String,
    pub customer_id: String,
    /// One document per service, by name (`points`, `tiers`, `referral`,
    /// `rewards`, `insights`, `webhooks`): one member per kind of record the
    /// service keeps, a list (oldest first) or a single record (null when
    /// none); instants in RFC 3339. Points' `exports` lists this export too.
    #[schema(value_type = Object)]
    pub services: BTreeMap<&'static str, serde_json::Value>,
    /// Services the gateway has no address for: what they may hold is not here.
    pub not_configured: Vec<&'static str>,
}

impl CustomerExport {
    /// The services' answers, each document parsed.
    pub fn from_answers(
        program_id: &str,
        customer_id: String,
        answers: Vec<(&'static str, privacy_pb::ExportCustomerResponse)>,
        not_configured: Vec<&'static str>,
    ) -> Result<Self, Problem> {
        let mut services = BTreeMap::new();
        for (name, answer) in answers {
            let document = serde_json::from_str(&answer.document).map_err(|error| {
                tracing::error!(service = name, %error, "an export document does not parse");
                Problem::internal()
            })?;
            services.insert(name, document);
        }
        Ok(Self { program_id: program_id.to_owned(), customer_id, services, not_configured })
    }
}

/// What one service did to erase the customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceErasure {
    /// `points`, `tiers`, `referral`, `rewards`, `insights` or `webhooks`.
    pub service: &'static str,
    /// Records kept for the program's totals, now under an anonymous id that nothing links to the customer.
    pub anonymized: i64,
    /// Records deleted.
    pub deleted: i64,
}

/// The erasure, service by service.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerErasure {
    pub services: Vec<ServiceErasure>,
    /// Services the gateway has no address for: erase there once they are configured.
    pub not_configured: Vec<&'static str>,
}

impl From<(&'static str, privacy_pb::EraseCustomerResponse)> for ServiceErasure {
    fn from((service, answer): (&'static str, privacy_pb::EraseCustomerResponse)) -> Self {
        Self { service, anonymized: answer.anonymized, deleted: answer.deleted }
    }
}

/// The export request every service is asked.
pub fn export_request(program_id: &str, customer_id: &str, actor: String) -> privacy_pb::ExportCustomerRequest {
    privacy_pb::ExportCustomerRequest { program_id: program_id.to_owned(), customer_id: customer_id.to_owned(), actor }
}

/// The erasure request every service is asked, with one anonymous id for all.
pub fn erase_request(
    program_id: &str,
    customer_id: &str,
    anonymous_id: String,
    actor: String,
) -> privacy_pb::EraseCustomerRequest {
    privacy_pb::EraseCustomerRequest {
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        anonymous_id,
        actor,
    }
}
