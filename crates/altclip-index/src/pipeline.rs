//! Decoding on worker threads while the model runs: the next batch is read
//! and preprocessed in parallel while the current one goes through the model.

use std::sync::mpsc;

/// Maps `items` through `load` in batches of `batch` on rayon's workers, one
/// batch ahead of `consume`, which receives them in order on this thread.
/// Stops at the first error of `consume`.
pub fn pipelined<I, T, E>(
    items: Vec<I>,
    batch: usize,
    load: impl Fn(I) -> T + Sync + Send,
    mut consume: impl FnMut(Vec<T>) -> Result<(), E>,
) -> Result<(), E>
where
    I: Send,
    T: Send,
{
    let mut batches: Vec<Vec<I>> = Vec::new();
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        batches.push(rest.by_ref().take(batch.max(1)).collect());
    }
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Vec<T>>(1);
        let load = &load;
        scope.spawn(move || {
            use rayon::prelude::*;
            for items in batches {
                let loaded: Vec<T> = items.into_par_iter().map(load).collect();
                if tx.send(loaded).is_err() {
                    return; // the consumer stopped
                }
            }
        });
        // Dropping `rx` on an early return stops the worker at its next send.
        rx.into_iter().try_for_each(&mut consume)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_arrive_in_order_and_errors_stop_the_run() {
        let mut seen = Vec::new();
        pipelined(
            (0..10).collect(),
            3,
            |i| i * 2,
            |b: Vec<i32>| {
                seen.push(b);
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![vec![0, 2, 4], vec![6, 8, 10], vec![12, 14, 16], vec![18]]
        );

        let mut calls = 0;
        let r = pipelined(
            (0..100).collect(),
            1,
            |i: i32| i,
            |_| {
                calls += 1;
                if calls == 2 {
                    Err("stop")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!((r, calls), (Err("stop"), 2));
    }
}
