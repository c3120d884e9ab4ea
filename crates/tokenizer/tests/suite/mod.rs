//! Test modules, one concern each, plus `common` for the shared fixtures.

mod cases;
mod chat;
mod common;
mod special;
mod stream;
mod tools;
