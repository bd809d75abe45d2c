//! The asset cache: where setup put the real sample assets and whether each is there.
//!
//! The list is `libtorch-setup/assets.tsv`, the same file setup.sh reads, so the two cannot disagree.

use std::path::{Path, PathBuf};

const MANIFEST: &str = include_str!("../libtorch-setup/assets.tsv");

/// One expected asset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Asset {
    /// Path under the assets folder.
    pub name: String,
    /// The package it comes from.
    pub package: String,
    /// Expected size in bytes, when published.
    pub bytes: Option<u64>,
}

/// The state of one asset on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AssetStatus {
    /// The asset.
    #[serde(flatten)]
    pub asset: Asset,
    /// Full path.
    pub path: PathBuf,
    /// Size on disk, `None` when missing.
    pub found_bytes: Option<u64>,
    /// Present with the expected size.
    pub ok: bool,
}

/// `$TOKENSIEVE_HOME`, default `~/.cache/tokensieve`.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("TOKENSIEVE_HOME") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    base.join(".cache").join("tokensieve")
}

/// The assets folder: `$TOKENSIEVE_ASSETS`, default `$TOKENSIEVE_HOME/assets`.
pub fn dir() -> PathBuf {
    std::env::var_os("TOKENSIEVE_ASSETS").map(PathBuf::from).unwrap_or_else(|| home().join("assets"))
}

/// Every asset setup fetches.
pub fn manifest() -> Vec<Asset> {
    MANIFEST
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() == 5).then(|| Asset {
                name: cols[0].to_string(),
                package: cols[2].to_string(),
                bytes: cols[4].parse().ok(),
            })
        })
        .collect()
}

/// Checks every asset under `root`.
pub fn check(root: &Path) -> Vec<AssetStatus> {
    manifest()
        .into_iter()
        .map(|asset| {
            let path = root.join(&asset.name);
            let found_bytes = std::fs::metadata(&path).ok().filter(|m| m.is_file()).map(|m| m.len());
            let ok = found_bytes.is_some() && (asset.bytes.is_none() || asset.bytes == found_bytes);
            AssetStatus { asset, path, found_bytes, ok }
        })
        .collect()
}

/// The path of asset `name`, or an error naming where it was expected and how to get it.
pub fn require(name: &str) -> Result<PathBuf, String> {
    let path = dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("asset {} is missing; run `make setup` (or libtorch-setup/setup.sh)", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_the_real_assets_with_sizes() {
        let m = manifest();
        assert!(m.len() >= 12, "{m:?}");
        let gguf = m.iter().find(|a| a.name.ends_with(".gguf")).unwrap();
        assert_eq!(gguf.bytes, Some(98_362_432));
        assert!(m.iter().any(|a| a.name == "videos/vtest.avi"));
    }

    #[test]
    fn check_reports_missing_and_wrong_sized_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("videos")).unwrap();
        std::fs::write(dir.path().join("videos/vtest.avi"), b"short").unwrap();
        let status = check(dir.path());
        let vtest = status.iter().find(|s| s.asset.name == "videos/vtest.avi").unwrap();
        assert_eq!(vtest.found_bytes, Some(5));
        assert!(!vtest.ok);
        assert!(status.iter().all(|s| !s.ok));
    }
}
