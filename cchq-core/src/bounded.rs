//! [`bounded`]: a bounded `join_all`, the one way cchq runs many futures at once. Plain futures,
//! nothing about hosts, so that every layer can use it: the transports (closing connections),
//! and [`crate::fanout`], which builds the per-host fan-outs on it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Runs `jobs` (futures, typically one per host, made by an iterator's `map`) at most `forks`
/// at once (`0` counts as 1) and returns their outputs in the order of `jobs`: a bounded
/// `futures::future::join_all`. A job is polled only once a slot is free, and a new one starts
/// whenever any running one finishes (so one slow job never holds back finished ones).
///
/// `jobs` is collected at once into a [`Bounded`], a future of its own that holds only the jobs
/// and their outputs: a stream adapter holding the caller's closure across an `.await` can make
/// the compiler fail to prove the caller's future `Send` ("implementation of `FnOnce` is not
/// general enough"), which a caller spawning it needs.
pub fn bounded<F: Future>(jobs: impl IntoIterator<Item = F>, forks: usize) -> Bounded<F> {
    let waiting: Vec<Pin<Box<F>>> = jobs.into_iter().map(Box::pin).collect();
    Bounded {
        done: Vec::with_capacity(waiting.len()),
        waiting: waiting.into_iter().enumerate(),
        running: FuturesUnordered::new(),
        forks: forks.max(1),
    }
}

/// The future of [`bounded`].
#[must_use = "futures do nothing unless awaited"]
pub struct Bounded<F: Future> {
    waiting: std::iter::Enumerate<std::vec::IntoIter<Pin<Box<F>>>>,
    running: FuturesUnordered<Indexed<F>>,
    done: Vec<(usize, F::Output)>,
    forks: usize,
}

// Every job is boxed: nothing in a `Bounded` is pinned in place.
impl<F: Future> Unpin for Bounded<F> {}

impl<F: Future> Future for Bounded<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            while this.running.len() < this.forks {
                let Some((i, job)) = this.waiting.next() else {
                    break;
                };
                this.running.push(Indexed { i, job });
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some(finished)) => this.done.push(finished),
                Poll::Ready(None) => {
                    let mut done = std::mem::take(&mut this.done);
                    done.sort_by_key(|(i, _)| *i);
                    return Poll::Ready(done.into_iter().map(|(_, o)| o).collect());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A job and its place in the input.
struct Indexed<F> {
    i: usize,
    job: Pin<Box<F>>,
}

impl<F: Future> Future for Indexed<F> {
    type Output = (usize, F::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let i = self.i;
        self.job.as_mut().poll(cx).map(|o| (i, o))
    }
}
