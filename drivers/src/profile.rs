//! Loading a `.ovpn` profile from disk: the file reads core leaves to the caller.

use std::path::{Path, PathBuf};

use erebus_openvpn::config::{Material, Profile, Warning};
use zeroize::Zeroizing;

/// A parsed profile, with the directory its relative paths are resolved against.
#[derive(Debug)]
pub struct LoadedProfile {
    /// The parsed profile.
    pub profile: Profile,
    /// Non-fatal remarks about the profile, one per ignored option.
    pub warnings: Vec<Warning>,
    /// The profile's own bytes (for `--record`).
    pub bytes: Zeroizing<Vec<u8>>,
    /// The directory holding the profile.
    pub dir: PathBuf,
    /// The profile's path, for messages.
    pub path: PathBuf,
}

/// Why a profile could not be loaded. Every message names the file and, for parse errors, the
/// line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The profile does not parse or cannot be honoured.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and the reason.
        source: erebus_openvpn::config::ProfileError,
    },
}

impl LoadedProfile {
    /// Reads and parses the profile at `path`.
    ///
    /// # Errors
    ///
    /// [`LoadError`] naming the file, and the line for parse errors.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?);
        let (profile, warnings) = Profile::parse(&bytes).map_err(|source| LoadError::Parse {
            path: path.into(),
            source,
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self {
            profile,
            warnings,
            bytes,
            dir,
            path: path.into(),
        })
    }

    /// The bytes of `material`: inline, or read from its file relative to the profile.
    ///
    /// # Errors
    ///
    /// The file's path and what the OS said.
    pub fn material(&self, material: &Material) -> Result<Zeroizing<Vec<u8>>, LoadError> {
        match material {
            Material::Inline(bytes) => Ok(Zeroizing::new(bytes.expose().to_vec())),
            Material::File(file) => {
                let path = self.dir.join(file);
                std::fs::read(&path)
                    .map(Zeroizing::new)
                    .map_err(|source| LoadError::Read { path, source })
            }
        }
    }
}
