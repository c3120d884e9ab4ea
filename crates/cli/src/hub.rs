//! Turning `-m` into a model directory: a folder on disk, or a Hugging Face repo id found in (or
//! downloaded into) the standard HF cache.
//!
//! The cache lookup is ours rather than hf-hub's because hf-hub ignores `HF_HUB_CACHE`; we follow
//! `huggingface_hub`'s rules: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. A repo lives in
//! `models--{owner}--{name}/`, `refs/main` holds the commit of `main`, and the files are in
//! `snapshots/{commit}/`. A snapshot counts as complete when its `config.json` and every weight
//! file (all shards the index lists) are there, so an interrupted download is resumed, not used.
//!
//! Downloading goes through hf-hub's blocking client, which writes the same layout; it is skipped
//! when `HF_HUB_OFFLINE` is set, and any failure becomes one message saying how to fetch the model.

use crate::args::{DEFAULT_MODEL_DIR, DEFAULT_REPO};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// How to get the default model, for the errors about a missing one.
const GET_MODEL: &str = "get Qwen3-4B with `huggingface-cli download Qwen/Qwen3-4B --local-dir ../models/Qwen/Qwen3-4B`, \
     or pass -m Qwen/Qwen3-4B to use the Hugging Face cache";

/// Resolves `-m` (or its absence) to a directory holding `config.json`.
pub fn resolve(spec: Option<&str>) -> Result<PathBuf> {
    let Some(spec) = spec else {
        let dir = Path::new(DEFAULT_MODEL_DIR);
        if dir.is_dir() {
            return check_model_dir(dir);
        }
        return from_hub(DEFAULT_REPO).map_err(|e| {
            anyhow!("no model given, {DEFAULT_MODEL_DIR} does not exist, and {e} (or pass -m DIR)")
        });
    };
    let path = Path::new(spec);
    if path.is_dir() {
        return check_model_dir(path);
    }
    if path.exists() {
        bail!("-m {spec} is a file: pass the model directory (the folder holding config.json and the .safetensors files)");
    }
    if is_repo_id(spec) {
        return from_hub(spec)
            .map_err(|e| anyhow!("-m {spec}: there is no such directory, and {e}"));
    }
    bail!("no model directory at {spec}; {GET_MODEL}")
}

