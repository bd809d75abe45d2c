//! Model names: a local directory or file, or a Hugging Face id (`ORG/NAME`, optionally `@REVISION`) resolved in the
//! standard local hub cache, `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
//! `models--ORG--NAME/snapshots/REV/` with `refs/<branch>` naming the revision.
//!
//! A model that is not cached is downloaded into that same cache with hf-hub (the files a checkpoint needs:
//! configs, tokenizer, processor config, weights and their index), unless `HF_HUB_OFFLINE` is set. When the hub
//! cannot be reached (or offline mode is on) the error is one line naming the folder looked in, with the command that
//! fills it on a connected machine. \[project\] Only model files are fetched (`*.json`, `*.safetensors`, `*.model`,
//! `*.txt`), never `*.bin`/`*.pt` pickles, which this project does not read.

use std::path::{Path, PathBuf};

/// Why a model name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A path that does not exist (and does not look like `ORG/NAME`).
    #[error("model `{0}` does not exist")]
    Missing(String),
    /// Neither a path nor a cached Hugging Face id.
    #[error("model `{name}` is not a local path, and {looked} does not hold it{why}")]
    NotFound {
        /// The name given.
        name: String,
        /// The cache folder looked in.
        looked: String,
        /// Why it was not downloaded (empty when not tried).
        why: String,
    },
}

impl HubError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            HubError::Missing(_) => "pass a model directory, a .gguf file or a Hugging Face id (ORG/NAME)".into(),
            HubError::NotFound { name, .. } => format!(
                "pass a local model directory, or fetch it on a connected machine with `huggingface-cli download {}` \
                 and copy the cache",
                name.split('@').next().unwrap_or(name)
            ),
        }
    }
}

/// The hub cache folder this process uses.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/huggingface/hub")
}

fn looks_like_id(name: &str) -> bool {
    let id = name.split('@').next().unwrap_or(name);
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// Resolves `name` against `cache`: an existing path as it is, else `ORG/NAME[@REV]` to its snapshot folder.
pub fn resolve_in(name: &str, cache: &Path) -> Result<PathBuf, HubError> {
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if !looks_like_id(name) {
        return Err(HubError::Missing(name.into()));
    }
    let (id, revision) = name.split_once('@').unwrap_or((name, "main"));
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let not_found =
        || HubError::NotFound { name: name.into(), looked: snapshots.display().to_string(), why: String::new() };
    // A branch or tag name is in refs/; a commit hash names the snapshot folder directly.
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let wanted = snapshots.join(&commit);
    if wanted.is_dir() {
        return Ok(wanted);
    }
    if revision != "main" {
        return Err(not_found());
    }
    // No refs/main (a cache copied by hand): the most recently written snapshot.
    let newest = std::fs::read_dir(&snapshots)
        .map_err(|_| not_found())?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    newest.map(|e| e.path()).ok_or_else(not_found)
}

/// Resolves `name` in the process's hub cache (see [`cache_dir`]), downloading a missing Hugging Face model unless
/// `HF_HUB_OFFLINE` is set.
pub fn resolve(name: &str) -> Result<PathBuf, HubError> {
    let cache = cache_dir();
    match resolve_in(name, &cache) {
        Err(HubError::NotFound { name, looked, .. }) => {
            let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
            if offline {
                return Err(HubError::NotFound { name, looked, why: " (HF_HUB_OFFLINE is set)".into() });
            }
            match download(&name, &cache) {
                Ok(()) => resolve_in(&name, &cache),
                Err(e) => Err(HubError::NotFound { name, looked, why: format!(" and downloading failed: {e}") }),
            }
        }
        other => other,
    }
}

/// The files of a repository that a checkpoint needs.
fn wanted(file: &str) -> bool {
    [".json", ".safetensors", ".model", ".txt", ".jinja"].iter().any(|e| file.ends_with(e)) && !file.contains('/')
}

/// Fetches a model's files into `cache` in the hub layout (blobs, snapshots, refs), one file at a time.
fn download(name: &str, cache: &Path) -> Result<(), String> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let (id, revision) = name.split_once('@').unwrap_or((name, "main"));
    let api = ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.repo(Repo::with_revision(id.to_string(), RepoType::Model, revision.to_string()));
    let info = repo.info().map_err(|e| e.to_string())?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).filter(|f| wanted(f)).collect();
    if !files.iter().any(|f| f == "config.json") {
        return Err(format!("{id} has no config.json"));
    }
    for f in files {
        repo.get(&f).map_err(|e| format!("{f}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_through_refs_and_snapshots() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--llava-hf--tiny");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/def456")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(resolve_in("llava-hf/tiny", cache.path()).unwrap(), repo.join("snapshots/abc123"));
        assert_eq!(resolve_in("llava-hf/tiny@def456", cache.path()).unwrap(), repo.join("snapshots/def456"));
        assert!(wanted("model-00001-of-00002.safetensors") && wanted("tokenizer_config.json"));
        assert!(!wanted("pytorch_model.bin") && !wanted("onnx/model.onnx"));
        let err = resolve_in("llava-hf/other", cache.path()).unwrap_err();
        assert!(err.to_string().contains("models--llava-hf--other/snapshots"), "{err}");
        assert!(err.hint().contains("huggingface-cli download llava-hf/other"));
        assert!(resolve_in("llava-hf/tiny@v9", cache.path()).is_err());
        // Local paths win and are returned as given.
        let local = cache.path().to_str().unwrap();
        assert_eq!(resolve_in(local, cache.path()).unwrap(), cache.path());
        assert!(matches!(resolve_in("./missing/model", cache.path()), Err(HubError::Missing(_))));
    }
}
