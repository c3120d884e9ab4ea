//! Corrupted images: `SafetensorsFile::from_bytes` returns `Ok` or `Err`, never panics,
//! accepts exactly what the reference `safetensors` crate accepts (bar dtypes we do not
//! support), and whatever it accepts reads the same bytes as the reference. Structured headers
//! are also checked against an oracle that restates the validation rules.

use crate::util::{check_all_tensors, header_len, raw, small_image};
use nano_infer_tensor::{Dtype, SafetensorsFile, TensorError};
use proptest::prelude::*;
use std::sync::OnceLock;

fn base() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(small_image)
}

/// Opens `bytes`: it must not panic, must accept exactly what the reference accepts (a dtype
/// we do not support aside), and every tensor it accepts must be fetchable, consistent and the
/// reference's bytes.
fn must_not_panic(bytes: Vec<u8>) {
    let reference = safetensors::SafeTensors::deserialize(&bytes);
    match SafetensorsFile::from_bytes("fuzz.safetensors", bytes.clone()) {
        Ok(file) => {
            let reference = reference.unwrap_or_else(|e| {
                panic!("accepted an image the reference refuses ({e}): {bytes:?}")
            });
            check_all_tensors(&file);
            assert_eq!(file.names().count(), reference.len());
            for name in file.names() {
                let ours = file.get(name).unwrap();
                let theirs = reference.tensor(name).unwrap();
                assert_eq!(ours.bytes(), theirs.data(), "{name}");
                assert_eq!(ours.shape(), theirs.shape(), "{name}");
            }
        }
        Err(TensorError::UnknownDtype { .. }) => {}
        Err(e) => assert!(
            reference.is_err(),
            "refused an image the reference accepts ({e}): {bytes:?}"
        ),
    }
}

/// Every truncation of the valid image: all fail except the full length.
#[test]
fn every_truncation() {
    let image = base();
    for len in 0..image.len() {
        let result = SafetensorsFile::from_bytes("t", image[..len].to_vec());
        // The last tensor in the data section ends at the end of the file.
        assert!(
            result.is_err(),
            "truncation to {len} of {} accepted",
            image.len()
        );
    }
    let file = SafetensorsFile::from_bytes("t", image.to_vec()).unwrap();
    check_all_tensors(&file);
    assert_eq!(file.names().count(), 7);
}

/// A JSON value of bounded depth, biased towards the shapes a safetensors header has.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..64).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("F32"),
            Just("BF16"),
            Just("U8"),
            Just("I64"),
            Just("dtype"),
            Just("shape")
        ]
        .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("dtype".to_string()),
                    Just("shape".to_string()),
                    Just("data_offsets".to_string()),
                    ".{0,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One tensor entry for the structured strategy.
