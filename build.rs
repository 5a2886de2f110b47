//! Embeds the repository's `jobs/*.toml` in the binary (the built-in project `chiso demo` and
//! commands outside a project use): the list is read from the folder at build time, so a job
//! file added there is embedded without editing code.

use std::io::Write;

fn main() {
    // Read when the script runs, not when it was compiled: two checkouts sharing a target
    // folder share the compiled script.
    let dir =
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
            .join("jobs");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the jobs/ folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    let out =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded_jobs.rs");
    let mut f = std::fs::File::create(&out).expect("embedded_jobs.rs");
    writeln!(f, "&[").unwrap();
    for n in names {
        println!("cargo:rerun-if-changed={}", dir.join(&n).display());
        writeln!(
            f,
            "    ({n:?}, include_str!({:?})),",
            dir.join(&n).display().to_string()
        )
        .unwrap();
    }
    writeln!(f, "]").unwrap();
}
