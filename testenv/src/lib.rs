//! testenv — TEST SCAFFOLDING for k0sctl's end-to-end tests (not a product).
//!
//! * [`env`]: real OpenSSH hosts in Linux namespaces (systemd as PID 1), `Env::up`/`down`.
//! * [`k0s`]: the k0s stand-in (CLI contract of k0s + a Kubernetes API subset), built as the `k0s` binary.
//! * [`binserver`]: HTTP server with stamped stand-in binaries at k0s's release URL layout.
//! * [`stamp`]: version stamping of stand-in binary copies.
//! * [`timing`]: `--realistic` delays of the stand-in (node/pod readiness, API start).
//!
//! See testenv/README.md for the API, the CLI and the `hosts.json` schema.

pub mod binserver;
pub mod env;
pub mod k0s;
pub mod stamp;
pub mod timing;

pub use env::{Env, Host, Options, SudoMode, down_dir, find_k0s_bin};
