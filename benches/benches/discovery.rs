//! Discovery of a 4 PF x 64 VF node from a fake sysfs tree (target: well under 10 ms).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use plexus_hw::{SysfsRoot, discover};
use plexus_sim::{ScratchNode, SimSpec};

fn discovery(c: &mut Criterion) {
    let spec = SimSpec { pfs: 4, numa_nodes: 2, vfs_per_pf: 64, vfio_vfs_per_pf: 8, cpus_per_node: 8 };
    let Ok(bench) = ScratchNode::tree("bench", &spec) else {
        panic!("cannot build the simulated node for the bench");
    };
    let root = SysfsRoot::new(bench.root());
    c.bench_function("discover 4 PFs x 64 VFs", |b| {
        b.iter(|| {
            let found = discover(black_box(&root));
            assert!(matches!(&found, Ok(f) if f.pfs.len() == 4 && f.problems.is_empty()));
            found
        })
    });
}

criterion_group!(benches, discovery);
criterion_main!(benches);
