//! "Connect to hosts": one connection per host, in parallel; unreachable hosts fail the run
//! with the "unreachable" exit code and the transport's explanation (address, what to check).

use futures::future::join_all;

use crate::connect::spec_for;
use crate::exit::Code;

use super::{Phase, PhaseFuture, State, collect};

pub struct Connect;

pub const TITLE: &str = "Connect to hosts";

impl Phase for Connect {
    fn title(&self) -> &'static str {
        TITLE
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            let base = state.config.base_dir.clone();
            let (pool, ssh_config) = (&state.pool, &state.ssh_config);
            let results = join_all(state.hosts.iter_mut().map(|h| {
                let base = &base;
                async move {
                    let _slot = pool.limits().host_slot().await;
                    let spec = spec_for(&h.config, base, ssh_config)
                        .map_err(|e| (h.name.clone(), e.to_string()))?;
                    let remote = pool
                        .connect(&spec)
                        .await
                        .map_err(|e| (h.name.clone(), e.to_string()))?;
                    tracing::info!("{}: connected", h.name);
                    h.spec = Some(spec);
                    h.remote = Some(remote);
                    Ok(())
                }
            }))
            .await;
            collect(TITLE, Code::Unreachable, results)
        })
    }
}
