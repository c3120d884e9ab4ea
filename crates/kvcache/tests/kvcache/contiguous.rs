//! Contiguous cache: round trips in every dtype, growth, ContextFull, truncate.

use nano_infer_kvcache::{KvCache, KvDtype, KvError};

use crate::rows;

const LAYERS: usize = 3;
const HEADS: usize = 2;
const HD: usize = 8;
const ROW: usize = HEADS * HD;

/// Largest relative rounding error of a dtype (round to nearest: half an ulp), plus an
/// absolute floor for f16 subnormals near zero.
fn tol(dtype: KvDtype, x: f32) -> f32 {
    match dtype {
        KvDtype::F32 => 0.0,
        KvDtype::Bf16 => x.abs() * 2f32.powi(-8) + 1e-30,
        KvDtype::F16 => x.abs() * 2f32.powi(-10) + 1e-7,
    }
}

/// Expected `(n_pos, HD)` rows of one head from the `(n_pos, ROW)` appended rows.
fn head_of(all: &[f32], head: usize) -> Vec<f32> {
    all.chunks(ROW)
        .flat_map(|r| r[head * HD..(head + 1) * HD].to_vec())
        .collect()
}

fn assert_close(dtype: KvDtype, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol(dtype, *w),
            "{dtype} elem {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn round_trip_every_dtype_with_growth() {
    for dtype in [KvDtype::F32, KvDtype::Bf16, KvDtype::F16] {
        let mut c = KvCache::new(LAYERS, HEADS, HD, 100, dtype);
        assert_eq!(c.allocated_bytes(), 0, "allocates lazily");
        // keys[layer] / values[layer]: (n_pos, ROW) of everything appended.
        let mut keys = vec![Vec::new(); LAYERS];
        let mut vals = vec![Vec::new(); LAYERS];
        // A prefill of 7, then single-token decode past two doublings (16 -> 32 -> 64), then a
        // chunk of 5.
        let steps: Vec<usize> = std::iter::once(7)
            .chain(std::iter::repeat_n(1, 30))
            .chain([5])
            .collect();
        for (s, &n) in steps.iter().enumerate() {
            for l in 0..LAYERS {
                let k = rows(n, ROW, (s * 10 + l) as u64);
                let v = rows(n, ROW, (s * 10 + l + 1000) as u64);
                c.append(l, &k, &v).unwrap();
                keys[l].extend_from_slice(&k);
                vals[l].extend_from_slice(&v);
                // Pending rows are readable by this layer before advance.
                assert_eq!(c.keys(l, 0).n_rows(HD), c.len() + n);
            }
            c.advance(n);
        }
        assert_eq!(c.len(), 42);
        assert_eq!(c.capacity(), 64);
        assert_eq!(
            c.allocated_bytes(),
            64 * LAYERS * HEADS * HD * 2 * dtype.bytes_per_element()
        );
        for l in 0..LAYERS {
            for h in 0..HEADS {
                let k = c.keys(l, h);
                assert_eq!(k.dtype(), dtype);
                assert_close(dtype, &k.to_f32_vec(), &head_of(&keys[l], h));
                assert_close(dtype, &c.values(l, h).to_f32_vec(), &head_of(&vals[l], h));
                let mut row = [0.0; HD];
                k.row_to_f32(41, HD, &mut row);
                assert_close(dtype, &row, &head_of(&keys[l], h)[41 * HD..]);
            }
        }
    }
}

#[test]
fn context_full_writes_nothing() {
    let mut c = KvCache::new(1, HEADS, HD, 10, KvDtype::F32);
    let k = rows(8, ROW, 1);
    c.append(0, &k, &k).unwrap();
    c.advance(8);
    let before = c.keys(0, 1).to_f32_vec();
    let err = c.append(0, &rows(3, ROW, 2), &rows(3, ROW, 3)).unwrap_err();
    assert_eq!(
        err,
        KvError::ContextFull {
            needed: 11,
            max: 10
        }
    );
    assert!(err.to_string().contains("11"));
    assert_eq!(c.len(), 8);
    assert_eq!(c.pending(0), 0);
    assert_eq!(c.keys(0, 1).to_f32_vec(), before);
    assert_eq!(c.capacity(), 10, "growth is capped at max_tokens");
    // Exactly up to the cap is fine; advance never passes it.
    c.append(0, &rows(2, ROW, 4), &rows(2, ROW, 5)).unwrap();
    c.advance(5);
    assert_eq!(c.len(), 10);
}

#[test]
fn truncate_then_overwrite() {
    let mut c = KvCache::new(2, HEADS, HD, 64, KvDtype::Bf16);
    let first = rows(20, ROW, 7);
    for l in 0..2 {
        c.append(l, &first, &first).unwrap();
    }
    c.advance(20);
    c.truncate(5);
    assert_eq!(c.len(), 5);
    let second = rows(3, ROW, 8);
    for l in 0..2 {
        c.append(l, &second, &second).unwrap();
    }
    c.advance(3);
    let mut want = first[..5 * ROW].to_vec();
    want.extend_from_slice(&second);
    assert_close(
        KvDtype::Bf16,
        &c.keys(1, 1).to_f32_vec(),
        &head_of(&want, 1),
    );
    // Truncating past the end is a no-op but drops pending rows.
    c.append(0, &second, &second).unwrap();
    c.truncate(100);
    assert_eq!((c.len(), c.pending(0)), (8, 0));
    let bytes = c.allocated_bytes();
    c.clear();
    assert!(c.is_empty());
    assert_eq!(c.allocated_bytes(), bytes, "clear keeps the allocation");
    c.release();
    assert_eq!(c.allocated_bytes(), 0);
}

#[test]
fn reserve_avoids_relayout() {
    let mut c = KvCache::new(1, 1, 4, 1000, KvDtype::F16);
    c.reserve(300);
    assert_eq!(c.capacity(), 300);
    c.reserve(5000);
    assert_eq!(c.capacity(), 1000);
}

#[test]
fn dtype_names() {
    for d in [KvDtype::F32, KvDtype::Bf16, KvDtype::F16] {
        assert_eq!(d.to_string().parse::<KvDtype>().unwrap(), d);
    }
    assert_eq!("BF16".parse::<KvDtype>(), Ok(KvDtype::Bf16));
    assert_eq!(KvDtype::F32.bytes_per_element(), 4);
    assert_eq!(KvDtype::F16.bytes_per_element(), 2);
    assert!(matches!(
        "fp8".parse::<KvDtype>(),
        Err(KvError::UnknownDtype(_))
    ));
}
