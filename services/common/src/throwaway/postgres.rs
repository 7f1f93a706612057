//! A private PostgreSQL cluster in a temporary directory on a free loopback
//! port, that a test restarts, stops and starts again on the same port: what
//! a database failover or restart looks like to the services. It can also
//! get a synchronous streaming standby (`pg_basebackup`), that a test
//! promotes after killing the primary.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// How long `pg_ctl` waits for the server to start or stop, in seconds.
const PG_CTL_WAIT_SECS: &str = "30";

pub struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    running: AtomicBool,
}

impl ThrowawayPostgres {
    /// Runs `initdb` and starts the cluster (as the `postgres` OS user when we
    /// are root); panics with a clear message when the binaries are missing or
    /// the server does not start.
    pub fn start() -> Self {
        let postgres = Self::empty();
        let data = postgres.data_dir();
        postgres.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        postgres.start_again();
        postgres
    }

    /// A directory and a port, nothing in them yet.
    fn empty() -> Self {
        let bin = binaries();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free loopback port for PostgreSQL: {e}"))
            .port();
        let dir = std::env::temp_dir().join(format!("loyalty-postgres-{}", crate::testing::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        if is_root() {
            let chown = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status();
            assert!(
                chown.is_ok_and(|s| s.success()),
                "cannot hand {} to the postgres OS user (does it exist?)",
                dir.display()
            );
        }
        Self { bin, dir, port, running: AtomicBool::new(false) }
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), started and
    /// made synchronous: from then on this primary acknowledges a commit
    /// only once the standby has it on disk (`synchronous_standby_names`).
    /// Returns once the primary reports the standby `sync`.
    pub fn start_standby(&self) -> Self {
        let standby = Self::empty();
        let data = standby.data_dir();
        let port = self.port.to_string();
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ],
        );
        standby.start_again();
        self.sql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        self.sql("SELECT pg_reload_conf()");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.sql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").trim() != "1" {
            assert!(std::time::Instant::now() < deadline, "the standby never became synchronous:\n{}", standby.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        standby
    }

    /// `pg_ctl promote`: a standby becomes a primary; returns once it accepts writes.
    pub fn promote(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", &data, "-w", "-t", PG_CTL_WAIT_SECS, "promote"]);
    }

    /// `pg_ctl stop -m immediate`: the server is gone at once, as a machine
    /// that died (no checkpoint; a standby keeps whatever it was sent).
    pub fn kill(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"]);
        self.running.store(false, Ordering::SeqCst);
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Runs one statement with `psql`; its output, unaligned, without headers.
    pub fn sql(&self, statement: &str) -> String {
        let port = self.port.to_string();
        let output = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "postgres", "-XAtq", "-c", statement])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(output.status.success(), "psql {statement:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// `pg_ctl restart -m fast`: every session is terminated (SQLSTATE
    /// 57P01), the server goes away briefly and comes back on the same port.
    pub fn restart(&self) {
        let data = self.data_dir();
        let options = self.server_options();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-m",
                "fast",
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "-o",
                &options,
                "-l",
                &self.log_path(),
                "restart",
            ],
        );
        self.running.store(true, Ordering::SeqCst);
    }

    /// `pg_ctl stop -m fast`; returns once the server is gone.
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", PG_CTL_WAIT_SECS, "stop"]);
        self.running.store(false, Ordering::SeqCst);
    }

    /// Starts the server on the same port; returns once it accepts connections.
    pub fn start_again(&self) {
        assert!(!self.running.load(Ordering::SeqCst), "PostgreSQL on port {} is already running", self.port);
        let data = self.data_dir();
        let options = self.server_options();
        self.run(
            "pg_ctl",
            &["-D", &data, "-w", "-t", PG_CTL_WAIT_SECS, "-o", &options, "-l", &self.log_path(), "start"],
        );
        self.running.store(true, Ordering::SeqCst);
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn server_options(&self) -> String {
        // No fsync: the cluster is thrown away; the socket directory is ours, not /var/run.
        format!("-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off", self.port, self.dir.display())
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn log_path(&self) -> String {
        self.dir.join("server.log").display().to_string()
    }

    /// One of the PostgreSQL binaries, run as the `postgres` OS user when we
    /// are root, since the server refuses to run as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    /// Runs `program`; panics with its output and the server log on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} from {}: {e}", self.bin.display()));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            let data = self.data_dir();
            let _ = self
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "-t", PG_CTL_WAIT_SECS, "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb and pg_ctl, or
/// the directory of the `initdb` on PATH.
fn binaries() -> PathBuf {
    let has_all = |dir: &Path| ["initdb", "pg_ctl", "postgres", "psql"].iter().all(|b| dir.join(b).exists());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_all(dir))
        .unwrap_or_else(|| panic!("PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found under /usr/lib/postgresql/*/bin or on PATH"))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
