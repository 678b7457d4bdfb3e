//! k0s knowledge that needs no host: version ordering, release lookups and download URLs,
//! join tokens, and the `k0s install`/`k0s reset` command lines k0sctl runs on hosts.

pub mod download;
pub mod install;
pub mod kubeconfig;
pub mod release;
pub mod status;
pub mod token;
pub mod version;
