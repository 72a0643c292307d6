//! The structure reads as docs/architecture.md says: within each crate no module imports
//! another that (through others) imports it back, and the production crates (`hw`,
//! `device-plugin`, `cni`) hold no simulator, stand-in or lab and depend on `plexus-sim` only
//! for their tests (and `cni` for the `plexus` binary's `simulated-node` feature).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Every module of the crate whose sources are in `src` (its `bin/` and test modules left
/// out), by path (`multus::plan`), with its source (comments and inline test modules removed).
fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "bin" {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            // A test module in a file of its own (`mod tests;`) is not part of the crate.
            if parts.last().is_some_and(|p| p == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let code: Vec<&str> = text.lines().map(|l| l.split("//").next().unwrap()).collect();
            found.insert(parts, code.join("\n"));
        }
    }
    found
}

/// The modules `module` names with `crate::`, `super::` or `self::` paths (in `use` or in
/// code), each resolved to the deepest module the path reaches.
fn imports(module: &[String], text: &str, all: &BTreeMap<Vec<String>, String>) -> BTreeSet<Vec<String>> {
    let resolve = |path: Vec<String>| -> Vec<String> {
        (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| all.contains_key(p)).unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(start).map(|i| i + from) {
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let mut segments: Vec<String> =
                rest[..end].split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let mut base: Vec<String> = match segments.remove(0).as_str() {
                "crate" => Vec::new(),
                "self" => module.to_vec(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            while segments.first().is_some_and(|s| s == "super") {
                segments.remove(0);
                base.pop();
            }
            let mut paths = vec![[base.clone(), segments.clone()].concat()];
            // A group: `crate::a::{b, c::d}`.
            if rest[end..].starts_with('{')
                && let Some(close) = rest[end..].find('}')
            {
                for item in rest[end + 1..end + close].split(',') {
                    let item = item.split(" as ").next().unwrap().trim();
                    if !item.is_empty() && item != "self" {
                        paths.push(
                            [base.clone(), segments.clone(), item.split("::").map(str::to_owned).collect()]
                                .concat(),
                        );
                    }
                }
            }
            for path in paths {
                let target = resolve(path);
                // A module's own items and its parents' (which declare it) are not imports.
                if !target.is_empty() && !module.starts_with(&target) {
                    out.insert(target);
                }
            }
        }
    }
    out
}

/// The groups of modules that import each other in a circle.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let all = modules(src);
    let edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> =
        all.iter().map(|(m, text)| (m.clone(), imports(m, text, &all))).collect();
    // Modules from which `m` is reachable and that `m` reaches are in a circle with it.
    let reach = |from: &Vec<String>| -> BTreeSet<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in &edges[&m] {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<_, _> = edges.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (m, from_m) in &reached {
        if from_m.contains(m) {
            let group: Vec<String> =
                from_m.iter().filter(|o| reached[*o].contains(m)).map(|o| o.join("::")).collect();
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}

#[test]
fn no_crate_has_modules_importing_each_other_in_a_circle() {
    for krate in ["hw", "device-plugin", "cni", "agent", "sim"] {
        let found = circles(&workspace().join(krate).join("src"));
        assert!(found.is_empty(), "{krate}: modules importing each other in a circle: {found:?}");
    }
}

#[test]
fn the_circle_check_sees_a_circle() {
    let dir = plexus_sim::scratch("layout").unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct Thing;\nfn f() -> super::a::Other { todo!() }\n").unwrap();
    assert_eq!(circles(src), [["a".to_owned(), "b".to_owned()]]);
    std::fs::write(src.join("b.rs"), "pub struct Thing; // crate::a::Other in a comment\n").unwrap();
    assert!(circles(src).is_empty());
}

/// The `[dependencies]` section of `krate`'s manifest, line by line.
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(workspace().join(krate).join("Cargo.toml")).unwrap();
    let mut lines = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            inside = line.trim() == "[dependencies]";
        } else if inside && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            lines.push(line.to_owned());
        }
    }
    lines
}

#[test]
fn the_production_crates_hold_no_simulator_and_need_none() {
    for krate in ["hw", "device-plugin"] {
        assert!(
            !dependencies(krate).iter().any(|l| l.starts_with("plexus-sim")),
            "{krate} depends on plexus-sim outside its tests"
        );
    }
    let cni: Vec<String> = dependencies("cni").into_iter().filter(|l| l.starts_with("plexus-sim")).collect();
    assert_eq!(cni.len(), 1);
    assert!(cni[0].contains("optional = true"), "only for the simulated-node feature: {cni:?}");
    for krate in ["hw", "device-plugin", "cni"] {
        for (module, text) in modules(&workspace().join(krate).join("src")) {
            for word in ["plexus_sim", "SimNode", "StandIn", "OvsLab", "FakeKernel"] {
                assert!(!text.contains(word), "{krate}::{} names {word}", module.join("::"));
            }
        }
    }
    // The binary's one use of the simulator is behind the feature.
    let binary = std::fs::read_to_string(workspace().join("cni/src/bin/plexus-standalone.rs")).unwrap();
    let uses: Vec<&str> = binary.lines().filter(|l| l.contains("plexus_sim::")).collect();
    assert_eq!(uses.len(), 1, "{uses:?}");
    let before = &binary[..binary.find(uses[0]).unwrap()];
    let function = before.rfind("\nfn ").unwrap();
    assert!(
        before[..function].trim_end().ends_with("#[cfg(feature = \"simulated-node\")]"),
        "the function using plexus_sim is not behind the feature"
    );
}
