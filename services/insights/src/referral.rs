//! The referral funnel for the program KPIs, asked of the referral service
//! (`REFERRAL_ADDR`) with a deadline. The KPIs do not wait on it: a
//! referral service that does not answer leaves the funnel out and says so.

use std::time::Duration;

use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_proto::insights::v1 as pb;
use loyalty_proto::referral::v1::GetReferralFunnelRequest;
use loyalty_proto::referral::v1::referral_service_client::ReferralServiceClient;

pub struct ReferralSource {
    client: ReferralServiceClient<PeerChannel>,
    deadline: Duration,
}

impl ReferralSource {
    /// Connects lazily to the referral service at `addr`; `None` without one.
    pub fn connect(
        addr: Option<&str>,
        deadline: Duration,
        peers: &Peers,
    ) -> Result<Option<Self>, tonic::transport::Error> {
        Ok(peers
            .optional(addr, deadline)?
            .map(|channel| Self { client: ReferralServiceClient::new(channel), deadline }))
    }

    /// Friends who signed up from `from` to `until` (excluded) and how many
    /// of them completed; `None` when the referral service did not answer.
    pub async fn funnel(&self, program_id: &str, from: Micros, until: Micros) -> Option<pb::ReferralFunnel> {
        let mut request = tonic::Request::new(GetReferralFunnelRequest {
            program_id: program_id.to_owned(),
            from: Some(to_timestamp(from)),
            to: Some(to_timestamp(until)),
        });
        request.set_timeout(self.deadline);
        match self.client.clone().get_referral_funnel(request).await {
            Ok(reply) => {
                let f = reply.into_inner();
                Some(pb::ReferralFunnel {
                    signed_up: f.signed_up,
                    completed: f.completed,
                    conversion_percent: f.conversion_percent,
                })
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "the referral funnel is unavailable");
                None
            }
        }
    }
}
