//! `qwen3-infer`: the command-line front end. Argument parsing and I/O only; the model lives in
//! `nano-infer-qwen3`.
#![forbid(unsafe_code)]

fn main() {
    eprintln!(
        "qwen3-infer: the command-line tool is not built yet; use the library API (see examples/)"
    );
    std::process::exit(2);
}
