//! The sans-IO guard: checks that no crate under `core/` can reach the operating system.
//!
//! Clippy (with `core/clippy.toml`) rejects calls to clocks, sleeps, threads, sockets and OS
//! randomness in core's own code. This module adds the two checks clippy cannot make:
//! - [`runtime_dependencies`]: no core crate depends, directly or through others, on an I/O
//!   runtime;
//! - [`forbidden_source_lines`]: the source text names none of those facilities, which also
//!   catches `use` declarations and macro-generated code clippy might not see, and every core
//!   crate root forbids `unsafe`.

use std::collections::{BTreeMap, BTreeSet};

/// Crates that do I/O or run an event loop. A core crate may not depend on any of them, not
/// even indirectly.
pub const RUNTIME_CRATES: &[&str] = &[
    "mio",
    "smol",
    "async-io",
    "async-net",
    "async-executor",
    "async-std",
    "tokio",
    "socket2",
    "polling",
    "hyper",
    "hyper-util",
    "reqwest",
];

/// Text that may not appear in core's sources, with the reason.
pub const FORBIDDEN_SOURCE: &[(&str, &str)] = &[
    ("Instant::now(", "reads the monotonic clock"),
    ("SystemTime::now(", "reads the wall clock"),
    ("thread::sleep", "sleeps"),
    ("thread::spawn", "spawns a thread"),
    ("std::net::UdpSocket", "opens a socket"),
    ("std::net::TcpStream", "opens a socket"),
    ("std::net::TcpListener", "opens a socket"),
    ("OsRng", "draws OS randomness"),
    ("thread_rng(", "draws OS randomness"),
    ("getrandom::", "draws OS randomness"),
    ("SystemRandom", "draws OS randomness"),
    ("mio::", "uses an I/O runtime"),
    ("smol::", "uses an I/O runtime"),
    ("async_io::", "uses an I/O runtime"),
    ("tokio::", "uses an I/O runtime"),
];

/// A minimal view of `cargo metadata --format-version 1` output.
#[derive(Debug, Default)]
pub struct Metadata {
    /// Package id to (name, manifest path).
    pub packages: BTreeMap<String, (String, String)>,
    /// Package id to the ids of its normal (not dev, not build) dependencies.
    pub normal_deps: BTreeMap<String, Vec<String>>,
    /// Ids of the workspace members.
    pub members: Vec<String>,
}

impl Metadata {
    /// Extracts what the guard needs from parsed `cargo metadata` JSON.
    ///
    /// # Errors
    ///
    /// Names the first field that is missing or has the wrong type.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, String> {
        let mut meta = Self::default();
        for pkg in json["packages"]
            .as_array()
            .ok_or("metadata: no packages array")?
        {
            let id = pkg["id"].as_str().ok_or("package without id")?;
            let name = pkg["name"].as_str().ok_or("package without name")?;
            let manifest = pkg["manifest_path"]
                .as_str()
                .ok_or("package without manifest_path")?;
            meta.packages
                .insert(id.into(), (name.into(), manifest.into()));
        }
        for member in json["workspace_members"]
            .as_array()
            .ok_or("no workspace_members")?
        {
            meta.members
                .push(member.as_str().ok_or("member id is not a string")?.into());
        }
        for node in json["resolve"]["nodes"]
            .as_array()
            .ok_or("metadata: no resolve nodes")?
        {
            let id = node["id"].as_str().ok_or("resolve node without id")?;
            let mut deps = Vec::new();
            for dep in node["deps"].as_array().ok_or("resolve node without deps")? {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .ok_or("dep without dep_kinds")?
                    .iter()
                    .any(|kind| kind["kind"].is_null());
                if normal {
                    deps.push(dep["pkg"].as_str().ok_or("dep without pkg")?.into());
                }
            }
            meta.normal_deps.insert(id.into(), deps);
        }
        Ok(meta)
    }
}

/// For every workspace member whose manifest lies under `core_dir`, the chains of normal
/// dependencies that reach a crate in [`RUNTIME_CRATES`], as `"a -> b -> mio"`.
pub fn runtime_dependencies(meta: &Metadata, core_dir: &str) -> Vec<String> {
    let mut violations = Vec::new();
    for member in &meta.members {
        let Some((name, manifest)) = meta.packages.get(member) else {
            continue;
        };
        if !manifest.starts_with(core_dir) {
            continue;
        }
        // Breadth-first over normal dependencies, remembering how each crate was reached.
        let mut seen = BTreeSet::from([member.clone()]);
        let mut queue = vec![(member.clone(), name.clone())];
        while let Some((id, path)) = queue.pop() {
            for dep in meta.normal_deps.get(&id).into_iter().flatten() {
                if !seen.insert(dep.clone()) {
                    continue;
                }
                let dep_name = meta
                    .packages
                    .get(dep)
                    .map_or(dep.as_str(), |(n, _)| n.as_str());
                let dep_path = format!("{path} -> {dep_name}");
                if RUNTIME_CRATES.contains(&dep_name) {
                    violations.push(dep_path);
                } else {
                    queue.push((dep.clone(), dep_path));
                }
            }
        }
    }
    violations
}

