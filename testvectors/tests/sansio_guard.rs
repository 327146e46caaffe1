//! Keeps core sans-IO: no runtime crate in its dependency graph, no clock, sleep, thread, socket
//! or OS randomness in its source, and `unsafe` forbidden in every core crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use erebus_testvectors::guard::{
    Metadata, forbidden_source_lines, protocol_mentions, runtime_dependencies,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testvectors has a parent")
        .into()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crates of core: every directory under core/ with a Cargo.toml, except the fixture that
/// breaks the rules on purpose for .ci/sansio-selftest.
fn core_crates() -> Vec<PathBuf> {
    let core = workspace_root().join("core");
    let mut crates: Vec<_> = std::fs::read_dir(&core)
        .expect("core/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file() && !p.ends_with("sansio-guard-fixture"))
        .collect();
    crates.sort();
    assert!(
        !crates.is_empty(),
        "no crates found under {}",
        core.display()
    );
    crates
}

#[test]
fn core_depends_on_no_runtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = workspace_root();
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let meta = Metadata::from_json(&json).expect("metadata has the expected shape");
    let core_dir = format!("{}/", root.join("core").display());
    let core_members = meta
        .members
        .iter()
        .filter(|m| {
            meta.packages
                .get(*m)
                .is_some_and(|(_, p)| p.starts_with(&core_dir))
        })
        .count();
    assert!(
        core_members >= 4,
        "expected the core crates among the members, found {core_members}"
    );
    let violations = runtime_dependencies(&meta, &core_dir);
    assert!(
        violations.is_empty(),
        "core reaches an I/O runtime:\n{}",
        violations.join("\n")
    );
}

#[test]
fn core_source_does_no_io() {
    let root = workspace_root();
    let mut hits = Vec::new();
    for krate in core_crates() {
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            let name = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            hits.extend(forbidden_source_lines(&name, &text));
        }
    }
    assert!(
        hits.is_empty(),
        "core must stay sans-IO:\n{}",
        hits.join("\n")
    );
}

#[test]
fn core_crates_forbid_unsafe() {
    for krate in core_crates() {
        let lib = krate.join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).expect("every core crate is a library");
        assert!(
            text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]"),
            "{} lacks #![forbid(unsafe_code)]",
            lib.display()
        );
    }
}

/// Every file of drivers/ a person or cargo reads: manifests, sources, tests, examples.
fn driver_files() -> Vec<PathBuf> {
    let drivers = workspace_root().join("drivers");
    let mut files = vec![drivers.join("Cargo.toml")];
    for dir in ["src", "tests", "examples", "benches"] {
        let dir = drivers.join(dir);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    files
}

#[test]
fn drivers_name_no_protocol() {
    let root = workspace_root();
    let files = driver_files();
    assert!(
        files.len() > 10,
        "expected the drivers' files, found {}",
        files.len()
    );
    let mut hits = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable file");
        let name = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        hits.extend(protocol_mentions(&name, &text));
    }
    assert!(
        hits.is_empty(),
        "drivers/ is I/O only and reaches protocols through erebus-session:\n{}",
        hits.join("\n")
    );
}
