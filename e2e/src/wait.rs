//! Bounded waiting: everything the harness and the tests wait on has a deadline and says what it
//! was waiting for.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// A currently free TCP port on 127.0.0.1 (the OS picks it; the socket is closed again).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        // Binding port 0 on loopback only fails when the host has no loopback at all.
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Polls `f` every 100 ms until it yields `Some`/`Ok`/[`Poll::Ready`] and returns that value, or
/// fails after `timeout` naming `what` and the last observation (the `Err` text or `None`).
pub async fn wait_for<F, Fut, R, T>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: Into<Poll<T>>,
{
    let start = Instant::now();
    loop {
        let last = match f().await.into() {
            Poll::Ready(v) => return Ok(v),
            Poll::Pending(why) => why,
            Poll::Failed(why) => return Err(anyhow!("gave up waiting for {what}: {why}")),
        };
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "timed out after {:.1}s waiting for {what}; last observation: {last}",
                timeout.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One observation of a [`wait_for`] condition.
#[derive(Debug)]
pub enum Poll<T> {
    Ready(T),
    /// Not yet; the text says what was seen (reported on timeout).
    Pending(String),
    /// It can no longer happen (e.g. the process that should answer has exited): stop now.
    Failed(String),
}

impl<T> From<Option<T>> for Poll<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or_else(|| Poll::Pending("not yet".into()), Poll::Ready)
    }
}

impl<T, E: std::fmt::Display> From<Result<T, E>> for Poll<T> {
    fn from(v: Result<T, E>) -> Self {
        match v {
            Ok(v) => Poll::Ready(v),
            Err(e) => Poll::Pending(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_first_ready_value() {
        let mut n = 0;
        let v = wait_for("counter", Duration::from_secs(5), || {
            n += 1;
            let seen = n;
            async move {
                if seen >= 3 {
                    Poll::Ready(seen)
                } else {
                    Poll::Pending(format!("n={seen}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn timeout_names_what_and_last_observation() {
        let err =
            wait_for::<_, _, Poll<()>, ()>("the moon", Duration::from_millis(250), || async {
                Poll::Pending("still dark".into())
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("the moon"), "{err}");
        assert!(err.contains("still dark"), "{err}");
    }

    #[tokio::test]
    async fn accepts_option_and_result_conditions() {
        let v = wait_for("some", Duration::from_secs(1), || async { Some(7u8) })
            .await
            .unwrap();
        assert_eq!(v, 7);
        let err = wait_for("ok", Duration::from_millis(200), || async {
            Err::<u8, _>("refused by test")
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("refused by test"), "{err}");
    }

    #[test]
    fn free_port_is_bindable() {
        let p = free_port();
        assert_ne!(p, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
    }
}
