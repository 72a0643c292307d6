//! Criterion benches of Plexus's setup paths live in `benches/`; this library holds what they
//! share. Run them with `cargo bench -p plexus-benches`.