/// The lines of `source` (named `file`) that contain forbidden text, as `"file:line: reason"`.
/// Comment lines are skipped so the rules can be documented.
pub fn forbidden_source_lines(file: &str, source: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (needle, reason) in FORBIDDEN_SOURCE {
            if code.contains(needle) {
                hits.push(format!("{file}:{}: {reason} (`{needle}`)", number + 1));
            }
        }
    }
    hits
}

/// The protocol crates, as a manifest and as source name them. Drivers reach protocols only
/// through `erebus-session`, so that a new protocol or a new event loop touches one side only.
pub const PROTOCOL_CRATES: &[&str] = &[
    "erebus-openvpn",
    "erebus_openvpn",
    "erebus-ipsec",
    "erebus_ipsec",
];

/// The lines of `text` (a file under drivers/, named `file`) that name a protocol crate, as
/// `"file:line: names a protocol crate"`. Comments count too: a driver has no business
/// knowing which protocols exist.
pub fn protocol_mentions(file: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter_map(|(number, line)| {
            PROTOCOL_CRATES
                .iter()
                .find(|name| line.contains(*name))
                .map(|name| format!("{file}:{}: names the protocol crate `{name}`", number + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_crates_are_caught_in_manifests_and_source() {
        assert_eq!(
            protocol_mentions(
                "drivers/Cargo.toml",
                "[dependencies]\nerebus-openvpn.workspace = true\n"
            ),
            ["drivers/Cargo.toml:2: names the protocol crate `erebus-openvpn`"]
        );
        assert_eq!(
            protocol_mentions(
                "drivers/src/x.rs",
                "use erebus_session::load;\nuse erebus_ipsec::Sa;"
            ),
            ["drivers/src/x.rs:2: names the protocol crate `erebus_ipsec`"]
        );
        assert!(protocol_mentions("drivers/src/y.rs", "use erebus_session::Plan;").is_empty());
    }

    fn metadata(core_deps: &[&str]) -> Metadata {
        let mut packages = serde_json::json!([
            {"id": "core", "name": "erebus-core-x", "manifest_path": "/ws/core/x/Cargo.toml"},
            {"id": "drv", "name": "erebus", "manifest_path": "/ws/drivers/Cargo.toml"},
            {"id": "mid", "name": "innocent", "manifest_path": "/reg/innocent/Cargo.toml"},
            {"id": "mio", "name": "mio", "manifest_path": "/reg/mio/Cargo.toml"},
        ]);
        let _ = &mut packages;
        let normal = serde_json::json!([{"kind": null}]);
        let dev = serde_json::json!([{"kind": "dev"}]);
        let deps: Vec<_> = core_deps
            .iter()
            .map(|d| {
                let kinds = if d.ends_with("(dev)") { &dev } else { &normal };
                serde_json::json!({"pkg": d.trim_end_matches("(dev)"), "dep_kinds": kinds})
            })
            .collect();
        let json = serde_json::json!({
            "packages": packages,
            "workspace_members": ["core", "drv"],
            "resolve": {"nodes": [
                {"id": "core", "deps": deps},
                {"id": "drv", "deps": [{"pkg": "mio", "dep_kinds": normal}]},
                {"id": "mid", "deps": [{"pkg": "mio", "dep_kinds": normal}]},
                {"id": "mio", "deps": []},
            ]},
        });
        Metadata::from_json(&json).unwrap()
    }

    #[test]
    fn catches_direct_and_indirect_runtime_dependencies() {
        assert_eq!(
            runtime_dependencies(&metadata(&["mio"]), "/ws/core/"),
            ["erebus-core-x -> mio"]
        );
        assert_eq!(
            runtime_dependencies(&metadata(&["mid"]), "/ws/core/"),
            ["erebus-core-x -> innocent -> mio"]
        );
    }

    #[test]
    fn allows_drivers_and_dev_dependencies() {
        assert!(runtime_dependencies(&metadata(&[]), "/ws/core/").is_empty());
        assert!(runtime_dependencies(&metadata(&["mio(dev)"]), "/ws/core/").is_empty());
    }

    #[test]
    fn catches_forbidden_source_but_not_comments() {
        let src =
            "fn f() {\n    let t = std::time::Instant::now();\n}\n// Instant::now( is banned\n";
        let hits = forbidden_source_lines("x.rs", src);
        assert_eq!(
            hits,
            ["x.rs:2: reads the monotonic clock (`Instant::now(`)"]
        );
        assert!(!forbidden_source_lines("y.rs", "std::thread::spawn(f);").is_empty());
        assert!(!forbidden_source_lines("z.rs", "use mio::net::UdpSocket;").is_empty());
    }
}
