//! Writes the seed corpus of every target to `corpus/<target>/` (next to Cargo.toml):
//! `cargo run --example gen_corpus`. Files of the same name are overwritten; others (what
//! the fuzzer added) are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in erebus_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
        eprintln!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}
