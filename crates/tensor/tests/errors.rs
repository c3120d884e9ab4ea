//! Every `TensorError` path: the variant, and a message that names the file and the tensor.

use crate::util::{assert_err, f32_bytes, raw, serialize, small_image, TempDir};
use nano_infer_tensor::{Dtype, SafetensorsFile, TensorError, WeightStore};

/// The path in-memory images claim; every message must name it.
const FILE: &str = "/virtual/broken.safetensors";

fn parse(bytes: Vec<u8>) -> Result<SafetensorsFile, TensorError> {
    SafetensorsFile::from_bytes(FILE, bytes)
}

/// A one-tensor header with the given entry JSON for tensor `w`.
fn one(entry: &str, data: &[u8]) -> Vec<u8> {
    raw(&format!(r#"{{"w":{entry}}}"#), data)
}

mod directories {
    use super::*;

    #[test]
    fn missing_directory_is_io() {
        let tmp = TempDir::new("missing");
        let dir = tmp.path().join("no-such-model");
        let err = assert_err!(
            WeightStore::open_dir(&dir),
            TensorError::Io { .. },
            ["no-such-model"]
        );
        let TensorError::Io { source, .. } = err else {
            unreachable!()
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_instead_of_a_directory_is_io() {
        let tmp = TempDir::new("notdir");
        let file = tmp.write("config.json", "{}");
        assert_err!(
            WeightStore::open_dir(&file),
            TensorError::Io { .. },
            ["config.json", "not a model directory"]
        );
    }

    #[test]
    fn directory_without_weights() {
        let tmp = TempDir::new("noweights");
        tmp.write("config.json", "{}");
        tmp.write("model.bin", [0u8; 16]);
        let name = tmp.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::NoWeights { .. },
            [&name, "model.safetensors"]
        );
    }

    /// `model.safetensors` that is not a regular file is reported as what it is, not as
    /// missing weights.
    #[test]
    fn weights_path_that_is_a_directory() {
        let tmp = TempDir::new("weightsdir");
        std::fs::create_dir(tmp.path().join("model.safetensors")).unwrap();
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::NotAFile {
                kind: "a directory",
                ..
            },
            ["model.safetensors", "a directory"]
        );
        assert_err!(
            SafetensorsFile::open(tmp.path().join("model.safetensors")),
            TensorError::NotAFile { .. },
            ["model.safetensors"]
        );
    }

    /// A FIFO is reported, and promptly: opening it would wait forever for a writer.
    #[cfg(unix)]
    #[test]
    fn weights_path_that_is_a_fifo_does_not_hang() {
        let tmp = TempDir::new("weightsfifo");
        let fifo = tmp.path().join("model.safetensors");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(status.success());
        let dir = tmp.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(WeightStore::open_dir(&dir).map(|_| ()));
        });
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("open_dir hung on a FIFO");
        assert_err!(
            result,
            TensorError::NotAFile {
                kind: "a FIFO (named pipe)",
                ..
            },
            ["model.safetensors", "FIFO"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn weights_path_that_is_a_symlink_loop_or_dangling() {
        let tmp = TempDir::new("weightsloop");
        let link = tmp.path().join("model.safetensors");
        std::os::unix::fs::symlink(&link, &link).unwrap();
        let err = assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::Io { .. },
            ["model.safetensors"]
        );
        assert!(!matches!(err, TensorError::NoWeights { .. }));
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("gone.safetensors"), &link).unwrap();
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::Io { .. },
            ["model.safetensors", "dangling"]
        );
    }

    #[test]
    fn corrupt_single_file_in_a_directory_names_the_file() {
        let tmp = TempDir::new("corruptdir");
        tmp.write("model.safetensors", [1u8, 2, 3]);
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::TooShort { file_len: 3, .. },
            ["model.safetensors"]
        );
    }
}

mod header {
    use super::*;

