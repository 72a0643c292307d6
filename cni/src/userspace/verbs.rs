//! The verbs: ADD makes the port (and the bridge when missing), puts its socket where the pod
//! looks, annotates the pod and keeps a record of each step; DEL and a failed ADD undo what the
//! record lists; CHECK looks the port up in OVS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::config::{UserspaceConfig, VhostMode};
use super::mounts::{bind_mount, chown_to_group, remove_path, unmount};
use super::ovs;
use super::ovsdb::Ovsdb;
use super::records::{Record, Records, io};
use super::{
    CONFIGURATION_DATA_ANNOTATION, MAPPED_DIR_ANNOTATION, SOCKET_PATH_MAX, Userspace, UserspaceError,
    data_dir, port_name,
};
use crate::delegate::Request;
use crate::error::{Error, ErrorList};
use crate::ipam;
use crate::multus::cluster::{Cluster, Pod};
use crate::multus::devices::{cni_device_info_path, write_cni_device_info};
use crate::spec::Invocation;
use crate::spec::result::{CniResult, Interface};

/// The pod the call is for, when the meta-plugin has Kubernetes access.
fn pod_of(invocation: &Invocation, cluster: Option<&dyn Cluster>) -> Result<Option<Pod>, Error> {
    let (Some(cluster), Some(pod)) = (cluster, invocation.pod()) else {
        return Ok(None);
    };
    Ok(cluster.pod(&pod.namespace, &pod.name)?)
}

impl Userspace {
    fn ovsdb_socket(&self, config: &UserspaceConfig) -> PathBuf {
        config.ovsdb_socket.clone().unwrap_or_else(|| self.ovsdb_socket.clone())
    }

    fn connect(&self, socket: &Path) -> Result<Ovsdb, UserspaceError> {
        Ovsdb::connect(socket, self.timeout).map_err(UserspaceError::Ovs)
    }

    /// The socket directory on the host, where the pod sees it, and whether it is made when
    /// missing: the pod's `shared-dir` volume (a hostPath one made, as the userspace plugin
    /// makes it), else `sharedDir/<container-id prefix>` (made).
    fn socket_dir(
        &self,
        config: &UserspaceConfig,
        invocation: &Invocation,
        pod: Option<&Pod>,
    ) -> Result<(PathBuf, String, bool), UserspaceError> {
        if let Some(pod) = pod
            && let Some(shared) = &pod.shared_dir
        {
            let host = match &shared.host_path {
                Some(path) => PathBuf::from(path),
                // The UID names a directory of the kubelet's: one that is not a UUID's letters,
                // digits and dashes could name another place.
                None if pod.uid.is_empty()
                    || pod.uid.len() > 64
                    || !pod.uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                {
                    return Err(UserspaceError::Io {
                        what: format!("the pod's UID {:?} cannot name its directory", pod.uid),
                        error: std::io::ErrorKind::InvalidInput.into(),
                    });
                }
                None => self
                    .kubelet_dir
                    .join("pods")
                    .join(&pod.uid)
                    .join("volumes/kubernetes.io~empty-dir/shared-dir"),
            };
            let mapped = shared.mount_path.clone().unwrap_or_else(|| host.display().to_string());
            // A hostPath volume may not exist yet: the kubelet mounts it after the sandbox's
            // ADD, and the userspace plugin makes it. The kubelet's emptyDir it makes itself.
            let make = shared.host_path.is_some();
            return Ok((host, mapped, make));
        }
        let prefix: String = invocation.container_id.chars().take(12).collect();
        let dir = config.shared_dir.join(prefix);
        let mapped = dir.display().to_string();
        Ok((dir, mapped, true))
    }

