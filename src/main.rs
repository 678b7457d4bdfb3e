//! `k0sctl` binary entry point.
fn main() {
    println!("k0sctl");
}
