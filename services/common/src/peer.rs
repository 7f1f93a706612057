//! Calls to other loyalty services: every call carries this service's
//! identity (when it has one) and the current trace context, over TLS when
//! `LOYALTY_TLS_CA` is set.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Security, ServiceSecret};
use crate::spans::ClientSpans;
use crate::telemetry::inject_trace_context;
use crate::tls::Tls;

/// A channel whose calls carry credentials and trace context, each in a client span.
pub type PeerChannel = ClientSpans<InterceptedService<Channel, Credentials>>;

/// How to reach other services: TLS settings and the identity to present.
#[derive(Clone, Default)]
pub struct Peers {
    tls: Tls,
    credentials: Credentials,
}

impl Peers {
    pub fn new(security: &Security, tls: &Tls) -> Self {
        let authorization = security.outbound_token().map(|token| service_bearer(&token));
        Self { tls: tls.clone(), credentials: Credentials { authorization } }
    }

    /// Presenting the identity of service `name` (the gateway, which checks its own callers).
    pub fn presenting(name: &str, secret: &ServiceSecret, tls: &Tls) -> Self {
        let authorization = Some(service_bearer(&secret.token(name)));
        Self { tls: tls.clone(), credentials: Credentials { authorization } }
    }

    /// Plain text, no identity: for tools and tests talking to services with `LOYALTY_AUTH=off`.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Plain text, presenting `token` (an API key or a service token): tools and tests.
    pub fn with_token(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Self { tls: Tls::plain(), credentials: Credentials { authorization: Some(bearer(token)?) } })
    }

    /// Same identity, over `tls`.
    pub fn over(self, tls: Tls) -> Self {
        Self { tls, ..self }
    }

    /// The endpoint of `address` (`host:port`, or a URI), with TLS when configured. With TLS an
    /// `http://` address is called over TLS all the same: this service's identity never travels in
    /// plain text once `LOYALTY_TLS_CA` is set.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        let host_port = address.strip_prefix("http://").filter(|_| self.tls.grpc_client().is_some());
        let uri = match host_port {
            Some(host_port) => self.tls.peer_uri(host_port),
            None if address.contains("://") => address.to_owned(),
            None => self.tls.peer_uri(address),
        };
        let endpoint = Endpoint::from_shared(uri)?;
        match self.tls.grpc_client() {
            Some(tls) => endpoint.tls_config(tls),
            None => Ok(endpoint),
        }
    }

    /// A channel to `address` that connects on first use (so a service starts
    /// while its peers are down), each call bounded by `deadline`, with this
    /// service's credentials.
    pub fn lazy(&self, address: &str, deadline: Duration) -> Result<PeerChannel, tonic::transport::Error> {
        Ok(self.attach(self.endpoint(address)?.connect_timeout(deadline).timeout(deadline).connect_lazy()))
    }

    /// [`Peers::lazy`] to an optional peer: `None` when its address is unset or empty.
    pub fn optional(
        &self,
        address: Option<&str>,
        deadline: Duration,
    ) -> Result<Option<PeerChannel>, tonic::transport::Error> {
        address.filter(|a| !a.is_empty()).map(|a| self.lazy(a, deadline)).transpose()
    }

    /// `channel` with this service's credentials on every call.
    pub fn attach(&self, channel: Channel) -> PeerChannel {
        ClientSpans::new(InterceptedService::new(channel, self.credentials.clone()))
    }
}

/// The client interceptor: `authorization` plus W3C trace context.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = inject_trace_context(request)?;
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}

/// Service tokens are `svc.<name>.<hex>`: always a valid header value.
fn service_bearer(token: &str) -> MetadataValue<Ascii> {
    bearer(token).expect("service tokens are ASCII")
}

fn bearer(token: &str) -> Result<MetadataValue<Ascii>, tonic::metadata::errors::InvalidMetadataValue> {
    format!("Bearer {token}").parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsArgs;

    #[test]
    fn with_tls_configured_no_call_goes_out_in_plain_text() {
        let dir = std::env::temp_dir().join(format!("loyalty-peer-{}", crate::testing::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let tls = Tls::load(&TlsArgs { tls_ca: Some(dir.join("ca.pem")), ..TlsArgs::default() }).unwrap();
        let peers = Peers::anonymous().over(tls);
        for address in ["points:50051", "http://points:50051", "https://points:50051"] {
            assert_eq!(peers.endpoint(address).unwrap().uri().scheme_str(), Some("https"), "{address}");
        }
        let plain = Peers::anonymous();
        assert_eq!(plain.endpoint("points:50051").unwrap().uri().scheme_str(), Some("http"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
