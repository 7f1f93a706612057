//! The customer's lifecycle segment, asked of the insights service with a
//! deadline, and only when an active campaign for the earn targets segments.
//! Without `INSIGHTS_ADDR` no segment is known and such campaigns cannot be
//! created. With it, an insights service that does not answer fails the
//! earn with UNAVAILABLE (the caller retries with the same key) rather than
//! award the wrong amount, as a silent tiers service does.

use std::time::Duration;

use loyalty_common::peer::{PeerChannel, Peers};
use loyalty_proto::insights::v1::insights_service_client::InsightsServiceClient;
use loyalty_proto::insights::v1::{GetSegmentRequest, Segment};

use crate::error::Error;

type InsightsClient = InsightsServiceClient<PeerChannel>;

#[derive(Clone, Debug)]
pub enum SegmentSource {
    /// No insights service: no customer is in any segment.
    Off,
    Remote {
        /// Boxed: the client is large next to `Off`, and cloned per call anyway.
        client: Box<InsightsClient>,
        deadline: Duration,
    },
}

impl SegmentSource {
    /// Connects lazily, so the points service starts while insights is down.
    pub fn connect(addr: Option<&str>, deadline: Duration, peers: &Peers) -> Result<Self, tonic::transport::Error> {
        let Some(addr) = addr.filter(|a| !a.is_empty()) else { return Ok(Self::Off) };
        Ok(Self::Remote { client: Box::new(InsightsServiceClient::new(peers.lazy(addr, deadline)?)), deadline })
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Self::Remote { .. })
    }

    /// The customer's segment now, by the names campaigns use (`at_risk`);
    /// none without an insights service.
    pub async fn segment(&self, program_id: &str, customer_id: &str) -> Result<Option<&'static str>, Error> {
        let Self::Remote { client, deadline } = self else { return Ok(None) };
        let mut request =
            tonic::Request::new(GetSegmentRequest { program_id: program_id.into(), customer_id: customer_id.into() });
        request.set_timeout(*deadline);
        let reply = InsightsClient::clone(client).get_segment(request).await.map_err(Error::InsightsUnavailable)?;
        Ok(match reply.into_inner().segment() {
            Segment::Unspecified => None,
            Segment::New => Some("new"),
            Segment::Active => Some("active"),
            Segment::Loyal => Some("loyal"),
            Segment::AtRisk => Some("at_risk"),
            Segment::Churned => Some("churned"),
        })
    }
}
