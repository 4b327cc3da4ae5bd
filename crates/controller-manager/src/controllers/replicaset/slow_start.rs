//! Slow start: upstream's `slowStartBatch`. Many creations go out in batches of 1, 2, 4, ...
//! concurrent calls, and the first failing batch ends the run, so a ReplicaSet that cannot
//! create pods (a quota, an admission rule, a bad template) makes a handful of failing calls
//! and Events instead of hundreds.

use std::future::Future;

/// The sizes of the batches `count` calls go out in, starting at `initial` and doubling.
pub fn batch_sizes(count: usize, initial: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut remaining = count;
    let mut size = initial.max(1).min(remaining);
    while size > 0 {
        sizes.push(size);
        remaining -= size;
        size = (size * 2).min(remaining);
    }
    sizes
}

/// Calls `call` `count` times in slow-start batches, each batch concurrently, and stops
/// after the first batch with a failure. Returns how many calls succeeded and the first
/// error.
pub async fn slow_start_batch<F, Fut, E>(
    count: usize,
    initial: usize,
    mut call: F,
) -> (usize, Option<E>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut successes = 0;
    for size in batch_sizes(count, initial) {
        let results = futures::future::join_all((0..size).map(|_| call())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
    }
    (successes, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn batches_double_from_the_initial_size() {
        assert_eq!(batch_sizes(10, 1), [1, 2, 4, 3]);
        assert_eq!(batch_sizes(1, 1), [1]);
        assert!(batch_sizes(0, 1).is_empty());
        assert_eq!(batch_sizes(500, 1), [1, 2, 4, 8, 16, 32, 64, 128, 245]);
        assert_eq!(batch_sizes(500, 1).iter().sum::<usize>(), 500);
    }

    #[tokio::test]
    async fn all_calls_run_when_nothing_fails() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), String>(()) }
        })
        .await;
        assert_eq!((ok, err), (10, None));
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn the_first_failing_batch_ends_the_run() {
        // Call number 4 (0-based 3) fails: it is in the third batch (calls 3..7), so the
        // batches of 1 and 2 succeed, the third makes all 4 calls with one failure, and the
        // last batch (3 calls) is never tried.
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 3 {
                    Err(format!("call {n} refused"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(ok, 6);
        assert_eq!(err.as_deref(), Some("call 3 refused"));
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    #[tokio::test]
    async fn a_failure_on_the_first_call_makes_only_one_call() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(200, 1, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("quota exceeded") }
        })
        .await;
        assert_eq!((ok, err), (0, Some("quota exceeded")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
