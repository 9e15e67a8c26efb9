//! The certkeeper binary.
fn main() {}
