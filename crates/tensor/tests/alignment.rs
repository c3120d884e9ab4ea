//! Data offsets the format does not align: the crate copies such a tensor once and the typed
//! view still holds the right values; aligned tensors are views of the file, not copies.

use crate::util::{f16_bytes, f32_bytes, i32_bytes, raw, TempDir};
use nano_infer_tensor::SafetensorsFile;

const VALUES: [f32; 5] = [1.5, -2.0, 3.0e-5, 1.0e9, -0.0];

/// A header padded with spaces to exactly `len` bytes, holding an F32 tensor `w` (5 values)
/// followed by an I32 `i` (2) and an F16 `h` (3).
fn header_of_len(len: usize) -> String {
    let mut h = String::from(
        r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,20]},"i":{"dtype":"I32","shape":[2],"data_offsets":[20,28]},"h":{"dtype":"F16","shape":[3],"data_offsets":[28,34]}}"#,
    );
    assert!(h.len() <= len);
    while h.len() < len {
        h.push(' ');
    }
    h
}

fn image(header_len: usize) -> Vec<u8> {
    let mut data = f32_bytes(&VALUES);
    data.extend(i32_bytes(&[-7, i32::MAX]));
    data.extend(f16_bytes(&[0.5, -1.0, 2.0]));
    raw(&header_of_len(header_len), &data)
}

fn check(file: &SafetensorsFile) {
    let w = file.get("w").unwrap();
    let slice = w.as_slice::<f32>().unwrap();
    assert_eq!(slice.as_ptr() as usize % 4, 0);
    // Bitwise, so -0.0 is distinguished from 0.0.
    assert_eq!(
        slice.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        VALUES.map(f32::to_bits)
    );
    assert_eq!(w.bytes(), f32_bytes(&VALUES));
    assert_eq!(
        file.get("i").unwrap().as_slice::<i32>().unwrap(),
        [-7, i32::MAX]
    );
    assert_eq!(
        file.get("h").unwrap().to_f32_vec().unwrap(),
        [0.5, -1.0, 2.0]
    );
}

/// Every header length mod 8, both from memory and from a memory-mapped file (whose base is
/// page-aligned, so the data's alignment is exactly `8 + header_len` mod 8).
#[test]
fn every_offset_mod_8_reads_correctly() {
    let tmp = TempDir::new("align");
    for header_len in 200..208 {
        let bytes = image(header_len);
        check(&SafetensorsFile::from_bytes("mem", bytes.clone()).unwrap());
        let path = tmp.write(&format!("h{header_len}.safetensors"), &bytes);
        check(&SafetensorsFile::open(&path).unwrap());
    }
}

/// A misaligned tensor's copy lives as long as its clones, independent of the file.
#[test]
fn misaligned_copy_outlives_the_file() {
    let tmp = TempDir::new("align-clone");
    let path = tmp.write("odd.safetensors", image(201));
    let file = SafetensorsFile::open(&path).unwrap();
    let w = file.get("w").unwrap();
    drop(file);
    let clone = w.clone();
    drop(w);
    assert_eq!(clone.to_f32_vec().unwrap()[..2], [1.5, -2.0]);
}

/// With an 8-aligned data section (what every writer produces) a tensor is a view of the map:
/// fetching it twice gives the same address, and no copy is made.
#[test]
fn aligned_tensors_are_zero_copy() {
    let tmp = TempDir::new("align-zero-copy");
    let path = tmp.write("even.safetensors", image(200));
    let file = SafetensorsFile::open(&path).unwrap();
    let first = file.get("w").unwrap();
    let second = file.get("w").unwrap();
    assert_eq!(first.bytes().as_ptr(), second.bytes().as_ptr());
    let i = file.get("i").unwrap();
    // `i` follows `w` directly in the same mapping.
    assert_eq!(
        i.bytes().as_ptr() as usize - first.bytes().as_ptr() as usize,
        20
    );
}
