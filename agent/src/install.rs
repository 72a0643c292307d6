//! `plexus-agent install-cni`: puts the `plexus` binary and `plexus-standalone` into the node's CNI bin directory, as
//! the DaemonSet's init container does. The copy is written next to the target and renamed
//! over it: a runtime executing the old binary at that moment keeps its inode, and the copy
//! never fails with "text file busy" (writing in place over a running executable does; Multus
//! users hit it on every upgrade).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use plexus_cni::forward::STANDALONE;

use anyhow::Context;

/// Copies `from` to `<bin_dir>/plexus` and the `plexus-standalone` next to `from` to
/// `<bin_dir>/plexus-standalone`, each atomically, mode 0755; returns the targets. The program
/// `plexus` becomes goes first: a `plexus` started meanwhile finds it.
pub fn install(from: &Path, bin_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let standalone = from.with_file_name(STANDALONE);
    Ok(vec![copy(&standalone, &bin_dir.join(STANDALONE))?, copy(from, &bin_dir.join("plexus"))?])
}

/// Copies `from` to `target` through a temporary name beside it, mode 0755.
fn copy(from: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let copy = || -> anyhow::Result<()> {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&bytes).with_context(|| format!("writing {}", tmp.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))
    };
    copy().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(target.to_owned())
}
