//! testenv: test scaffolding (see testenv/README.md once written).
fn main() {}
