//! Overlapping loading with answering: while the model answers item `i`, a second thread loads item `i + 1`.
//!
//! Decoding a video is I/O and FFmpeg work that does not need the model; the model's work does not need the next
//! video. With one item in flight ahead, a run over many items costs about `max(load, answer)` per item instead of
//! `load + answer`, with at most two items' media in memory.

/// Runs `answer(item, load(item))` for every item in order, loading the next item on another thread meanwhile.
pub fn overlapped<T, M, R>(items: &[T], load: impl Fn(&T) -> M + Sync, mut answer: impl FnMut(&T, M) -> R) -> Vec<R>
where
    T: Sync,
    M: Send,
{
    let mut out = Vec::with_capacity(items.len());
    let Some(first) = items.first() else { return out };
    std::thread::scope(|scope| {
        let mut current = load(first);
        for (i, item) in items.iter().enumerate() {
            let next = items.get(i + 1).map(|n| scope.spawn(|| load(n)));
            out.push(answer(item, current));
            match next {
                // A loader that panicked is a bug, not input; let it surface.
                Some(handle) => match handle.join() {
                    Ok(m) => current = m,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                None => break,
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn results_keep_order_and_loads_overlap_answers() {
        let items: Vec<u64> = (0..6).collect();
        let started = Instant::now();
        let out = overlapped(
            &items,
            |&i| {
                std::thread::sleep(Duration::from_millis(30));
                i * 10
            },
            |&i, loaded| {
                std::thread::sleep(Duration::from_millis(30));
                (i, loaded)
            },
        );
        assert_eq!(out, (0..6).map(|i| (i, i * 10)).collect::<Vec<_>>());
        // Serial would be 6 x 60 ms; overlapped about 7 x 30 ms. The bound is loose against a busy machine.
        assert!(started.elapsed() < Duration::from_millis(330), "{:?}", started.elapsed());
        assert!(overlapped(&Vec::<u64>::new(), |_| 0, |_, m: u64| m).is_empty());
    }
}
