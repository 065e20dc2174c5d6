//! A private PostgreSQL cluster (`scripts/pg-cluster`) for the tests that crash the database:
//! stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway cluster in its own directory.
pub struct PgCluster {
    dir: PathBuf,
    /// The admin URL of its `postgres` database.
    pub url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-cluster")
}

fn pg_cluster(command: &str, dir: &Path) -> String {
    let output = Command::new(script()).arg(command).arg(dir).output().unwrap();
    assert!(
        output.status.success(),
        "scripts/pg-cluster {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl PgCluster {
    /// Starts a fresh cluster.
    pub fn start() -> Self {
        // Under /tmp with an open mode: the cluster may run as the `postgres` user.
        let dir = PathBuf::from(format!("/tmp/agentrack-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let url = pg_cluster("start", &dir.join("cluster"));
        Self { dir, url }
    }

    /// Stops it abruptly (`pg_ctl stop -m immediate`): no checkpoint, connections cut.
    pub fn crash(&self) {
        pg_cluster("kill", &self.dir.join("cluster"));
    }

    /// Starts it again after [`Self::crash`].
    pub fn restart(&self) {
        pg_cluster("restart", &self.dir.join("cluster"));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.join("cluster"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
