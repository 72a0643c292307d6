//! The files a vhost-user attachment puts in place: bind mounts (a long socket directory at a
//! short path, OVS's server-mode socket in the pod's directory), their removal, and a socket's
//! group.

use std::path::Path;

use super::UserspaceError;

/// Bind-mounts `source` on `target`.
pub fn bind_mount(source: &Path, target: &Path) -> Result<(), UserspaceError> {
    nix::mount::mount(Some(source), target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).map_err(
        |errno| UserspaceError::Io {
            what: format!("bind-mounting {} on {}", source.display(), target.display()),
            error: errno.into(),
        },
    )
}

/// Unmounts `target`; one not mounted is fine, other failures are logged.
pub fn unmount(target: &Path) {
    match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!("unmounting {}: {e}", target.display()),
    }
}

/// Removes a file or an empty directory; one already gone is fine, other failures are logged.
pub fn remove_path(path: &Path) {
    let result = if path.is_dir() { std::fs::remove_dir(path) } else { std::fs::remove_file(path) };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", path.display());
    }
}

/// Gives `path` to group `group` (a name or a number), read-write for it.
pub fn chown_to_group(path: &Path, group: &str) -> Result<(), crate::error::Error> {
    let gid = match group.parse::<u32>() {
        Ok(id) => nix::unistd::Gid::from_raw(id),
        Err(_) => nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid).ok_or_else(|| {
            crate::spec::ConfigError::invalid(
                "userspace config",
                format!("host.vhost.group: no group {group:?}"),
            )
        })?,
    };
    let what = || format!("giving {} to group {group}", path.display());
    nix::unistd::chown(path, None, Some(gid))
        .map_err(|errno| UserspaceError::Io { what: what(), error: errno.into() })?;
    use std::os::unix::fs::PermissionsExt;
    let io = |error| UserspaceError::Io { what: what(), error };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() | 0o060;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(())
}
