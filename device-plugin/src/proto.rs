//! The kubelet's gRPC APIs, generated at build time from `proto/` (see build.rs).

/// Device plugin API v1beta1: the `Registration` service (kubelet side) and the
/// `DevicePlugin` service (plugin side).
#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod deviceplugin {
    tonic::include_proto!("v1beta1");
}

/// PodResources API v1: what the kubelet allocated to which pod.
#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod podresources {
    tonic::include_proto!("v1");
}
