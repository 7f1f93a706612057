//! The customer's tier multiplier, asked of the tiers service with a deadline.
//! Without `TIERS_ADDR` every customer earns at 1x. With it, a tiers service
//! that does not answer fails the earn with UNAVAILABLE (the caller retries
//! with the same key) rather than award the wrong amount.

use std::time::Duration;

use loyalty_proto::tiers::v1::tiers_service_client::TiersServiceClient;
use loyalty_proto::tiers::v1::{GetLadderRequest, GetMultiplierRequest};

use loyalty_common::clock::{Micros, to_timestamp};
use loyalty_common::peer::{PeerChannel, Peers};

use crate::domain::rules::{BP_ONE, MAX_MULTIPLIER_BP, TierStanding};
use crate::error::Error;

type TiersClient = TiersServiceClient<PeerChannel>;

#[derive(Clone, Debug)]
pub enum TierSource {
    /// No tiers service: 1x for everyone.
    Off,
    Remote {
        /// Boxed: the client is large next to `Off`, and cloned per call anyway.
        client: Box<TiersClient>,
        deadline: Duration,
    },
}

impl TierSource {
    /// Connects lazily, so the points service starts while tiers is down.
    pub fn connect(addr: Option<&str>, deadline: Duration, peers: &Peers) -> Result<Self, tonic::transport::Error> {
        let Some(addr) = addr.filter(|a| !a.is_empty()) else { return Ok(Self::Off) };
        Ok(Self::Remote { client: Box::new(TiersServiceClient::new(peers.lazy(addr, deadline)?)), deadline })
    }

    /// The customer's tier when the order was placed (`at`).
    pub async fn standing(&self, program_id: &str, customer_id: &str, at: Micros) -> Result<TierStanding, Error> {
        let Self::Remote { client, deadline } = self else { return Ok(TierStanding::none()) };
        let mut request = tonic::Request::new(GetMultiplierRequest {
            program_id: program_id.into(),
            customer_id: customer_id.into(),
            at: Some(to_timestamp(at)),
        });
        request.set_timeout(*deadline);
        match TiersClient::clone(client).get_multiplier(request).await {
            Ok(response) => {
                let answer = response.into_inner();
                Ok(TierStanding {
                    tier_id: answer.tier_id,
                    multiplier_bp: i64::from(answer.multiplier_bp).clamp(BP_ONE, MAX_MULTIPLIER_BP),
                    birthday_multiplier_bp: i64::from(answer.birthday_multiplier_bp).clamp(BP_ONE, MAX_MULTIPLIER_BP),
                })
            }
            // A customer the tiers service does not know has no tier.
            Err(status) if status.code() == tonic::Code::NotFound => Ok(TierStanding::none()),
            Err(status) => Err(Error::TiersUnavailable(status)),
        }
    }

    /// The tier ids on the program's ladder; `None` without a tiers service.
    pub async fn tier_ids(&self, program_id: &str) -> Result<Option<Vec<String>>, Error> {
        let Self::Remote { client, deadline } = self else { return Ok(None) };
        let mut request = tonic::Request::new(GetLadderRequest { program_id: program_id.into() });
        request.set_timeout(*deadline);
        let ladder =
            TiersClient::clone(client).get_ladder(request).await.map_err(Error::TiersUnavailable)?.into_inner().ladder;
        Ok(Some(ladder.map(|l| l.tiers.into_iter().map(|t| t.tier_id).collect()).unwrap_or_default()))
    }
}
