//! "Disconnect from hosts": close every connection (and bastion connection).

use super::{Phase, PhaseFuture, State};

pub struct Disconnect;

impl Phase for Disconnect {
    fn title(&self) -> &'static str {
        "Disconnect from hosts"
    }

    fn run<'a>(&'a self, state: &'a mut State) -> PhaseFuture<'a> {
        Box::pin(async move {
            state.pool.close_all().await;
            for h in &mut state.hosts {
                h.remote = None;
            }
            Ok(())
        })
    }
}
