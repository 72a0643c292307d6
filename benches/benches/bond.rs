//! The bond delegate's kernel request, built and encoded: the RTM_NEWLINK with its
//! IFLA_BOND_* options (this machine's kernel has no bonding driver, so the kernel's side is
//! not measured here). `cargo bench -p plexus-benches --bench bond`.

use criterion::{Criterion, criterion_group, criterion_main};
use plexus_hw::IfName;
use plexus_hw::bond::{
    BondOptions, bond_message, fail_over_mac_numbered, mode_named, xmit_hash_policy_named,
};
use rtnetlink::packet_core::Emitable;

fn bond(c: &mut Criterion) {
    let name: IfName = "bond0".parse().unwrap_or_else(|e| panic!("name: {e}"));
    let options = BondOptions {
        mode: mode_named("active-backup").unwrap_or_default(),
        miimon: Some(100),
        fail_over_mac: fail_over_mac_numbered(1),
        xmit_hash_policy: xmit_hash_policy_named("layer3+4"),
        all_slaves_active: Some(true),
        tlb_dynamic_lb: Some(false),
        mtu: Some(9000),
    };
    c.bench_function("bond ADD request: build and encode", |b| {
        b.iter(|| {
            let message = bond_message(std::hint::black_box(&name), std::hint::black_box(&options));
            let mut bytes = vec![0u8; message.buffer_len()];
            message.emit(&mut bytes);
            bytes
        })
    });
}

criterion_group!(benches, bond);
criterion_main!(benches);
