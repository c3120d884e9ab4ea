//! Weight residency under a memory budget: which layers stay in RAM and which are read from the
//! safetensors files on demand, with the next layer prefetched on a background thread.
//!
//! Not implemented yet (see the layer-offloading issue): nothing here pretends to work.
#![forbid(unsafe_code)]