#[derive(Clone, Debug)]
struct Entry {
    dtype: &'static str,
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

const DTYPE_NAMES: [&str; 9] = [
    "BF16", "F16", "F32", "F8_E4M3", "F8_E5M2", "I32", "U8", "F64", "I64",
];

fn arb_entry() -> impl Strategy<Value = Entry> {
    let dim = prop_oneof![8 => 0u64..5, 1 => any::<u64>(), 1 => Just(1u64 << 32)];
    (
        prop::sample::select(&DTYPE_NAMES[..]),
        prop::collection::vec(dim, 0..4),
        0u64..72,
        // `None`: the end that makes the size consistent; otherwise an arbitrary length.
        prop::option::weighted(0.3, 0u64..40),
    )
        .prop_map(|(dtype, shape, begin, len)| {
            let size = Dtype::from_safetensors(dtype).map_or(1, |d| d.size() as u64);
            let consistent = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
            let len = len.or(consistent).unwrap_or(4);
            Entry {
                dtype,
                shape,
                begin,
                end: begin.saturating_add(len),
            }
        })
}

/// What the validation rules say about a structured header: accept iff every dtype is known,
/// every span is ordered, inside the data and the size of its shape, and the spans sorted by
/// (begin, end) tile the data section exactly: each begins where the previous one ended, the
/// first at 0, the last ends at its end (so no gap, no overlap, no trailing bytes).
fn oracle_accepts(entries: &[(String, Entry)], data_len: u64) -> bool {
    let mut spans = Vec::new();
    for (_, e) in entries {
        let Some(dtype) = Dtype::from_safetensors(e.dtype) else {
            return false;
        };
        if e.begin > e.end || e.end > data_len {
            return false;
        }
        let size = e
            .shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d));
        if size != Some(e.end - e.begin) {
            return false;
        }
        spans.push((e.begin, e.end));
    }
    spans.sort_unstable();
    let mut covered = 0;
    for (begin, end) in spans {
        if begin != covered {
            return false;
        }
        covered = end;
    }
    covered == data_len
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (a) Truncation at random lengths, and random garbage appended (bytes no tensor covers:
    /// refused, as the reference does).
    #[test]
    fn truncated_or_extended(cut in 0usize..400, tail in prop::collection::vec(any::<u8>(), 0..16)) {
        let image = base();
        let mut bytes = image[..cut.min(image.len())].to_vec();
        if cut >= image.len() {
            bytes.extend_from_slice(&tail);
            let result = SafetensorsFile::from_bytes("x", bytes.clone());
            prop_assert_eq!(result.is_ok(), tail.is_empty());
            must_not_panic(bytes);
        } else {
            prop_assert!(SafetensorsFile::from_bytes("x", bytes).is_err());
        }
    }

    /// (b) Overwritten or bit-flipped bytes in the length prefix and header.
    #[test]
    fn header_bytes_overwritten(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8)
    ) {
        let mut bytes = base().to_vec();
        let header_end = 8 + header_len(&bytes);
        for (at, value, flip) in edits {
            let i = at.index(header_end);
            if flip {
                bytes[i] ^= 1 << (value % 8);
            } else {
                bytes[i] = value;
            }
        }
        must_not_panic(bytes);
    }

    /// (b') Digits in the header replaced by other digits: keeps the JSON valid and moves
    /// offsets and dims around, which random bytes rarely do.
    #[test]
    fn header_digits_changed(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..10), 1..6)) {
        let mut bytes = base().to_vec();
        let header_end = 8 + header_len(&bytes);
        let digits: Vec<usize> = (8..header_end).filter(|&i| bytes[i].is_ascii_digit()).collect();
        for (at, d) in edits {
            bytes[*at.get(&digits)] = b'0' + d;
        }
        must_not_panic(bytes);
    }

    /// (c) The header replaced by an arbitrary string.
    #[test]
    fn header_random_string(header in ".{0,200}", data in prop::collection::vec(any::<u8>(), 0..64)) {
        must_not_panic(raw(&header, &data));
    }

    /// (c') The header replaced by an arbitrary JSON value.
    #[test]
    fn header_random_json(value in arb_json(), data in prop::collection::vec(any::<u8>(), 0..64)) {
        must_not_panic(raw(&value.to_string(), &data));
    }

    /// (c'') Structured headers: the result agrees with the oracle, and accepted tensors read
    /// exactly their span of the data.
    #[test]
    fn header_structured(
        entries in prop::collection::btree_map("[a-e]", arb_entry(), 0..5),
        data_len in 0usize..80,
        metadata in any::<bool>(),
    ) {
        let data: Vec<u8> = (0..data_len).map(|i| i as u8).collect();
        let mut header = serde_json::Map::new();
        if metadata {
            header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
        }
        for (name, e) in &entries {
            header.insert(
                name.clone(),
                serde_json::json!({ "dtype": e.dtype, "shape": e.shape, "data_offsets": [e.begin, e.end] }),
            );
        }
        let entries: Vec<(String, Entry)> = entries.into_iter().collect();
        let image = raw(&serde_json::Value::Object(header).to_string(), &data);
        let result = SafetensorsFile::from_bytes("s", image.clone());
        prop_assert_eq!(result.is_ok(), oracle_accepts(&entries, data_len as u64), "{:?}", result.as_ref().err());
        must_not_panic(image);
        if let Ok(file) = result {
            check_all_tensors(&file);
            prop_assert_eq!(file.names().count(), entries.len());
            for (name, e) in &entries {
                let t = file.get(name).unwrap();
                prop_assert_eq!(t.dtype().safetensors_name(), e.dtype);
                let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
                prop_assert_eq!(&shape, &e.shape);
                prop_assert_eq!(t.bytes(), &data[e.begin as usize..e.end as usize]);
            }
        }
    }

    /// (d) Arbitrary length prefixes, and prefixes near the true one.
    #[test]
    fn length_prefix(len in any::<u64>(), delta in -16i64..16) {
        let mut bytes = base().to_vec();
        bytes[..8].copy_from_slice(&len.to_le_bytes());
        must_not_panic(bytes.clone());
        let near = (header_len(base()) as i64 + delta).max(0) as u64;
        bytes[..8].copy_from_slice(&near.to_le_bytes());
        must_not_panic(bytes);
    }
}

/// Headers padded with trailing spaces (what writers do) or given a shorter length prefix
/// that still ends on a complete JSON value are handled like any other.
#[test]
fn length_prefix_over_trailing_padding() {
    let image = base();
    let n = header_len(image);
    let header = std::str::from_utf8(&image[8..8 + n]).unwrap();
    let trimmed = header.trim_end();
    // Shrinking the prefix to the JSON's end moves the data section: it opens only if the
    // spans still fit, and must not panic either way.
    let mut bytes = image.to_vec();
    bytes[..8].copy_from_slice(&(trimmed.len() as u64).to_le_bytes());
    must_not_panic(bytes);
}
