//! gRPC over unix sockets, both ways: the kubelet talks to plugins, and plugins to the kubelet,
//! only through sockets in its directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
pub use tonic::transport::Channel;
use tonic::transport::{Endpoint, Uri};

/// A unix socket that could not be served or dialled.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding the socket (or setting its mode) failed.
    #[error("listening on {path}: {error}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// Connecting failed.
    #[error("connecting to {path}: {error}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        error: tonic::transport::Error,
    },
}

/// Binds `path` (replacing a stale socket file), mode 0600: only root may talk to it.
pub fn listen(path: &Path) -> Result<UnixListenerStream, TransportError> {
    let err = |error| TransportError::Listen { path: path.to_owned(), error };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(UnixListenerStream::new(listener))
}

/// A channel to the gRPC server on the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, TransportError> {
    let socket = path.to_owned();
    // tonic wants a URI even for a unix socket; the connector ignores it and dials the path.
    let endpoint = Endpoint::from_static("http://localhost");
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .map_err(|error| TransportError::Connect { path: path.to_owned(), error })
}
