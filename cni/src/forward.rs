//! The `plexus` binary's way to the agent: the wire format lives in `plexus-shim` (the small
//! program the runtime starts for every call, which must not link this crate), and is
//! re-exported here for the agent and `plexus-standalone`.

pub use plexus_shim::{
    BUILTIN_DELEGATES, Frame, MAX_MESSAGE, Request, STANDALONE, TraceRequest, decode_frame, socket_dir,
};
