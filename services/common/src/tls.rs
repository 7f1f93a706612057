//! TLS on every listener (gRPC, metrics, the gateway's HTTP) and on the
//! services' calls to each other, with rustls: given a certificate and key,
//! a binary serves TLS only; given a client CA, its gRPC listener also
//! demands client certificates (mutual TLS); given a CA, its outbound calls
//! use TLS and present its own certificate. Without files, plain text, for
//! local development.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings every binary shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain served on every listener (gRPC, metrics, the gateway's HTTP);
    /// with `LOYALTY_TLS_KEY`, they speak TLS only. Unset: plain text.
    #[arg(long, env = "LOYALTY_TLS_CERT", value_name = "LOYALTY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `LOYALTY_TLS_CERT`.
    #[arg(long, env = "LOYALTY_TLS_KEY", value_name = "LOYALTY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: gRPC listeners then require client certificates it signed (mutual TLS between services).
    #[arg(long, env = "LOYALTY_TLS_CLIENT_CA", value_name = "LOYALTY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle: calls to other services then use TLS and trust servers it signed,
    /// presenting `LOYALTY_TLS_CERT` as client certificate when set.
    #[arg(long, env = "LOYALTY_TLS_CA", value_name = "LOYALTY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("LOYALTY_TLS_CERT and LOYALTY_TLS_KEY go together: set both or neither")]
    Incomplete,
    #[error("LOYALTY_TLS_CLIENT_CA needs LOYALTY_TLS_CERT and LOYALTY_TLS_KEY: mutual TLS is TLS first")]
    ClientCaWithoutCertificate,
    #[error("{variable} {path}: {source}")]
    Read { variable: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{variable} {path}: {detail}")]
    Pem { variable: &'static str, path: PathBuf, detail: String },
    #[error("LOYALTY_TLS_CERT / LOYALTY_TLS_KEY: {0}")]
    Config(#[from] rustls::Error),
}

/// Loaded certificates, checked at start-up so a bad file fails the start, not the first call.
#[derive(Clone, Default)]
pub struct Tls {
    server: Option<ServerMaterial>,
    client: Option<ClientTlsConfig>,
}

#[derive(Clone)]
struct ServerMaterial {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    http: TlsAcceptor,
}

impl Tls {
    /// Plain text everywhere.
    pub fn plain() -> Self {
        Self::default()
    }

    pub fn load(args: &TlsArgs) -> Result<Self, TlsError> {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((read("LOYALTY_TLS_CERT", cert)?, read("LOYALTY_TLS_KEY", key)?)),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete),
        };
        let client_ca_pem =
            args.tls_client_ca.as_deref().map(|path| read("LOYALTY_TLS_CLIENT_CA", path)).transpose()?;
        let server = match &identity {
            Some((cert_pem, key_pem)) => {
                let config = http_server_config(cert_pem, key_pem, args)?;
                Some(ServerMaterial {
                    cert_pem: cert_pem.clone(),
                    key_pem: key_pem.clone(),
                    client_ca_pem,
                    http: TlsAcceptor::from(Arc::new(config)),
                })
            }
            None if client_ca_pem.is_some() => return Err(TlsError::ClientCaWithoutCertificate),
            None => None,
        };
        let client = match &args.tls_ca {
            Some(path) => {
                let ca = read("LOYALTY_TLS_CA", path)?;
                pem_certificates("LOYALTY_TLS_CA", path, &ca)?;
                let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
                if let Some((cert, key)) = identity {
                    config = config.identity(Identity::from_pem(cert, key));
                }
                Some(config)
            }
            None => None,
        };
        Ok(Self { server, client })
    }

    /// True when listeners serve TLS.
    pub fn serves_tls(&self) -> bool {
        self.server.is_some()
    }

    /// The gRPC listener's TLS, with client certificates required when a client CA is set.
    pub fn grpc_server(&self) -> Option<ServerTlsConfig> {
        let material = self.server.as_ref()?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&material.cert_pem, &material.key_pem));
        if let Some(ca) = &material.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(false);
        }
        Some(config)
    }

    /// TLS for calls to other services; `None`: plain text.
    pub fn grpc_client(&self) -> Option<ClientTlsConfig> {
        self.client.clone()
    }

    /// The URI of a `host:port` peer, `https://` when calls use TLS.
    pub fn peer_uri(&self, host_port: &str) -> String {
        let scheme = if self.client.is_some() { "https" } else { "http" };
        format!("{scheme}://{host_port}")
    }

    /// Serves `router` on `listener` until `shutdown` resolves, over TLS when configured.
    pub async fn serve_http(
        &self,
        listener: TcpListener,
        router: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match &self.server {
            Some(material) => {
                let listener = TlsListener::new(listener, material.http.clone())?;
                axum::serve(listener, router).with_graceful_shutdown(shutdown).await
            }
            None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
        }
    }
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { variable, path: path.to_owned(), source })
}

fn pem_certificates(
    variable: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let pem_error = |detail: String| TlsError::Pem { variable, path: path.to_owned(), detail };
    let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(pem_error("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// The HTTP listeners' rustls configuration (HTTP/1.1; clients are browsers, curl and Prometheus).
fn http_server_config(cert_pem: &[u8], key_pem: &[u8], args: &TlsArgs) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let cert_path = args.tls_cert.clone().unwrap_or_default();
    let key_path = args.tls_key.clone().unwrap_or_default();
    let chain = pem_certificates("LOYALTY_TLS_CERT", &cert_path, cert_pem)?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        variable: "LOYALTY_TLS_KEY",
        path: key_path,
        detail: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener whose connections are TLS streams. Handshakes run in their own
/// tasks, so one slow client never holds up the others.
struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (tls, sender) = (tls.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _closed = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready, acceptor })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor task only ends when aborted on drop, so this is never reached while serving.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
