//! netdevsim devices, for the kernel lab (`hack/lab.sh`): a PF whose VF operations a real
//! driver implements. Only a kernel with the module has them; Debian's is built without it and
//! the lab builds it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_hw::IfName;

/// A netdevsim device with one port and some VFs, removed on drop.
#[derive(Debug)]
pub struct Netdevsim {
    id: u32,
    /// The port's netdev, under the name the kernel gave it.
    pub netdev: IfName,
}

fn bus(file: &str) -> PathBuf {
    PathBuf::from("/sys/bus/netdevsim").join(file)
}

impl Netdevsim {
    /// Device `id` (unique among the netdevsim devices) with `vfs` VFs: loads the module,
    /// makes the device, waits for its netdev.
    pub fn new(id: u32, vfs: u32) -> Result<Self, String> {
        let status = std::process::Command::new("modprobe").arg("netdevsim").status();
        if !status.is_ok_and(|s| s.success()) {
            return Err("modprobe netdevsim failed: this kernel has no netdevsim (the kernel lab has)".into());
        }
        let write = |path: PathBuf, value: String| {
            std::fs::write(&path, value).map_err(|e| format!("{}: {e}", path.display()))
        };
        write(bus("new_device"), format!("{id} 1"))?;
        let dev = bus(&format!("devices/netdevsim{id}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let name = loop {
            if let Some(Ok(entry)) = std::fs::read_dir(dev.join("net")).ok().and_then(|mut d| d.next()) {
                break entry.file_name().to_string_lossy().into_owned();
            }
            if Instant::now() >= deadline {
                let _ = write(bus("del_device"), id.to_string());
                return Err(format!("netdevsim{id} made no netdev within 5 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let device = Self { id, netdev: name.parse().map_err(|e| format!("netdevsim{id}'s netdev: {e}"))? };
        write(dev.join("sriov_numvfs"), vfs.to_string())?;
        Ok(device)
    }
}

impl Drop for Netdevsim {
    fn drop(&mut self) {
        let _ = std::fs::write(bus("del_device"), self.id.to_string());
    }
}