    /// ADD.
    pub fn add_port(&self, request: &Request<'_>) -> Result<Value, Error> {
        let (invocation, raw, cluster) = (request.invocation, request.config, request.cluster);
        let ifname = invocation.ifname.as_str();
        let config = UserspaceConfig::parse(raw)?;
        let version = ipam::result_version(raw, "userspace config")?;
        let pod = pod_of(invocation, cluster)?;
        let records = Records::new(data_dir(raw));
        let port = port_name(&invocation.container_id, ifname);
        let (dir, mapped, make_dir) = self.socket_dir(&config, invocation, pod.as_ref())?;
        let socket_file = config.socket_file.clone().unwrap_or_else(|| port.clone());
        let mut record = Record {
            container_id: invocation.container_id.clone(),
            ifname: ifname.to_owned(),
            ovsdb_socket: self.ovsdb_socket(&config),
            port: port.clone(),
            bridge: config.bridge.clone(),
            bridge_created: false,
            socket: dir.join(&socket_file),
            ovs_socket: None,
            mounts: Vec::new(),
            made_dir: None,
        };
        // Saved before anything is made, and after each step: DEL undoes what it lists.
        records.save(&record)?;
        let made = self.add_steps(&config, &mut record, &records, &dir, make_dir, invocation, raw);
        // Only an IPAM that gave no address fails the conversion (see `ipam::result_version`).
        let made = made.and_then(|result| Ok((result.to_value(version)?, result)));
        let (ip_value, ip_result) = match made {
            Ok(made) => made,
            Err(err) => {
                self.log_undo(self.undo(&record, &records, raw, invocation));
                return Err(err);
            }
        };
        let container_socket = format!("{}/{socket_file}", mapped.trim_end_matches('/'));
        let pod_mode = config.mode.peer();
        // What the pod is told, in the userspace plugin's shape.
        if let (Some(cluster), Some(pod)) = (cluster, &pod) {
            let mut container = config.container.clone();
            let vhost = container.entry("vhost").or_insert_with(|| json!({}));
            vhost["mode"] = json!(pod_mode.as_str());
            vhost["socketfile"] = json!(socket_file);
            let entry = json!({"containerId": invocation.container_id, "ifName": ifname, "name": config.name,
                               "config": container, "ipResult": ip_value});
            let mut data: Vec<Value> = pod
                .annotations
                .get(CONFIGURATION_DATA_ANNOTATION)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default();
            data.retain(|e| !(e["containerId"] == invocation.container_id.as_str() && e["ifName"] == ifname));
            data.push(entry);
            let annotations = BTreeMap::from([
                (CONFIGURATION_DATA_ANNOTATION.to_owned(), Value::Array(data).to_string()),
                (MAPPED_DIR_ANNOTATION.to_owned(), mapped.clone()),
            ]);
            if let Err(err) = cluster.set_annotations(pod, &annotations) {
                self.log_undo(self.undo(&record, &records, raw, invocation));
                return Err(Error::from(err).context("userspace: annotating the pod"));
            }
        }
        let info = json!({"type": "vhost-user", "version": "1.1.0",
                          "vhost-user": {"mode": pod_mode.as_str(), "path": container_socket}});
        let written = write_cni_device_info(
            &self.devinfo_dir,
            &invocation.container_id,
            ifname,
            info.to_string().as_bytes(),
        );
        if let Err(e) = written {
            tracing::warn!("userspace: device-info for {port}: {e}");
        }
        let mut result = ip_result;
        result.interfaces = vec![Interface {
            name: ifname.to_owned(),
            sandbox: invocation.netns_str(),
            socket_path: Some(container_socket),
            ..Default::default()
        }];
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
        // The same addresses converted above: this cannot fail.
        Ok(result.to_value(version)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_steps(
        &self,
        config: &UserspaceConfig,
        record: &mut Record,
        records: &Records,
        dir: &Path,
        make_dir: bool,
        invocation: &Invocation,
        raw: &Value,
    ) -> Result<CniResult, Error> {
        if make_dir && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            record.made_dir = Some(dir.to_owned());
            records.save(record)?;
        }
        if !dir.is_dir() {
            return Err(UserspaceError::NoSharedDir(dir.to_owned()).into());
        }
        if let Some(group) = &config.group {
            chown_to_group(dir, group)?;
        }
        // A socket path too long for sun_path is reached through a short one: the directory
        // bind-mounted under the run directory.
        let file_name = record.socket.file_name().map(PathBuf::from).unwrap_or_default();
        let ovs_side_dir = if record.socket.as_os_str().len() > SOCKET_PATH_MAX {
            let short = self.run_dir.join("vhost").join(&record.port);
            std::fs::create_dir_all(&short).map_err(io("creating", &short))?;
            record.mounts.push(short.clone());
            records.save(record)?;
            bind_mount(dir, &short)?;
            short
        } else {
            dir.to_owned()
        };
        let socket = self.ovsdb_socket(config);
        let mut db = self.connect(&socket)?;
        records.sweep(&mut db, &socket, self.timeout);
        let spec = ovs::PortSpec {
            bridge: config.bridge.clone(),
            port: record.port.clone(),
            mode: config.mode,
            server_path: Some(ovs_side_dir.join(&file_name).display().to_string()),
            vlan: config.vlan,
            container_id: invocation.container_id.clone(),
        };
        let added = ovs::add_port(&mut db, &spec, self.timeout).map_err(UserspaceError::Ovs)?;
        record.bridge_created = added.bridge_created;
        records.save(record)?;
        if config.mode == VhostMode::Server {
            self.show_server_socket(config, record, records)?;
        }
        let ip = match ipam::Request::new(raw, invocation)? {
            Some(request) => ipam::add(&request)?,
            None => CniResult::default(),
        };
        Ok(ip)
    }

    /// Server mode: OVS makes its socket in its run directory; the pod's directory gets it by
    /// a bind mount over an empty file of the socket's name.
    fn show_server_socket(
        &self,
        config: &UserspaceConfig,
        record: &mut Record,
        records: &Records,
    ) -> Result<(), Error> {
        let run_dir = config.ovs_run_dir.clone().unwrap_or_else(|| self.ovs_run_dir.clone());
        let ovs_socket = run_dir.join(&record.port);
        let deadline = std::time::Instant::now() + self.timeout;
        while !ovs_socket.exists() {
            if std::time::Instant::now() >= deadline {
                return Err(UserspaceError::NoServerSocket(ovs_socket).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(group) = &config.group {
            chown_to_group(&ovs_socket, group)?;
        }
        std::fs::File::create(&record.socket).map_err(io("creating", &record.socket))?;
        record.ovs_socket = Some(ovs_socket.clone());
        record.mounts.push(record.socket.clone());
        records.save(record)?;
        Ok(bind_mount(&ovs_socket, &record.socket)?)
    }

    /// Undoes what `record` lists: the OVS port (deferred when OVS is unreachable), mounts,
    /// sockets, the directory made, IPAM, the device-info, the record; every failure is
    /// returned, nothing stops early.
    fn undo(&self, record: &Record, records: &Records, raw: &Value, invocation: &Invocation) -> ErrorList {
        let mut errors = ErrorList::new();
        match self.connect(&record.ovsdb_socket) {
            Ok(mut db) => {
                records.sweep(&mut db, &record.ovsdb_socket, self.timeout);
                errors.keep(ovs::del_port(&mut db, &record.port, self.timeout).map_err(UserspaceError::Ovs));
            }
            Err(e) => {
                tracing::warn!(
                    "{e}: port {} is removed from OVS by the next call that reaches it",
                    record.port
                );
                errors.keep(records.defer(record));
            }
        }
        for mount in record.mounts.iter().rev() {
            unmount(mount);
            remove_path(mount);
        }
        remove_path(&record.socket);
        if let Some(dir) = &record.made_dir {
            remove_path(dir);
        }
        errors.keep(ipam::release(raw, invocation));
        let ifname = invocation.ifname.as_str();
        remove_path(&cni_device_info_path(&self.devinfo_dir, &invocation.container_id, ifname));
        errors.keep(records.remove(&record.container_id, &record.ifname));
        errors
    }

    fn log_undo(&self, errors: ErrorList) {
        for e in errors.iter() {
            tracing::warn!("undoing a failed ADD: {e}");
        }
    }

    /// DEL: what the record lists, else the port the config and IDs name.
    pub fn del_port(&self, request: &Request<'_>) -> Result<(), Error> {
        let (invocation, raw) = (request.invocation, request.config);
        let ifname = invocation.ifname.as_str();
        let records = Records::new(data_dir(raw));
        records.remove_leftovers();
        let record = match records.load(&invocation.container_id, ifname)? {
            Some(record) => record,
            None => {
                // No record: nothing was made, or the record was lost. The port name is known.
                let config = UserspaceConfig::parse(raw).ok();
                let socket =
                    config.as_ref().map_or_else(|| self.ovsdb_socket.clone(), |c| self.ovsdb_socket(c));
                Record {
                    container_id: invocation.container_id.clone(),
                    ifname: ifname.to_owned(),
                    ovsdb_socket: socket,
                    port: port_name(&invocation.container_id, ifname),
                    bridge: config.map(|c| c.bridge).unwrap_or_default(),
                    bridge_created: false,
                    socket: PathBuf::new(),
                    ovs_socket: None,
                    mounts: Vec::new(),
                    made_dir: None,
                }
            }
        };
        self.undo(&record, &records, raw, invocation).into_result()
    }

    /// CHECK: the port is in OVS as ADD made it, and its socket is where the pod looks.
    pub fn check_port(&self, request: &Request<'_>) -> Result<(), Error> {
        let invocation = request.invocation;
        let ifname = invocation.ifname.as_str();
        let records = Records::new(data_dir(request.config));
        let record = records.load(&invocation.container_id, ifname)?.ok_or_else(|| {
            UserspaceError::NoRecord { ifname: ifname.to_owned(), container: invocation.container_id.clone() }
        })?;
        let mut db = self.connect(&record.ovsdb_socket)?;
        let found = ovs::interface(&mut db, &record.port, &["name", "type"]).map_err(UserspaceError::Ovs)?;
        if found.is_none() {
            return Err(UserspaceError::NoPort(record.port).into());
        }
        if record.ovs_socket.is_some() && !record.socket.exists() {
            return Err(UserspaceError::SocketGone(record.socket).into());
        }
        Ok(())
    }
}
