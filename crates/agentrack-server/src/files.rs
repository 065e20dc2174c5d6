//! Files the server keeps on disk are its owner's alone: the data directory is `0700`, the
//! admin token and the SQLite files `0600`, whatever the umask.
//!
//! Modes are set when a file or directory is created, and checked at every start: other local
//! users must not read the admin token or the store, and an upgrade from a version that created
//! them with the umask's modes must not leave them readable. So a directory or file of ours
//! found with group or other bits is tightened (and the tightening logged); a data directory
//! owned by another user, or a secret file that is a symbolic link (it would write the token
//! wherever the link points), is refused with an error naming the path and the fix.

use std::fs;
use std::io::Write;
use std::path::Path;

/// The mode of the directories the server creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of the files the server creates.
pub const FILE_MODE: u32 = 0o600;

/// Why a private file or directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An I/O error on the path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The path is not safe to use; the message says why and what to do.
    #[error("{path}: {reason}")]
    Unsafe {
        /// The path.
        path: String,
        /// Why, and what would be valid.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn unsafe_path(path: &Path, reason: impl Into<String>) -> FileError {
    FileError::Unsafe {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Creates `dir` (and its missing parents) with mode `0700`; an existing one must be a
/// directory owned by this user, and loses its group and other bits.
///
/// # Errors
///
/// The directory cannot be created, is not a directory, or belongs to another user.
pub fn private_dir(dir: &Path) -> Result<(), FileError> {
    create_dir(dir)?;
    // Followed if a link: a data directory placed elsewhere by a symlink is an operator's choice.
    let metadata = fs::metadata(dir).map_err(io(dir))?;
    if !metadata.is_dir() {
        return Err(unsafe_path(dir, "not a directory"));
    }
    tighten(dir, &metadata, DIR_MODE)
}

/// Creates `dir` and its missing parents with mode `0700`; an existing one is left as it is
/// (the directory a `--store` file is in may be anyone's, the current one say).
///
/// # Errors
///
/// The directory cannot be created.
pub fn create_dir(dir: &Path) -> Result<(), FileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir).map_err(io(dir))
}

/// Checks a file of ours that already exists (the store's, say): a regular file owned by this
/// user, tightened to `0600`. A missing file is fine.
///
/// # Errors
///
/// The file is not a regular file, or belongs to another user.
pub fn private_file_if_present(path: &Path) -> Result<(), FileError> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => tighten(path, &metadata, FILE_MODE),
        Ok(_) => Err(unsafe_path(path, "not a regular file")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io(path)(error)),
    }
}

/// Creates `path` empty with mode `0600` unless it exists (then it is checked as by
/// [`private_file_if_present`]): a file another program (SQLite) then opens keeps this mode, and
/// SQLite gives its `-wal` and `-shm` files the database file's mode.
///
/// # Errors
///
/// The file cannot be created, or an existing one is unsafe.
pub fn private_file(path: &Path) -> Result<(), FileError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => private_file_if_present(path),
        Err(error) => Err(io(path)(error)),
    }
}

/// Refuses a secret file that is a symbolic link; tightens an existing regular one. A missing
/// file is fine.
///
/// # Errors
///
/// The path is a symbolic link or not a regular file, or belongs to another user.
pub fn check_secret(path: &Path) -> Result<(), FileError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => Err(unsafe_path(
            path,
            "is a symbolic link; a secret is never written or kept through one (remove the link)",
        )),
        Ok(metadata) if metadata.is_file() => tighten(path, &metadata, FILE_MODE),
        Ok(_) => Err(unsafe_path(path, "not a regular file")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io(path)(error)),
    }
}

/// Writes `secret` and a newline to `path` with mode `0600`, never through a symbolic link
/// (`O_NOFOLLOW`): an existing file is replaced in place and its mode tightened.
///
/// # Errors
///
/// The path is a symbolic link, or the file cannot be written.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), FileError> {
    check_secret(path)?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
        // A link made between the check and the open is refused by the open itself (ELOOP).
        options.custom_flags(i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or_default());
    }
    let mut file = options.open(path).map_err(|error| {
        if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            unsafe_path(
                path,
                "is a symbolic link; a secret is never written through one (remove the link)",
            )
        } else {
            io(path)(error)
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode given to `open` applies only to a file it creates.
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(io(path))?;
    }
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

/// Refuses what another user owns; removes group and other bits from what this user owns.
#[cfg(unix)]
fn tighten(path: &Path, metadata: &fs::Metadata, mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(unsafe_path(
            path,
            format!(
                "belongs to user {} and the server runs as user {me}; use a directory of the server's own user",
                metadata.uid()
            ),
        ));
    }
    let current = metadata.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{current:o}"),
            now = format!("{mode:o}"),
            "tightened the mode: other local users could read it"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _metadata: &fs::Metadata, _mode: u32) -> Result<(), FileError> {
    Ok(())
}
