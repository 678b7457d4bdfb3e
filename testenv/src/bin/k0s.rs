//! The k0s stand-in binary (test scaffolding): see `testenv::k0s`.
fn main() {
    std::process::exit(testenv::k0s::main());
}
