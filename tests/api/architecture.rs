//! ARCHITECTURE.md states which top-level modules may depend on which, and
//! names every file under src/. These tests read the sources so that the map
//! cannot drift from the code unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under src/ belongs to (`broker` for
/// `src/broker/hub.rs`, `metrics` for `src/metrics.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// `crate::x` references in code, not in comments, per top-level module.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    graph.entry(module.clone()).or_default().insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn modules_depend_only_as_architecture_md_allows() {
    let graph = imports();
    let deps = |m: &str| graph.get(m).cloned().unwrap_or_default();
    let forbidden: &[(&str, &[&str])] = &[
        // The domain core: no other module of the crate but the core.
        (
            "capability",
            &[
                "broker", "http", "upstream", "policy", "config", "metrics", "dev", "cli",
                "signing",
            ],
        ),
        (
            "signing",
            &[
                "broker", "http", "upstream", "policy", "config", "metrics", "dev", "cli",
            ],
        ),
        (
            "clock",
            &[
                "broker",
                "http",
                "upstream",
                "policy",
                "config",
                "metrics",
                "dev",
                "cli",
                "capability",
                "signing",
            ],
        ),
        (
            "duration",
            &[
                "broker", "http", "upstream", "policy", "config", "metrics", "dev", "cli",
            ],
        ),
        (
            "ably_error",
            &[
                "broker", "http", "upstream", "policy", "config", "metrics", "dev", "cli",
            ],
        ),
        // Deciding and parsing, never serving.
        (
            "policy",
            &[
                "config", "http", "broker", "metrics", "upstream", "dev", "cli",
            ],
        ),
        (
            "upstream",
            &["policy", "http", "broker", "metrics", "dev", "cli"],
        ),
        (
            "config",
            &["http", "broker", "upstream", "metrics", "dev", "cli"],
        ),
        // The two services stay apart; metrics knows neither.
        (
            "broker",
            &["http", "upstream", "policy", "metrics", "dev", "cli"],
        ),
        ("http", &["broker", "cli"]),
        ("metrics", &["http", "broker", "dev", "cli"]),
    ];
    let mut broken = Vec::new();
    for (module, never) in forbidden {
        for dep in deps(module) {
            if never.contains(&dep.as_str()) {
                broken.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies ARCHITECTURE.md rules out: {broken:?}"
    );
    // `http` may use the development issuer, never the stack built on it.
    let src = root().join("src/http");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("dev::DevStack") && !text.contains("dev::DevOptions"),
            "{} builds on the dev stack",
            file.display()
        );
    }
}

#[test]
fn architecture_md_names_every_file_under_src() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let unnamed: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).unwrap().to_string_lossy().into_owned())
        .filter(|rel| {
            let base = rel.rsplit('/').next().unwrap();
            let module = base.trim_end_matches(".rs");
            !(map.contains(rel.as_str())
                || map.contains(&format!("`{base}`"))
                || map.contains(&format!("`{module}`")))
        })
        .collect();
    assert!(
        unnamed.is_empty(),
        "ARCHITECTURE.md does not name {unnamed:?}"
    );
}