/// A directory is a model if it has `config.json`; say so plainly rather than letting the
/// loader report a missing file.
fn check_model_dir(dir: &Path) -> Result<PathBuf> {
    if !dir.join("config.json").is_file() {
        bail!(
            "{} has no config.json, so it is not a model directory; {GET_MODEL}",
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// `owner/name` with Hugging Face's allowed characters; anything else is taken as a path.
fn is_repo_id(spec: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(spec.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

/// The hub cache directory, by `huggingface_hub`'s precedence.
pub fn cache_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("huggingface").join("hub")
}

/// The complete snapshot of `repo`'s `main` in `cache`, if there is one.
pub fn cached_snapshot(cache: &Path, repo: &str) -> Option<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = repo_dir.join("snapshots");
    let commit = std::fs::read_to_string(repo_dir.join("refs").join("main")).ok();
    let snapshot = match commit {
        Some(commit) => snapshots.join(commit.trim()),
        // No ref (a cache copied by hand): use the snapshot if there is exactly one.
        None => {
            let mut dirs = std::fs::read_dir(&snapshots)
                .ok()?
                .filter_map(|e| e.ok())
                .map(|e| e.path());
            let only = dirs.next()?;
            if dirs.next().is_some() {
                return None;
            }
            only
        }
    };
    is_complete(&snapshot).then_some(snapshot)
}

/// `config.json` plus the weights: one `model.safetensors`, or an index and all its shards.
fn is_complete(dir: &Path) -> bool {
    if !dir.join("config.json").is_file() {
        return false;
    }
    if dir.join("model.safetensors").is_file() {
        return true;
    }
    let Ok(index) = std::fs::read_to_string(dir.join("model.safetensors.index.json")) else {
        return false;
    };
    let Ok(index) = serde_json::from_str::<serde_json::Value>(&index) else {
        return false;
    };
    let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else {
        return false;
    };
    map.values()
        .filter_map(|f| f.as_str())
        .all(|f| dir.join(f).is_file())
}

/// Finds `repo` in the cache, downloading it when missing and allowed. The error completes the
/// sentence "there is no such directory, and ...".
fn from_hub(repo: &str) -> Result<PathBuf> {
    let cache = cache_dir();
    if let Some(dir) = cached_snapshot(&cache, repo) {
        return Ok(dir);
    }
    let how = format!("fetch it with `huggingface-cli download {repo}` or run with network access");
    if std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0") {
        bail!(
            "{repo} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set; {how}",
            cache.display()
        );
    }
    download(&cache, repo).map_err(|e| {
        anyhow!(
            "{repo} is not in the Hugging Face cache ({}) and downloading it failed ({}); {how}",
            cache.display(),
            one_line(&e)
        )
    })
}

/// Files a model needs: config, generation defaults, tokenizer, template and the weights.
fn wanted(file: &str) -> bool {
    !file.contains('/')
        && (file.ends_with(".safetensors")
            || file.ends_with(".jinja")
            || matches!(
                file,
                "config.json"
                    | "generation_config.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "model.safetensors.index.json"
            ))
}

fn download(cache: &Path, repo: &str) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let api = ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf()))
        .with_progress(false)
        .build()
        .context("starting the Hugging Face client")?;
    let remote = api.model(repo.to_string());
    let info = remote.info().context("listing the repository")?;
    let files: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|f| wanted(f))
        .collect();
    if !files.contains(&"config.json") {
        bail!("the repository has no config.json");
    }
    note!("downloading {repo} into {}", cache.display());
    let local = hf_hub::Cache::new(cache.to_path_buf()).model(repo.to_string());
    let mut config = None;
    for file in files {
        let path = match local.get(file) {
            Some(path) => path,
            None => remote
                .download_with_progress(file, Bar::new())
                .with_context(|| format!("downloading {file}"))?,
        };
        if file == "config.json" {
            config = Some(path);
        }
    }
    // Files of one commit share a snapshot folder; config.json's parent is that folder.
    let dir = config
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .context("config.json missing after download")?;
    if !is_complete(&dir) {
        bail!("the download of {} is incomplete", dir.display());
    }
    Ok(dir)
}

/// hf-hub's progress hook, drawn with indicatif on a terminal and as one line per file otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new() -> Self {
        Self(None)
    }
}

impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, filename: &str) {
        if !std::io::stderr().is_terminal() {
            note!("  {filename} ({:.1} MB)", size as f64 / 1e6);
            return;
        }
        let bar = ProgressBar::new(size as u64);
        let style = ProgressStyle::with_template(
            "  {msg:<32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(filename.to_string());
        self.0 = Some(bar);
    }

    fn update(&mut self, size: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish();
        }
    }
}

/// An error chain on one line (the download error's sources carry the useful part).
fn one_line(e: &anyhow::Error) -> String {
    crate::error::message(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(is_repo_id("Qwen/Qwen3-4B"));
        assert!(is_repo_id("Qwen/Qwen3-4B-AWQ"));
        assert!(!is_repo_id("../models/Qwen/Qwen3-4B/"));
        assert!(!is_repo_id("/abs/dir"));
        assert!(!is_repo_id("models"));
        assert!(!is_repo_id("a/b/c"));
    }

    #[test]
    fn snapshot_lookup_follows_refs_and_checks_shards() {
        let tmp = std::env::temp_dir().join(format!("qwen3-infer-hub-{}", std::process::id()));
        let repo = tmp.join("models--Qwen--Qwen3-4B");
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123\n").unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        let index = r#"{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}"#;
        std::fs::write(snap.join("model.safetensors.index.json"), index).unwrap();
        std::fs::write(snap.join("model-1.safetensors"), "").unwrap();
        assert_eq!(
            cached_snapshot(&tmp, "Qwen/Qwen3-4B"),
            None,
            "a shard is missing"
        );
        std::fs::write(snap.join("model-2.safetensors"), "").unwrap();
        assert_eq!(cached_snapshot(&tmp, "Qwen/Qwen3-4B"), Some(snap));
        assert_eq!(cached_snapshot(&tmp, "Qwen/Qwen3-8B"), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
