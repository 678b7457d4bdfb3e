//! Bastions (`ssh.bastion`, recursive, or ProxyJump): every host behind the same bastion shares
//! one bastion connection and reaches its target through a `direct-tcpip` channel on it, so the
//! bastion's sshd sees one connection instead of one per host (k0sctl's per-host bastion
//! connections ran into the bastion's MaxStartups). A per-bastion semaphore also limits
//! concurrent handshakes through it (default 8, below OpenSSH's default MaxStartups of 10), for
//! targets that share one sshd (port forwards, load balancers) and to bound the bastion's load.
//! sshd lowers its startup count slightly after authentication completes, so a residual
//! MaxStartups drop is possible; it is transient and retried with backoff.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell, OwnedSemaphorePermit, Semaphore};

use super::{SshConnection, SshOptions};
use crate::transport::{Transport, TransportError};

struct Entry {
    conn: OnceCell<Arc<SshConnection>>,
    handshakes: Arc<Semaphore>,
}

/// Shared bastion connections, keyed by `user@address:port` of the bastion (and its own chain).
#[derive(Default)]
pub struct BastionPool {
    map: Mutex<HashMap<String, Arc<Entry>>>,
}

fn key(o: &SshOptions) -> String {
    let mut k = o.label();
    let mut b = &o.bastion;
    while let Some(x) = b {
        k.push_str(" via ");
        k.push_str(&x.label());
        b = &x.bastion;
    }
    k
}

impl BastionPool {
    /// The shared connection to bastion `o` (connecting on first use) and a handshake permit.
    pub async fn get(
        &self,
        o: &SshOptions,
    ) -> Result<(Arc<SshConnection>, OwnedSemaphorePermit), TransportError> {
        let e = {
            let mut m = self.map.lock().await;
            m.entry(key(o))
                .or_insert_with(|| {
                    Arc::new(Entry {
                        conn: OnceCell::new(),
                        handshakes: Arc::new(Semaphore::new(o.bastion_handshakes.max(1))),
                    })
                })
                .clone()
        };
        let conn = e
            .conn
            .get_or_try_init(|| async {
                // Recursion: the bastion may itself sit behind a bastion.
                SshConnection::connect_via(o, self).await.map(Arc::new)
            })
            .await?
            .clone();
        let permit = e
            .handshakes
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore closed");
        Ok((conn, permit))
    }

    /// Disconnect all bastions.
    pub async fn close_all(&self) {
        let all: Vec<_> = self.map.lock().await.drain().collect();
        for (_, e) in all {
            if let Some(c) = e.conn.get() {
                c.close().await;
            }
        }
    }
}
