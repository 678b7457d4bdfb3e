//! k0s knowledge: version strings, release lookups, and (later) the k0s command lines k0sctl
//! runs on hosts.

pub mod release;
pub mod version;
