//! The files the server keeps are its user's alone (issue 15, item 10), checked on the real
//! binary: a fresh data directory is `0700` and its files `0600` whatever the umask; modes an
//! older version left open are tightened at the next start; an `admin.token` that is a symbolic
//! link, and a data directory of another user, are refused at start-up with an error naming the
//! path, and nothing is written through them.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, TestServer};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn side(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Runs `serve` on `data` (with `args`) until it says where it listens, then kills it; returns
/// its standard error if it exited instead.
fn serve_until_listening(data: &Path, args: &[&str]) -> Result<(), String> {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("AGENTRACK_LOG", "info")
        .env_remove("AGENTRACK_CONFIG")
        .env_remove("AGENTRACK_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next();
    let listening = matches!(&first, Some(Ok(line)) if line.starts_with("listening on "));
    if listening {
        child.kill().unwrap();
        child.wait().unwrap();
        return Ok(());
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "no `listening on` line, yet it succeeded");
    Err(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_fresh_data_directory_and_every_file_in_it_are_private() {
    // The test runs with the usual umask (022): without explicit modes these would be 755/644.
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let data = root.path().join("new").join("data");
    serve_until_listening(&data, &[]).unwrap();
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&root.path().join("new")), 0o700, "a parent it created");
    assert_eq!(mode(&data.join("admin.token")), 0o600, "the admin token");
    let db = data.join("agentrack.db");
    assert_eq!(mode(&db), 0o600, "the database");
    // SQLite's side files exist while a server runs: one with writes.
    let server = TestServer::start().await;
    let db = server.data().join("agentrack.db");
    let token = server.token("agent", "acme", None).await;
    server.create(&token, "a", "t", "u").await;
    for file in [db.clone(), side(&db, "-wal"), side(&db, "-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // A --store file outside the data directory: its new directory 0700, the file 0600.
    let elsewhere = root.path().join("stores").join("one");
    let url = format!("sqlite://{}", elsewhere.join("x.db").display());
    let data = root.path().join("data2");
    serve_until_listening(&data, &["--store", &url]).unwrap();
    assert_eq!(mode(&elsewhere), 0o700);
    assert_eq!(mode(&elsewhere.join("x.db")), 0o600);
    assert_eq!(
        mode(root.path()),
        0o755,
        "an existing parent is not the server's to change"
    );
}

#[tokio::test]
async fn modes_left_open_by_an_older_version_are_tightened_at_start() {
    let mut server = TestServer::start().await;
    let token = server.token("agent", "acme", None).await;
    let id = server.create(&token, "a", "t", "u").await;
    server.terminate();
    let data = server.data().to_path_buf();
    let db = data.join("agentrack.db");
    chmod(&data, 0o755);
    chmod(&data.join("admin.token"), 0o644);
    chmod(&db, 0o644);
    std::fs::write(side(&db, "-wal"), b"").unwrap();
    chmod(&side(&db, "-wal"), 0o666);

    server.restart();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&side(&db, "-wal")), 0o600);
    assert!(server.log().contains("tightened the mode"), "the tightening is logged");
    // Nothing stored was lost on the way.
    let (status, record) = server.get(&format!("/v1/executions/{id}"), &token).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        server.admin,
        std::fs::read_to_string(data.join("admin.token")).unwrap().trim()
    );
}

#[tokio::test]
async fn an_admin_token_that_is_a_symbolic_link_is_refused_and_its_target_untouched() {
    let root = tempfile::tempdir().unwrap();
    let victim = root.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o644);
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&victim, data.join("admin.token")).unwrap();

    let error = serve_until_listening(&data, &[]).unwrap_err();
    assert!(
        error.contains("admin.token") && error.contains("symbolic link"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644, "the link's target is not chmod-ed either");
    assert!(
        !data.join("agentrack.db").exists(),
        "refused before the store is opened"
    );

    // The pending file of a cluster's first start is a secret too.
    std::fs::remove_file(data.join("admin.token")).unwrap();
    std::os::unix::fs::symlink(&victim, data.join("admin.token.new")).unwrap();
    let error = serve_until_listening(&data, &[]).unwrap_err();
    assert!(
        error.contains("admin.token.new") && error.contains("symbolic link"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[tokio::test]
async fn a_data_directory_of_another_user_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(root.path()).unwrap().uid();
    let data = if me == 0 {
        // Root can make a directory of another user; others use one root owns.
        let data = root.path().join("theirs");
        std::fs::create_dir(&data).unwrap();
        chmod(&data, 0o777);
        let status = Command::new("chown").arg("65534").arg(&data).status().unwrap();
        assert!(status.success());
        data
    } else {
        std::path::PathBuf::from("/tmp")
    };
    let error = serve_until_listening(&data, &[]).unwrap_err();
    assert!(error.contains("belongs to user"), "{error}");
    assert!(error.contains(&data.display().to_string()), "{error}");
    assert!(!data.join("admin.token").exists());
    if me == 0 {
        assert_eq!(mode(&data), 0o777, "another user's directory is not changed");
    }
}
