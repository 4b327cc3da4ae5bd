//! Exponential backoff, and [`StreamBackoff`], which applies it to a stream of results.
//!
//! Watchers recover by themselves but report every failure as an `Err` item; whether and how
//! long to wait before the next attempt is decided out here, by wrapping the stream. After an
//! `Err` item the wrapper sleeps before it polls the stream again, longer after each failure
//! in a row, and back to the shortest wait after the first success.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{Stream, TryStream};
use tokio::time::Sleep;

/// Delays that start at `initial` and double up to `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExponentialBackoff {
    initial: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Default for ExponentialBackoff {
    /// 100 ms, doubling, at most 30 s.
    fn default() -> Self {
        ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl ExponentialBackoff {
    /// Delays of `initial`, `2 * initial`, `4 * initial`, ... never more than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        ExponentialBackoff {
            initial: initial.min(max),
            max,
            last: None,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match self.last {
            None => self.initial,
            Some(last) => last.saturating_mul(2).min(self.max),
        };
        self.last = Some(delay);
        delay
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// A stream of results that waits before polling its inner stream again after each `Err`.
///
/// Made by [`WatchStreamExt::default_backoff`](crate::WatchStreamExt::default_backoff) or
/// [`WatchStreamExt::backoff`](crate::WatchStreamExt::backoff). It ends when the inner stream
/// ends; it uses Tokio timers, so tests can pause time.
pub struct StreamBackoff<S> {
    stream: Pin<Box<S>>,
    backoff: ExponentialBackoff,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> StreamBackoff<S> {
    /// Wraps `stream`, waiting as `backoff` says after each error.
    pub fn new(stream: S, backoff: ExponentialBackoff) -> Self {
        StreamBackoff {
            stream: Box::pin(stream),
            backoff,
            sleep: None,
        }
    }
}

impl<S: TryStream> Stream for StreamBackoff<S> {
    type Item = Result<S::Ok, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(sleep) = this.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        let item = ready!(this.stream.as_mut().try_poll_next(cx));
        match &item {
            Some(Ok(_)) => this.backoff.reset(),
            Some(Err(_)) => {
                let delay = this.backoff.next_delay();
                this.sleep = Some(Box::pin(tokio::time::sleep(delay)));
            }
            None => {}
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::time::Instant;

    #[test]
    fn delays_double_and_cap() {
        let mut backoff =
            ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn huge_delays_saturate_instead_of_overflowing() {
        let mut backoff = ExponentialBackoff::new(Duration::MAX / 2, Duration::MAX);
        for _ in 0..5 {
            assert!(backoff.next_delay() >= Duration::MAX / 2);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_after_errors_and_resets_after_success() {
        let items: Vec<Result<u32, &str>> =
            vec![Err("a"), Err("b"), Err("c"), Ok(1), Err("d"), Ok(2)];
        let start = Instant::now();
        let mut stream =
            StreamBackoff::new(futures::stream::iter(items), ExponentialBackoff::default());
        let mut seen = Vec::new();
        while let Some(item) = stream.next().await {
            seen.push((item, start.elapsed().as_millis()));
        }
        assert_eq!(
            seen,
            [
                (Err("a"), 0),
                (Err("b"), 100),
                (Err("c"), 300),
                (Ok(1), 700),
                (Err("d"), 700),
                (Ok(2), 800),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn default_backoff_caps_at_thirty_seconds() {
        let errors = futures::stream::repeat(Err::<(), _>("down")).take(12);
        let mut stream = StreamBackoff::new(errors, ExponentialBackoff::default());
        let mut last = Instant::now();
        let mut gaps = Vec::new();
        while stream.next().await.is_some() {
            let now = Instant::now();
            gaps.push(now.duration_since(last).as_millis());
            last = now;
        }
        assert_eq!(
            gaps,
            [
                0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
    }
}
