//! The kubelet device plugin of Plexus: SR-IOV VF pools advertised as extended resources.
//!
//! Empty so far: the pool config, the kubelet gRPC services and the allocator arrive with the
//! device plugin issue, on top of `plexus-hw` discovery.
