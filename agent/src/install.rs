//! `plexus-agent install-cni`: puts the `plexus` binary into the node's CNI bin directory, as
//! the DaemonSet's init container does. The copy is written next to the target and renamed
//! over it: a runtime executing the old binary at that moment keeps its inode, and the copy
//! never fails with "text file busy" (writing in place over a running executable does; Multus
//! users hit it on every upgrade).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Copies `from` to `<bin_dir>/plexus` atomically, mode 0755; returns the target.
pub fn install(from: &Path, bin_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let target = bin_dir.join("plexus");
    let tmp = bin_dir.join(format!(".plexus.{}.tmp", std::process::id()));
    let copy = || -> anyhow::Result<()> {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&bytes).with_context(|| format!("writing {}", tmp.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))
    };
    copy().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(target)
}