    #[test]
    fn shorter_than_the_length_prefix() {
        for len in 0..8 {
            assert_err!(
                parse(vec![0; len]),
                TensorError::TooShort { .. },
                [FILE, &format!("{len} bytes")]
            );
        }
        // The same through a real (empty, then tiny) file: an empty file must not fail in mmap.
        let tmp = TempDir::new("short");
        for (name, bytes) in [
            ("empty.safetensors", &[][..]),
            ("five.safetensors", &[1, 2, 3, 4, 5][..]),
        ] {
            let path = tmp.write(name, bytes);
            assert_err!(
                SafetensorsFile::open(&path),
                TensorError::TooShort { .. },
                [name]
            );
        }
    }

    #[test]
    fn missing_file_is_io() {
        let tmp = TempDir::new("nofile");
        let path = tmp.path().join("absent.safetensors");
        assert_err!(
            SafetensorsFile::open(&path),
            TensorError::Io { .. },
            ["absent.safetensors"]
        );
    }

    #[test]
    fn header_length_beyond_the_file() {
        let mut image = small_image();
        let claimed = (image.len() - 8 + 1) as u64;
        image[..8].copy_from_slice(&claimed.to_le_bytes());
        assert_err!(
            parse(image.clone()),
            TensorError::HeaderBeyondFile { .. },
            [FILE, &claimed.to_string()]
        );
        image[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_err!(
            parse(image),
            TensorError::HeaderTooLarge {
                header_len: u64::MAX,
                ..
            },
            [FILE]
        );
        assert_err!(
            parse(vec![1, 0, 0, 0, 0, 0, 0, 0]),
            TensorError::HeaderBeyondFile { available: 0, .. },
            [FILE]
        );
    }

    #[test]
    fn header_not_a_json_object() {
        for header in [
            "",
            "not json",
            "{\"w\":",
            "[]",
            "42",
            "\"a string\"",
            "null",
            "{} trailing",
        ] {
            assert_err!(
                parse(raw(header, &[])),
                TensorError::BadHeader { .. },
                [FILE, "not a JSON object"]
            );
        }
        let mut image = raw("{\"\u{e9}\":1}", &[]);
        image[10] = 0xFF; // invalid UTF-8 inside the key
        assert_err!(parse(image), TensorError::BadHeader { .. }, [FILE]);
    }

    #[test]
    fn missing_fields() {
        let cases = [
            (r#"{"shape":[1],"data_offsets":[0,4]}"#, "dtype"),
            (r#"{"dtype":"F32","data_offsets":[0,4]}"#, "shape"),
            (r#"{"dtype":"F32","shape":[1]}"#, "data_offsets"),
            (r#"7"#, "dtype"),
        ];
        for (entry, field) in cases {
            assert_err!(
                parse(one(entry, &[0; 4])),
                TensorError::BadHeader { .. },
                [FILE, "`w`", field]
            );
        }
    }

    #[test]
    fn fields_of_the_wrong_type() {
        let cases = [
            (r#"{"dtype":5,"shape":[1],"data_offsets":[0,4]}"#, "dtype"),
            (
                r#"{"dtype":"F32","shape":"1","data_offsets":[0,4]}"#,
                "shape",
            ),
            (
                r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#,
                "shape",
            ),
            (
                r#"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#,
                "shape",
            ),
            (
                r#"{"dtype":"F32","shape":[1],"data_offsets":[0]}"#,
                "data_offsets",
            ),
            (
                r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#,
                "data_offsets",
            ),
            (
                r#"{"dtype":"F32","shape":[1],"data_offsets":[-1,4]}"#,
                "data_offsets",
            ),
            (
                r#"{"dtype":"F32","shape":[1],"data_offsets":{"begin":0}}"#,
                "data_offsets",
            ),
        ];
        for (entry, field) in cases {
            assert_err!(
                parse(one(entry, &[0; 8])),
                TensorError::BadHeader { .. },
                [FILE, "`w`", field]
            );
        }
    }

    #[test]
    fn unknown_dtypes() {
        for dtype in ["F64", "I64", "BOOL", "bf16", ""] {
            let entry = format!(r#"{{"dtype":"{dtype}","shape":[1],"data_offsets":[0,8]}}"#);
            let err = assert_err!(
                parse(one(&entry, &[0; 8])),
                TensorError::UnknownDtype { .. },
                [FILE, "`w`"]
            );
            let TensorError::UnknownDtype { dtype: found, .. } = &err else {
                unreachable!()
            };
            assert_eq!(found, dtype);
            assert_mentions_dtype(&err, dtype);
        }
    }

    fn assert_mentions_dtype(err: &TensorError, dtype: &str) {
        assert!(
            err.to_string().contains(&format!("dtype {dtype},")),
            "{err}"
        );
    }

    #[test]
    fn metadata_values_must_be_strings() {
        for (metadata, needle) in [
            (r#"{"format":1}"#, "`format`"),
            (r#"{"a":"x","nested":{"b":"c"}}"#, "`nested`"),
            (r#"{"list":["pt"]}"#, "`list`"),
            (r#""pt""#, "not an object"),
            (r#"[]"#, "not an object"),
            (r#"7"#, "not an object"),
        ] {
            let image = raw(&format!(r#"{{"__metadata__":{metadata}}}"#), &[]);
            assert!(safetensors::SafeTensors::deserialize(&image).is_err());
            assert_err!(
                parse(image),
                TensorError::BadHeader { .. },
                [FILE, "__metadata__", needle]
            );
        }
        // `null` is no metadata, for the reference too.
        let image = raw(r#"{"__metadata__":null}"#, &[]);
        assert!(safetensors::SafeTensors::deserialize(&image).is_ok());
        assert_eq!(parse(image).unwrap().names().count(), 0);
    }

    /// serde's derived `Deserialize`, which the reference uses, also reads a struct from an
    /// array of its fields in order; accepting exactly what it accepts means reading it too.
    #[test]
    fn entry_as_an_array_of_its_fields() {
        let image = raw(r#"{"w":["U8",[2],[0,2]]}"#, &[7, 9]);
        assert!(safetensors::SafeTensors::deserialize(&image).is_ok());
        assert_eq!(parse(image).unwrap().get("w").unwrap().bytes(), [7, 9]);
        let image = raw(r#"{"w":["U8",[2]]}"#, &[7, 9]);
        assert!(safetensors::SafeTensors::deserialize(&image).is_err());
        assert_err!(parse(image), TensorError::BadHeader { .. }, [FILE, "`w`"]);
    }

    /// Corners our restatement does not model (a field given twice) are still refused when
    /// the reference refuses them, with its message and our file name.
    #[test]
    fn what_only_the_reference_catches_is_refused_too() {
        let image = raw(
            r#"{"w":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            &[7, 9],
        );
        assert!(safetensors::SafeTensors::deserialize(&image).is_err());
        assert_err!(
            parse(image),
            TensorError::BadHeader { .. },
            [FILE, "duplicate field"]
        );
    }

    #[test]
    fn header_length_over_the_format_limit() {
        let mut image = vec![0u8; 8];
        image[..8].copy_from_slice(&(nano_infer_tensor::MAX_HEADER_BYTES + 1).to_le_bytes());
        assert_err!(
            parse(image),
            TensorError::HeaderTooLarge { .. },
            [FILE, "100000001"]
        );
    }

    #[test]
    fn metadata_is_not_a_tensor() {
        let image = raw(
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            &[7, 9],
        );
        let file = parse(image).unwrap();
        assert_eq!(file.names().collect::<Vec<_>>(), ["w"]);
        assert_eq!(file.get("w").unwrap().bytes(), [7, 9]);
    }
}

mod spans {
    use super::*;

    #[test]
    fn offsets_beyond_the_data_section() {
        let entry = r#"{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
        let err = assert_err!(
            parse(one(entry, &[0; 7])),
            TensorError::OutOfBounds { .. },
            [FILE, "`w`", "0..8", "7"]
        );
        assert!(matches!(
            err,
            TensorError::OutOfBounds {
                begin: 0,
                end: 8,
                data_len: 7,
                ..
            }
        ));

        // A file truncated inside its last tensor, as serialised by the reference writer.
        let data = f32_bytes(&[1.0; 16]);
        let mut image = serialize(&[("model.norm.weight", Dtype::F32, &[16], &data)]);
        image.truncate(image.len() - 3);
        assert_err!(
            parse(image),
            TensorError::OutOfBounds { .. },
            [FILE, "model.norm.weight", "truncated"]
        );
    }

    #[test]
    fn begin_after_end() {
        let entry = r#"{"dtype":"U8","shape":[0],"data_offsets":[6,2]}"#;
        assert_err!(
            parse(one(entry, &[0; 8])),
            TensorError::BadHeader { .. },
            [FILE, "`w`", "[6, 2]"]
        );
    }

    #[test]
    fn shape_size_differs_from_span() {
        let entry = r#"{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}"#;
        let err = assert_err!(
            parse(one(entry, &[0; 24])),
            TensorError::SizeMismatch { .. },
            [FILE, "`w`", "[2, 3]", "F32"]
        );
        assert!(matches!(
            err,
            TensorError::SizeMismatch {
                expected: 24,
                actual: 20,
                ..
            }
        ));
        // A non-empty span for an empty shape, and an empty span for a non-empty shape.
        let entry = r#"{"dtype":"BF16","shape":[0,3],"data_offsets":[0,2]}"#;
        assert_err!(
            parse(one(entry, &[0; 2])),
            TensorError::SizeMismatch { expected: 0, .. },
            ["`w`"]
        );
        let entry = r#"{"dtype":"BF16","shape":[],"data_offsets":[0,0]}"#;
        assert_err!(
            parse(one(entry, &[])),
            TensorError::SizeMismatch { expected: 2, .. },
            ["`w`"]
        );
    }

    #[test]
    fn huge_shapes_overflow_into_a_mismatch_not_a_panic() {
        let huge = [
            format!("[{},{}]", 1u64 << 32, 1u64 << 32),
            format!("[{},2]", u64::MAX),
            format!("[{}]", u64::MAX / 2 + 1),
            format!("[{m},{m},{m}]", m = u64::MAX),
        ];
        for shape in &huge {
            let entry = format!(r#"{{"dtype":"BF16","shape":{shape},"data_offsets":[0,4]}}"#);
            assert_err!(
                parse(one(&entry, &[0; 4])),
                TensorError::SizeMismatch {
                    expected: u64::MAX,
                    actual: 4,
                    ..
                },
                [FILE, "`w`"]
            );
        }
        // Huge dims next to a zero are an empty tensor, and numel() must not overflow.
        let entry = format!(
            r#"{{"dtype":"F32","shape":[0,{m},{m}],"data_offsets":[0,0]}}"#,
            m = u64::MAX
        );
        let file = parse(one(&entry, &[])).unwrap();
        let t = file.get("w").unwrap();
        assert_eq!((t.numel(), t.bytes().len()), (0, 0));
        assert!(t.as_slice::<f32>().unwrap().is_empty());
    }

    #[test]
    fn overlapping_tensors() {
        let header = r#"{"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"second":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#;
        assert_err!(
            parse(raw(header, &[0; 8])),
            TensorError::Overlap { .. },
            [FILE, "`first`", "`second`"]
        );
        // One span inside another, with a disjoint one in between in sort order.
        let header = r#"{"outer":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},"inner":{"dtype":"U8","shape":[2],"data_offsets":[10,12]},"z":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
        assert_err!(
            parse(raw(header, &[0; 16])),
            TensorError::Overlap { .. },
            [FILE, "`outer`"]
        );
        // The same span twice.
        let header = r#"{"o":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"p":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},"q":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert_err!(
            parse(raw(header, &[0; 8])),
            TensorError::Overlap { .. },
            ["`p`", "`q`"]
        );
    }

    #[test]
    fn touching_and_empty_spans_do_not_overlap() {
        let header = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#;
        let file = parse(raw(header, &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        assert_eq!(file.get("a").unwrap().bytes(), [1, 2, 3, 4]);
        assert_eq!(file.get("b").unwrap().bytes(), [5, 6, 7, 8]);
        assert!(file.get("e").unwrap().bytes().is_empty());
    }

    /// An empty span strictly inside another tensor's bytes is refused, as the reference does
    /// (its spans must tile the data section in order).
    #[test]
    fn empty_span_inside_a_tensor_is_an_overlap() {
        let header = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}}"#;
        assert_err!(
            parse(raw(header, &[1, 2, 3, 4])),
            TensorError::Overlap { .. },
            [FILE, "`a`", "`e`"]
        );
    }

    #[test]
    fn gap_between_tensors() {
        let header = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}"#;
        let err = assert_err!(
            parse(raw(header, &[0; 5])),
            TensorError::Gap { .. },
            [FILE, "`b`", "gap"]
        );
        assert!(matches!(
            err,
            TensorError::Gap {
                begin: 3,
                expected: 2,
                ..
            }
        ));
        // A gap before the first tensor.
        let entry = r#"{"dtype":"U8","shape":[2],"data_offsets":[1,3]}"#;
        assert_err!(
            parse(one(entry, &[0; 3])),
            TensorError::Gap { expected: 0, .. },
            [FILE, "`w`"]
        );
    }

    #[test]
    fn bytes_after_the_last_tensor() {
        let mut image = small_image();
        image.push(0);
        let err = assert_err!(
            parse(image),
            TensorError::TrailingBytes { .. },
            [FILE, "trailing"]
        );
        let TensorError::TrailingBytes {
            covered, data_len, ..
        } = err
        else {
            unreachable!()
        };
        assert_eq!(data_len, covered + 1);
        // No tensors at all, but a data section.
        assert_err!(
            parse(raw("{}", &[0; 3])),
            TensorError::TrailingBytes {
                covered: 0,
                data_len: 3,
                ..
            },
            [FILE]
        );
    }

    /// The case that made weights read one byte off: the prefix one short of the real header
    /// still ends on valid JSON (the writer's space padding), so only the exact cover of the
    /// data section catches it. The reference refuses it too (MetadataIncompleteBuffer).
    #[test]
    fn header_length_one_byte_short() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
        let mut image = serialize(&[("w", Dtype::F32, &[4], &data)]);
        let n = crate::util::header_len(&image);
        assert_eq!(
            image[8 + n - 1],
            b' ',
            "the reference writer pads with spaces"
        );
        image[..8].copy_from_slice(&(n as u64 - 1).to_le_bytes());
        assert!(safetensors::SafeTensors::deserialize(&image).is_err());
        assert_err!(parse(image), TensorError::TrailingBytes { .. }, [FILE]);
    }
}

mod lookups {
    use super::*;

    #[test]
    fn missing_tensor() {
        let file = parse(small_image()).unwrap();
        assert_err!(
            file.get("model.norm.weight"),
            TensorError::MissingTensor { .. },
            [FILE, "model.norm.weight"]
        );
        let store = WeightStore::from_files("/virtual/model", vec![file]).unwrap();
        assert_err!(
            store.get("lm_head.weight"),
            TensorError::MissingTensor { .. },
            ["/virtual/model", "lm_head.weight"]
        );
        assert!(store.get_opt("lm_head.weight").unwrap().is_none());
    }

    #[test]
    fn expect_shape_and_dtype() {
        let file = parse(small_image()).unwrap();
        let a = file.get("a").unwrap();
        a.expect_shape(&[2, 3]).unwrap();
        a.expect_dtype(&[Dtype::F32]).unwrap();
        let err = assert_err!(
            a.expect_shape(&[3, 2]),
            TensorError::WrongShape { .. },
            [FILE, "`a`", "[3, 2]", "[2, 3]"]
        );
        assert!(
            matches!(err, TensorError::WrongShape { ref expected, ref actual, .. } if expected == &[3, 2] && actual == &[2, 3])
        );
        assert_err!(
            a.expect_shape(&[6]),
            TensorError::WrongShape { .. },
            ["`a`"]
        );
        assert_err!(
            a.expect_dtype(&[Dtype::BF16, Dtype::F16]),
            TensorError::WrongDtype {
                actual: Dtype::F32,
                ..
            },
            [FILE, "`a`", "BF16 or F16", "found F32"]
        );
        assert_err!(
            a.as_slice::<i32>(),
            TensorError::WrongDtype { .. },
            [FILE, "`a`", "I32"]
        );
        let d = file.get("d").unwrap();
        assert_err!(
            d.to_f32_vec(),
            TensorError::WrongDtype {
                actual: Dtype::I32,
                ..
            },
            ["`d`", "BF16 or F16 or F32"]
        );
        assert_err!(
            d.as_slice::<u8>(),
            TensorError::WrongDtype { .. },
            ["`d`", "U8 or F8_E4M3 or F8_E5M2"]
        );
    }
}

mod index {
    use super::*;

    const SHARD: &str = "model-00001-of-00001.safetensors";
    const INDEX: &str = "model.safetensors.index.json";

    /// A directory with one valid shard (tensors `a`..`f`, `empty`) and the given index text.
    fn dir_with_index(tag: &str, index: &str) -> TempDir {
        let tmp = TempDir::new(tag);
        tmp.write(SHARD, small_image());
        tmp.write(INDEX, index);
        tmp
    }

    fn weight_map(entries: &[(&str, &str)]) -> String {
        let map: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(t, s)| (t.to_string(), s.to_string().into()))
            .collect();
        serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map }).to_string()
    }

    #[test]
    fn index_not_json() {
        let tmp = dir_with_index("idx-notjson", "{\"weight_map\": ");
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::BadIndex { .. },
            [INDEX]
        );
        let tmp = dir_with_index("idx-binary", "\u{0}\u{1}");
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::BadIndex { .. },
            [INDEX]
        );
    }

    #[test]
    fn index_not_utf8_is_io() {
        let tmp = TempDir::new("idx-utf8");
        tmp.write(INDEX, [0xFF, 0xFE, b'{']);
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::Io { .. },
            [INDEX]
        );
    }

    #[test]
    fn index_without_weight_map() {
        for text in [
            r#"{"metadata":{}}"#,
            r#"{"weight_map":["a"]}"#,
            "[]",
            "null",
        ] {
            let tmp = dir_with_index("idx-nomap", text);
            assert_err!(
                WeightStore::open_dir(tmp.path()),
                TensorError::BadIndex { .. },
                [INDEX, "weight_map"]
            );
        }
    }

    #[test]
    fn shard_name_not_a_string() {
        let tmp = dir_with_index("idx-nonstring", r#"{"weight_map":{"a":7}}"#);
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::BadIndex { .. },
            [INDEX, "`a`"]
        );
    }

    #[test]
    fn missing_shard() {
        let tmp = dir_with_index(
            "idx-missing",
            &weight_map(&[
                ("a", SHARD),
                ("lm_head.weight", "model-00002-of-00002.safetensors"),
            ]),
        );
        let err = assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::MissingShard { .. },
            [INDEX, "model-00002-of-00002.safetensors", "lm_head.weight"]
        );
        let TensorError::MissingShard { index, .. } = err else {
            unreachable!()
        };
        assert_eq!(index, tmp.path().join(INDEX));
    }

    #[test]
    fn index_names_a_tensor_its_shard_lacks() {
        let tmp = dir_with_index(
            "idx-lacks",
            &weight_map(&[("a", SHARD), ("model.norm.weight", SHARD)]),
        );
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::IndexTensorMissing { .. },
            [INDEX, "model.norm.weight", SHARD]
        );
    }

    #[test]
    fn shard_names_with_path_components() {
        let outside = TempDir::new("idx-outside");
        outside.write("x.safetensors", small_image());
        let escape = format!(
            "../{}/x.safetensors",
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        let absolute = outside
            .path()
            .join("x.safetensors")
            .to_str()
            .unwrap()
            .to_owned();
        // "" and "." would name the directory itself.
        for shard in [
            escape.as_str(),
            absolute.as_str(),
            "sub/x.safetensors",
            "sub\\x.safetensors",
            "..",
            ".",
            "",
        ] {
            let tmp = dir_with_index("idx-sep", &weight_map(&[("a", shard)]));
            std::fs::create_dir(tmp.path().join("sub")).unwrap();
            std::fs::write(tmp.path().join("sub").join("x.safetensors"), small_image()).unwrap();
            assert_err!(
                WeightStore::open_dir(tmp.path()),
                TensorError::BadIndex { .. },
                [INDEX, shard, "`a`"]
            );
        }
    }

    #[test]
    fn corrupt_shard_names_the_shard() {
        let tmp = dir_with_index(
            "idx-corrupt",
            &weight_map(&[("a", SHARD), ("z", "bad.safetensors")]),
        );
        tmp.write("bad.safetensors", raw("{", &[]));
        assert_err!(
            WeightStore::open_dir(tmp.path()),
            TensorError::BadHeader { .. },
            ["bad.safetensors"]
        );
    }
}

mod finiteness {
    use super::*;
    use crate::util::{assert_mentions, bf16_bytes, f16_bytes, i32_bytes};

    fn one_tensor(dtype: Dtype, shape: &[usize], data: &[u8]) -> SafetensorsFile {
        parse(serialize(&[("w", dtype, shape, data)])).unwrap()
    }

    #[test]
    fn finite_tensors_pass() {
        for (dtype, data) in [
            (
                Dtype::F32,
                f32_bytes(&[1.0, -3.4e38, 0.0, f32::MIN_POSITIVE]),
            ),
            (Dtype::BF16, bf16_bytes(&[1.0, -2.0, 3.0e38, 0.0])),
            (Dtype::F16, f16_bytes(&[1.0, -65504.0, 0.0, 6e-8])),
            (Dtype::F8E4M3, vec![0x7E, 0xFE, 0x00, 0x80]),
            (Dtype::F8E5M2, vec![0x7B, 0xFB, 0x00, 0x80]),
            (Dtype::I32, i32_bytes(&[-1, i32::MAX, 0x7F80_0000, 0])),
            (Dtype::U8, vec![0xFF, 0x7F, 0x7C, 0]),
        ] {
            let shape = [data.len() / dtype.size()];
            let t = one_tensor(dtype, &shape, &data).get("w").unwrap();
            t.check_finite().unwrap_or_else(|e| panic!("{dtype}: {e}"));
        }
    }

    /// The first non-finite element is named, with its index and value, for every float dtype.
    #[test]
    fn the_first_non_finite_element_is_named() {
        let cases: [(Dtype, Vec<u8>, usize, &str); 7] = [
            (
                Dtype::F32,
                f32_bytes(&[1.0, 2.0, f32::NAN, f32::INFINITY]),
                2,
                "NaN",
            ),
            (Dtype::F32, f32_bytes(&[1.0, f32::NEG_INFINITY]), 1, "-inf"),
            (Dtype::BF16, bf16_bytes(&[0.0, f32::INFINITY]), 1, "inf"),
            (Dtype::F16, f16_bytes(&[1e5, 1.0]), 0, "inf"), // 1e5 overflows f16
            (Dtype::F8E4M3, vec![0x00, 0x7E, 0xFF], 2, "NaN"),
            (Dtype::F8E5M2, vec![0x01, 0xFC, 0x7D], 1, "-inf"),
            (Dtype::F8E5M2, vec![0x7D], 0, "NaN"),
        ];
        for (dtype, data, index, value) in cases {
            let shape = [data.len() / dtype.size()];
            let err = one_tensor(dtype, &shape, &data)
                .get("w")
                .unwrap()
                .check_finite()
                .expect_err("non-finite accepted");
            let TensorError::NonFinite { index: found, .. } = &err else {
                panic!("{dtype}: wrong variant {err:?}");
            };
            assert_eq!(*found, index, "{dtype}");
            assert_mentions(
                &err,
                &[FILE, "`w`", &format!("element {index} is {value};")],
            );
        }
    }

    /// The scan goes block by block (4096 elements): hits at and past block boundaries are
    /// found at their exact index.
    #[test]
    fn hits_past_the_first_block() {
        for (len, at) in [
            (10_000usize, 9_000usize),
            (8_192, 4_096),
            (8_192, 4_095),
            (4_097, 4_096),
        ] {
            let mut values = vec![0.5f32; len];
            values[at] = f32::NAN;
            let err = one_tensor(Dtype::F32, &[len], &f32_bytes(&values))
                .get("w")
                .unwrap()
                .check_finite()
                .expect_err("NaN accepted");
            assert!(
                matches!(err, TensorError::NonFinite { index, .. } if index == at),
                "{len} {at}: {err:?}"
            );
            let err = one_tensor(Dtype::BF16, &[len], &bf16_bytes(&values))
                .get("w")
                .unwrap()
                .check_finite()
                .expect_err("NaN accepted");
            assert!(
                matches!(err, TensorError::NonFinite { index, .. } if index == at),
                "{len} {at}: {err:?}"
            );
        }
    }
}
