//! Shared test harness for the transport tests: a real OpenSSH sshd on a high loopback port
//! ([`sshd::Sshd`]), throw-away keys, users and agents, and the [`sshd::Target`] struct the tests
//! take (address, port, user, key, known_hosts) so they can later run against testenv hosts.
#![allow(dead_code)]

pub mod chaos;
pub mod cli;
pub mod phases;
pub mod poll;
pub mod sshd;
