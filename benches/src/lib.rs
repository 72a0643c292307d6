//! Criterion benches of Plexus's setup paths, in `benches/`; they start from the fixtures of
//! `plexus-sim`. Run them with `cargo bench -p plexus-benches`; figures are recorded in
//! docs/performance.md.
