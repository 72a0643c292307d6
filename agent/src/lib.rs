//! What the agent's binary and its tests share: the stand-ins the demo runs the agent against.

pub mod apistandin;
