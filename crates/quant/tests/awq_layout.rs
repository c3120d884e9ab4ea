//! Known-answer tests of AutoAWQ's packing and of the repacked `gemm_q4` layout.

use crate::util::{awq_config, load, StBuilder};
use nano_infer_quant::awq::AWQ_ORDER;
use nano_infer_quant::{awq_pack, awq_unpack, Linear};
use proptest::prelude::*;

/// Codes of two 8-column rows, written by hand.
const ROW_A: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const ROW_B: [u8; 8] = [15, 0, 15, 0, 0, 15, 0, 15];
/// Nibble i (bits 4i..4i+4) holds column [0,2,4,6,1,3,5,7][i], so reading nibbles 7..0:
/// A: cols 7,5,3,1,6,4,2,0 = 8,6,4,2,7,5,3,1.
const WORD_A: u32 = 0x8642_7531;
/// B: cols 7,5,3,1,6,4,2,0 = 15,15,0,0,0,0,15,15.
const WORD_B: u32 = 0xFF00_00FF;

#[test]
fn order_is_autoawq() {
    assert_eq!(AWQ_ORDER, [0, 2, 4, 6, 1, 3, 5, 7]);
}

#[test]
fn pack_known_tile() {
    let codes: Vec<u8> = ROW_A.iter().chain(&ROW_B).copied().collect();
    let words = awq_pack(&codes, 8);
    assert_eq!(
        words.iter().map(|w| *w as u32).collect::<Vec<_>>(),
        [WORD_A, WORD_B]
    );
    assert_eq!(awq_unpack(&[WORD_A as i32, WORD_B as i32], 8), codes);
    // Zero points of 8 everywhere.
    assert_eq!(awq_pack(&[8; 8], 8), [0x8888_8888u32 as i32]);
}

/// A 2-input, 8-output AWQ layer (group 2) built from the tile: `qweight` row i is input i.
fn tile_layer() -> (StBuilder, [f32; 8]) {
    let scales = [1.0, 0.5, 0.25, 2.0, 1.0, 1.0, 1.0, 1.0];
    let mut b = StBuilder::default();
    b.i32s("l.qweight", &[2, 1], &[WORD_A as i32, WORD_B as i32])
        .i32s("l.qzeros", &[1, 1], &[0x8888_8888u32 as i32])
        .f16s("l.scales", &[1, 8], &scales);
    (b, scales)
}

#[test]
fn repacked_layout_known_answer() {
    let (b, scales) = tile_layer();
    let Linear::Awq(w) = load(&b, awq_config(2), "l", 8, 2).unwrap() else {
        panic!("not AWQ")
    };
    // Output row r, input 0 in the low nibble (ROW_A[r]) and input 1 in the high one (ROW_B[r]).
    assert_eq!(w.packed(), [0xF1, 0x02, 0xF3, 0x04, 0x05, 0xF6, 0x07, 0xF8]);
    assert_eq!(w.scales(), scales);
    assert_eq!(w.zero_scaled(), scales.map(|s| 8.0 * s));
    let linear = Linear::Awq(w);
    let want = [
        -7.0, 7.0, -3.0, -4.0, -1.25, 1.75, -8.0, -16.0, -3.0, -8.0, -2.0, 7.0, -1.0, -8.0, 0.0,
        7.0,
    ];
    assert_eq!(linear.dequantize(), want);
    assert_eq!(linear.weight_bytes(), 8 + 4 * 8 + 4 * 8);
}

proptest! {
    #[test]
    fn pack_unpack_round_trip(rows in 1usize..6, cols8 in 1usize..5, seed in any::<u64>()) {
        let mut rng = crate::util::Rng::new(seed);
        let codes: Vec<u8> = (0..rows * cols8 * 8).map(|_| rng.below(16) as u8).collect();
        let words = awq_pack(&codes, cols8 * 8);
        prop_assert_eq!(words.len(), rows * cols8);
        prop_assert_eq!(awq_unpack(&words, cols8 * 8), codes);
    }

    #[test]
    fn unpack_pack_round_trip(words in proptest::collection::vec(any::<i32>(), 1..40)) {
        prop_assert_eq!(awq_pack(&awq_unpack(&words, 8), 8), words);
    }
}
