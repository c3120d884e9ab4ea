//! A model directory's weights: one file or a sharded set behind an index.

use crate::{Result, SafetensorsFile, Tensor, TensorError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// Every safetensors file of a model directory, with a map from tensor name to file.
#[derive(Debug)]
pub struct WeightStore {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    /// Tensor name → index into `files`.
    locations: HashMap<String, usize>,
}

impl WeightStore {
    /// Opens `dir/model.safetensors.index.json` and its shards if present, else
    /// `dir/model.safetensors`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            let source = if dir.exists() {
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a model directory")
            } else {
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")
            };
            return Err(TensorError::Io {
                path: dir.to_owned(),
                source,
            });
        }
        let index = dir.join(INDEX);
        if probe_file(&index)? {
            return Self::open_index(dir, &index);
        }
        let single = dir.join(SINGLE);
        if probe_file(&single)? {
            return Self::from_files(dir, vec![SafetensorsFile::open(&single)?]);
        }
        Err(TensorError::NoWeights {
            dir: dir.to_owned(),
        })
    }

    /// A store over files already opened (used for in-memory images and tests).
    pub fn from_files(dir: impl Into<PathBuf>, files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut locations = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.names() {
                locations.insert(name.to_owned(), i);
            }
        }
        Ok(Self {
            dir: dir.into(),
            files,
            locations,
        })
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Self> {
        let bad = |reason: String| TensorError::BadIndex {
            path: index.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(|source| TensorError::Io {
            path: index.to_owned(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;

        let mut files: Vec<SafetensorsFile> = Vec::new();
        let mut by_shard: HashMap<String, usize> = HashMap::new();
        let mut locations = HashMap::new();
        // Sorted so files open in a deterministic order and errors are reproducible.
        let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (tensor, shard) in entries {
            let shard = shard
                .as_str()
                .ok_or_else(|| bad(format!("shard of `{tensor}` is not a string")))?;
            if !is_plain_file_name(shard) {
                return Err(bad(format!(
                    "shard `{shard}` of `{tensor}` is not a plain file name"
                )));
            }
            let i = match by_shard.get(shard) {
                Some(&i) => i,
                None => {
                    let path = dir.join(shard);
                    if !probe_file(&path)? {
                        return Err(TensorError::MissingShard {
                            index: index.to_owned(),
                            shard: shard.to_owned(),
                            tensor: tensor.clone(),
                        });
                    }
                    files.push(SafetensorsFile::open(&path)?);
                    by_shard.insert(shard.to_owned(), files.len() - 1);
                    files.len() - 1
                }
            };
            if !files[i].contains(tensor) {
                return Err(TensorError::IndexTensorMissing {
                    index: index.to_owned(),
                    tensor: tensor.clone(),
                    shard: shard.to_owned(),
                });
            }
            locations.insert(tensor.clone(), i);
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
            locations,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files, in the order they were opened.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Total size of the weight files in bytes.
    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(SafetensorsFile::len_bytes).sum()
    }

    /// Whether the model has a tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.locations.contains_key(name)
    }

    /// Every tensor name, unordered.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.locations.keys().map(String::as_str)
    }

    /// The tensor `name`, or an error naming it and the directory.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        match self.locations.get(name) {
            Some(&i) => self.files[i].get(name),
            None => Err(TensorError::MissingTensor {
                tensor: name.to_owned(),
                location: self.dir.clone(),
            }),
        }
    }

    /// The tensor `name` if present.
    pub fn get_opt(&self, name: &str) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(name).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Whether a regular file is at `path` (following symlinks): `Ok(false)` when nothing is, an
/// error saying what is there otherwise (a directory, a FIFO, a dangling symlink, a symlink
/// loop). Without it those read as "missing", and opening a FIFO would block forever waiting
/// for a writer.
pub(crate) fn probe_file(path: &Path) -> Result<bool> {
    let io = |source| TensorError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(meta) => Err(TensorError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(&meta.file_type()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => Err(io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "dangling symbolic link (its target does not exist)",
                ))),
                _ => Ok(false),
            }
        }
        // A symlink loop (ELOOP, "too many levels of symbolic links"), a permission error.
        Err(e) => Err(io(e)),
    }
}

/// What a non-regular file is, for an error message.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Whether `name` names a file directly inside the model directory: one normal path component,
/// so no separators (of any platform this was built for), no `.`/`..`, no root or drive prefix.
/// An index must not make us open files elsewhere.
fn is_plain_file_name(name: &str) -> bool {
    use std::path::Component;
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) && !name.contains(['/', '\\'])
}

#[cfg(test)]
mod tests {
    use super::is_plain_file_name;

    #[test]
    fn plain_file_names() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        assert!(is_plain_file_name("..weird but plain"));
        for bad in [
            "",
            ".",
            "..",
            "../x.safetensors",
            "sub/x.safetensors",
            "/abs.safetensors",
            "a\\b",
            "x/",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?} accepted");
        }
    }
}
