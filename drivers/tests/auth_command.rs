//! `auth-user-pass-verify` commands as `erebus serve` runs them: via a file (its path last on
//! the command line, the username and password on two lines, removed afterwards) and via the
//! environment; the exit status decides.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use erebus::serve::run_auth_command;

/// A script that accepts alice/wonderland, and records the file it was given.
fn script(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("verify.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         if [ -n \"$1\" ]; then\n\
           echo \"$1\" > \"$(dirname \"$0\")/seen-file\"\n\
           user=$(sed -n 1p \"$1\"); pass=$(sed -n 2p \"$1\")\n\
         else\n\
           user=\"$username\"; pass=\"$password\"\n\
         fi\n\
         [ \"$script_type\" = user-pass-verify ] || exit 2\n\
         [ \"$user\" = alice ] && [ \"$pass\" = wonderland ] && [ \"$username\" = alice ]\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("erebus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn via_file_passes_the_credentials_in_a_private_file_that_is_removed() {
    let dir = tempdir("auth-file");
    let argv = vec![script(&dir).display().to_string()];
    assert!(run_auth_command(&argv, true, "alice", "wonderland"));
    let seen = std::fs::read_to_string(dir.join("seen-file")).unwrap();
    let file = PathBuf::from(seen.trim());
    assert!(
        !file.exists(),
        "the credentials file {file:?} was left behind"
    );
    assert!(!run_auth_command(&argv, true, "alice", "looking-glass"));
    assert!(!run_auth_command(&argv, true, "bob", "wonderland"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn via_env_passes_the_credentials_in_the_environment() {
    let dir = tempdir("auth-env");
    let argv = vec![script(&dir).display().to_string()];
    assert!(run_auth_command(&argv, false, "alice", "wonderland"));
    assert!(!run_auth_command(&argv, false, "alice", "wrong"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_command_that_cannot_run_refuses() {
    assert!(!run_auth_command(
        &["/nonexistent/verify".to_owned()],
        true,
        "alice",
        "wonderland"
    ));
    assert!(!run_auth_command(&[], true, "alice", "wonderland"));
}
