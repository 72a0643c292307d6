//! The CNI side of Plexus: the meta-plugin with Multus semantics and its built-in delegates.
//!
//! Empty so far: the CNI types, the meta-plugin and the `plexus` binary arrive with the
//! meta-plugin issue.
