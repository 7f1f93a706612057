//! A service binary run as a child process on a fixed loopback port, that a
//! test kills (SIGKILL) and starts again with the same environment: what a
//! crash and a restart by the orchestrator look like to the rest of the mesh.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a fresh process may take to report SERVING.
const START_DEADLINE: Duration = Duration::from_secs(30);

pub struct ServiceProcess {
    binary: PathBuf,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ServiceProcess {
    /// Starts `binary` with `env` plus `<addr_var>=127.0.0.1:<free port>`,
    /// and returns once its gRPC health check answers SERVING. Its output
    /// goes to a log file, shown when it fails to start.
    pub async fn spawn(binary: impl Into<PathBuf>, addr_var: &str, env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free loopback port for a service process: {e}"))
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        env.push((addr_var.to_owned(), addr.to_string()));
        let log = std::env::temp_dir().join(format!("loyalty-process-{}.log", crate::testing::unique_suffix()));
        let mut process = Self { binary: binary.into(), env, addr, log, child: None, starts: 0 };
        process.start().await;
        process
    }

    /// The gRPC address, the same across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for a tonic client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no shutdown, no draining; in-flight calls break mid-way.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again with the same environment and port; returns
    /// once it reports SERVING.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} on {} is still running", self.binary.display(), self.addr);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let err = log.try_clone().unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.await_serving().await;
    }

    /// SIGKILL, then start again.
    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    /// What the process wrote so far, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn await_serving(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if self.serving().await {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited at start #{}: {status}\n{}", self.binary.display(), self.starts, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} on {} did not report SERVING within {START_DEADLINE:?}\n{}",
                self.binary.display(),
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn serving(&self) -> bool {
        let Ok(channel) = tonic::transport::Endpoint::from_shared(self.url()).map(|e| e.connect_lazy()) else {
            return false;
        };
        let mut client = HealthClient::new(channel);
        let request = HealthCheckRequest { service: String::new() };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), client.check(request)).await,
            Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
        )
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
