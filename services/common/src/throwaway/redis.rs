//! A private `redis-server` on a free loopback port, with nothing persisted,
//! that a test kills (SIGKILL) and starts again on the same port; and a
//! private Redis Cluster of six of them (three primaries, one replica each)
//! whose primaries a test kills to see a replica promoted.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh `redis-server` may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Fresh ports tried for a server that exits at start (its port was taken).
const START_ATTEMPTS: usize = 5;

pub struct ThrowawayRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments beyond the standard ones (cluster mode).
    extra: Vec<String>,
}

impl ThrowawayRedis {
    /// Starts `redis-server`; panics with a clear message when it is not
    /// installed or does not answer.
    pub fn spawn() -> Self {
        Self::spawn_with(|_| Vec::new())
    }

    /// `extra(port)`: the arguments beyond the standard ones for a server on
    /// `port`. A port found free may be taken by another process before the
    /// server binds it (or, for a cluster node, be the same as its bus port):
    /// the server then exits at once, and is started again on other ports.
    fn spawn_with(extra: impl Fn(u16) -> Vec<String>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let dir = std::env::temp_dir().join(format!("loyalty-redis-{}", crate::testing::unique_suffix()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            let port = free_port();
            let mut redis = Self { port, dir, child: None, extra: extra(port) };
            // A failed attempt is dropped: its directory goes with it.
            match redis.try_start() {
                Ok(()) => return redis,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start in {START_ATTEMPTS} attempts: {failures:?}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL: no shutdown, no save; every client connection breaks.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was saved);
    /// returns once it answers PING.
    pub fn start(&mut self) {
        self.try_start().unwrap_or_else(|failure| panic!("{failure}"));
    }

    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server on port {} is still running", self.port);
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server (is it installed and on PATH?): {e}"));
        self.child = Some(child);
        self.await_pong()
    }

    fn await_pong(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if ping(self.port) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("redis-server on port {} exited at start: {status}", self.port));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free loopback port for redis-server: {e}"))
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long forming the cluster, or a failover, may take.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// Six `redis-server`s in cluster mode on free loopback ports: three
/// primaries with one replica each, every slot covered. A primary that stops
/// answering is replaced by its replica after about a second
/// (`cluster-node-timeout` 1000 ms).
pub struct ThrowawayRedisCluster {
    nodes: Vec<ThrowawayRedis>,
}

impl ThrowawayRedisCluster {
    /// Starts the six servers, forms the cluster with `redis-cli --cluster
    /// create`, and returns once every node sees it whole and every replica
    /// is in sync; panics with a clear message when any of that fails.
    pub fn spawn() -> Self {
        let nodes: Vec<ThrowawayRedis> = (0..6)
            .map(|_| {
                // The cluster bus port is chosen too: port + 10000 may not be free.
                ThrowawayRedis::spawn_with(|port| {
                    let bus = std::iter::repeat_with(free_port).find(|&bus| bus != port).expect("endless");
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-port",
                        &bus.to_string(),
                        // DEBUG SLEEP: a test makes a replica lag behind its primary.
                        "--repl-diskless-sync-delay",
                        "0",
                        "--enable-debug-command",
                        "local",
                    ]
                    .map(str::to_owned)
                    .to_vec()
                })
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = create
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it installed and on PATH?): {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.await_healthy();
        cluster
    }

    /// `redis+cluster://127.0.0.1:<port>,...`, every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The ports of the nodes that are primaries now, as a live node sees it.
    pub fn primary_ports(&self) -> Vec<u16> {
        let nodes = self.live_ports().find_map(|port| cli(port, &["CLUSTER", "NODES"]));
        let nodes = nodes.expect("no cluster node answers CLUSTER NODES");
        nodes
            .lines()
            .filter(|line| {
                let flags = line.split(' ').nth(2).unwrap_or_default();
                flags.split(',').any(|f| f == "master") && !flags.split(',').any(|f| f == "fail" || f == "fail?")
            })
            .filter_map(|line| line.split(' ').nth(1)?.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect()
    }

    /// The port of the primary holding `key`'s slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot = self
            .live_ports()
            .find_map(|port| cli(port, &["CLUSTER", "KEYSLOT", key]))
            .expect("no cluster node answers CLUSTER KEYSLOT");
        let slot: u16 = slot.trim().parse().expect("CLUSTER KEYSLOT answers a number");
        let shards = self.live_ports().find_map(|port| cli(port, &["CLUSTER", "NODES"])).expect("CLUSTER NODES");
        shards
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let primary = fields.get(2)?.split(',').any(|f| f == "master");
                let owns = fields.get(8..)?.iter().any(|range| match range.split_once('-') {
                    Some((from, to)) => {
                        from.parse::<u16>().is_ok_and(|from| from <= slot)
                            && to.parse::<u16>().is_ok_and(|to| slot <= to)
                    }
                    None => range.parse::<u16>().ok() == Some(slot),
                });
                if !(primary && owns) {
                    return None;
                }
                fields[1].split('@').next()?.rsplit(':').next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
    }

    /// The port of a replica of the primary on `primary`.
    pub fn replica_of(&self, primary: u16) -> u16 {
        let nodes = self.live_ports().find_map(|port| cli(port, &["CLUSTER", "NODES"])).expect("CLUSTER NODES");
        let port_of =
            |line: &str| -> Option<u16> { line.split(' ').nth(1)?.split('@').next()?.rsplit(':').next()?.parse().ok() };
        let primary_id = nodes
            .lines()
            .find(|line| port_of(line) == Some(primary))
            .and_then(|line| line.split(' ').next())
            .unwrap_or_else(|| panic!("no node on port {primary}"));
        nodes
            .lines()
            .filter(|line| line.split(' ').nth(3) == Some(primary_id))
            .find_map(port_of)
            .unwrap_or_else(|| panic!("the primary on port {primary} has no replica"))
    }

    /// Makes the node on `port` unresponsive for `seconds` (`DEBUG SLEEP`):
    /// a replica asleep does not take its primary's writes meanwhile.
    /// Returns at once, with the node asleep.
    pub fn put_to_sleep(&self, port: u16, seconds: u32) {
        let mut sleeper = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "DEBUG", "SLEEP", &seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        std::thread::spawn(move || sleeper.wait());
        // Asleep once it no longer answers PING.
        let deadline = Instant::now() + START_DEADLINE;
        while ping(port) {
            assert!(Instant::now() < deadline, "the node on port {port} never went to sleep");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes the replication links of the primary on `port`: with its
    /// replicas asleep, what it acknowledges from then on reaches none of them.
    pub fn cut_replication(&self, port: u16) {
        let killed = cli(port, &["CLIENT", "KILL", "TYPE", "replica"]);
        assert!(killed.is_some(), "CLIENT KILL TYPE replica on port {port} failed");
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        node.unwrap_or_else(|| panic!("no cluster node on port {port}")).kill();
    }

    /// Returns once the live nodes agree the cluster is whole again (a
    /// replica promoted in place of a dead primary).
    pub fn await_healthy(&self) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let ok = self.live_ports().all(|port| {
                let info = cli(port, &["CLUSTER", "INFO"]).unwrap_or_default();
                let replication = cli(port, &["INFO", "replication"]).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (replication.contains("role:master") || replication.contains("master_link_status:up"))
            });
            // Three primaries that answer: a dead one replaced, not just unnoticed yet.
            let live: Vec<u16> = self.live_ports().collect();
            let primaries = self.primary_ports();
            if ok && primaries.len() == 3 && primaries.iter().all(|p| live.contains(p)) {
                return;
            }
            assert!(Instant::now() < deadline, "the redis cluster was not healthy within {CLUSTER_DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port)
    }
}

/// `redis-cli -p <port> <args>`'s output, or `None` when the node does not answer.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
}
