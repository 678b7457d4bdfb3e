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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::testkit::Kit;

    #[tokio::test]
    async fn forgets_every_connection_without_running_anything() {
        let mut k = Kit::new(&["controller", "worker"]);
        assert!(Disconnect.should_run(&k.state));
        k.run(&Disconnect).await.unwrap();
        assert!(k.state.hosts.iter().all(|h| h.remote.is_none()));
        k.assert_nothing_ran();
    }
}
