//! An OVS-DPDK of its own, for the tests, benches and demos of vhost-user attachments:
//! ovsdb-server and Debian's `ovs-vswitchd-dpdk` started with every path under one directory
//! (database, sockets, logs, the run directory where server-mode sockets go), DPDK without
//! PCI devices or hugepages. Nothing under /etc or /var/run/openvswitch is touched; DPDK's own
//! runtime directory (`/var/run/dpdk/<prefix>`) is removed with the lab.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's DPDK-enabled ovs-vswitchd (package openvswitch-switch-dpdk).
pub const VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// The schema ovsdb-tool creates the database from.
pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// What went wrong starting the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("{0}")]
    Failed(String),
}

/// A running ovsdb-server and ovs-vswitchd.
#[derive(Debug)]
pub struct OvsLab {
    dir: PathBuf,
    db: PathBuf,
    dpdk_prefix: String,
    server: Option<Child>,
    vswitchd: Option<Child>,
}

fn run(command: &mut Command) -> Result<(), LabError> {
    let what = format!("{command:?}");
    let out = command.output().map_err(|error| LabError::Io { what: what.clone(), error })?;
    if !out.status.success() {
        return Err(LabError::Failed(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

fn wait_for(what: &str, timeout: Duration, cond: impl Fn() -> bool) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return Err(LabError::Failed(format!("{what} did not happen within {} s", timeout.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl OvsLab {
    /// Whether this machine has what the lab runs.
    pub fn available() -> bool {
        Path::new(VSWITCHD_DPDK).is_file() && Path::new(SCHEMA).is_file()
    }

    /// Starts OVS-DPDK with everything under `dir` (which must exist), DPDK named `prefix`.
    pub fn start(dir: &Path, prefix: &str) -> Result<Self, LabError> {
        let db = dir.join("conf.db");
        run(Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA))?;
        let mut lab =
            Self { dir: dir.to_owned(), db, dpdk_prefix: prefix.to_owned(), server: None, vswitchd: None };
        lab.start_server()?;
        let extra =
            format!("other_config:dpdk-extra=--no-pci --no-huge --legacy-mem -m 2048 --file-prefix={prefix}");
        run(Command::new("ovs-vsctl").arg(format!("--db=unix:{}", lab.db_socket().display())).args([
            "--no-wait",
            "init",
            "--",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &extra,
        ]))?;
        let vswitchd = Command::new(VSWITCHD_DPDK)
            .arg(format!("unix:{}", lab.db_socket().display()))
            .arg(format!("--unixctl={}", dir.join("vswitchd.ctl").display()))
            .arg(format!("--log-file={}", dir.join("vswitchd.log").display()))
            .env("OVS_RUNDIR", dir)
            .env("OVS_LOGDIR", dir)
            .env("OVS_DBDIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| LabError::Io { what: VSWITCHD_DPDK.into(), error })?;
        lab.vswitchd = Some(vswitchd);
        let log = dir.join("vswitchd.log");
        wait_for("ovs-vswitchd initializing DPDK", Duration::from_secs(30), || {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("DPDK Enabled - initialized") || l.contains("EMER"))
        })?;
        if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("EMER")) {
            return Err(LabError::Failed(format!("ovs-vswitchd failed: see {}", log.display())));
        }
        Ok(lab)
    }

    /// Starts ovsdb-server on the lab's database (again, after [`stop_server`](Self::stop_server)).
    pub fn start_server(&mut self) -> Result<(), LabError> {
        let server = Command::new("ovsdb-server")
            .arg(&self.db)
            .arg(format!("--remote=punix:{}", self.db_socket().display()))
            .arg(format!("--unixctl={}", self.dir.join("ovsdb.ctl").display()))
            .arg(format!("--log-file={}", self.dir.join("ovsdb.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| LabError::Io { what: "ovsdb-server".into(), error })?;
        self.server = Some(server);
        let socket = self.db_socket();
        wait_for("ovsdb-server's socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        })
    }

    /// Stops ovsdb-server (ovs-vswitchd keeps running and reconnects when it is back).
    pub fn stop_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_file(self.db_socket());
    }

    /// ovsdb-server's socket.
    pub fn db_socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// ovs-vswitchd's run directory: where server-mode vhost-user sockets appear.
    pub fn run_dir(&self) -> &Path {
        &self.dir
    }

    /// `ovs-vsctl` on this lab's database.
    pub fn vsctl(&self) -> Command {
        let mut command = Command::new("ovs-vsctl");
        command.arg(format!("--db=unix:{}", self.db_socket().display())).arg("--timeout=20");
        command
    }
}

impl Drop for OvsLab {
    fn drop(&mut self) {
        for child in [self.vswitchd.take(), self.server.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.dpdk_prefix));
    }
}
