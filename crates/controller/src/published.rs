//! A document the controller publishes to long-polling readers (the DNS role's names, the
//! network agent's routes),
//! numbered by `(epoch, generation)`.
//!
//! The epoch is the store's (`store::Epoch`): durable, and higher at each controller start. The
//! generation starts at 1 and goes up exactly when the content changes. A reader that holds
//! another epoch (the controller restarted) or generation gets the current document at once, so
//! a restart never leaves a reader waiting on a number the new controller will not reach for a
//! while (Convention 15).
//!
//! Invariant: readers never see the same `(epoch, generation)` with two different contents from
//! one store. A reader that outlives a wiped store (epochs start again at 1) and holds a number
//! the new controller also gives gets the new document at the end of its wait, not at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Epoch;

/// The document with its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Numbered<T> {
    pub epoch: u64,
    pub generation: u64,
    pub doc: T,
}

pub(crate) struct Published<T> {
    current: Mutex<Numbered<T>>,
    /// The current `(epoch, generation)`, to wake waiting readers.
    numbers: watch::Sender<(u64, u64)>,
}

impl<T: Clone + PartialEq> Published<T> {
    /// The first document of a controller acting under `epoch`.
    pub(crate) fn new(epoch: Epoch, doc: T) -> Self {
        let Epoch(epoch) = epoch;
        let (numbers, _) = watch::channel((epoch, 1));
        Published {
            current: Mutex::new(Numbered {
                epoch,
                generation: 1,
                doc,
            }),
            numbers,
        }
    }

    /// The first document of a new epoch (a takeover): readers of the old one get it at once.
    pub(crate) fn restart(&self, epoch: Epoch, doc: T) {
        let Epoch(epoch) = epoch;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Numbered {
            epoch,
            generation: 1,
            doc,
        };
        drop(current);
        self.numbers.send_replace((epoch, 1));
    }

    /// Publishes `doc` if it differs from the current document; wakes the readers.
    pub(crate) fn publish(&self, doc: T) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.doc == doc {
            return;
        }
        current.generation += 1;
        current.doc = doc;
        let numbers = (current.epoch, current.generation);
        drop(current);
        self.numbers.send_replace(numbers);
    }

    pub(crate) fn current(&self) -> Numbered<T> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current document once it is not the one the reader holds (`epoch`, `after`), or
    /// after `wait`, whichever comes first.
    pub(crate) async fn next(&self, epoch: u64, after: u64, wait: Duration) -> Numbered<T> {
        let mut rx = self.numbers.subscribe();
        if rx.borrow().0 == epoch {
            let deadline = tokio::time::Instant::now() + wait;
            while *rx.borrow_and_update() == (epoch, after) {
                if !matches!(
                    tokio::time::timeout_at(deadline, rx.changed()).await,
                    Ok(Ok(()))
                ) {
                    break;
                }
            }
        }
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn numbers_change_only_with_the_content() {
        let p = Published::new(Epoch(3), vec![1]);
        let first = p.current();
        assert_eq!((first.epoch, first.generation), (3, 1));
        p.publish(vec![1]);
        assert_eq!(p.current().generation, 1, "same content, same number");
        p.publish(vec![1, 2]);
        let second = p.current();
        assert_eq!((second.epoch, second.generation), (first.epoch, 2));
        // A reader of another epoch (a controller before a restart) is answered at once,
        // whatever generation it holds.
        let got = p.next(first.epoch ^ 1, 2, Duration::from_secs(60)).await;
        assert_eq!(got.doc, vec![1, 2]);
        // A reader that is up to date waits for the next change.
        let waiting = p.next(first.epoch, 2, Duration::from_secs(60));
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err()
        );
        p.publish(vec![3]);
        assert_eq!(waiting.await.generation, 3);
        // The wait is bounded.
        let got = p.next(first.epoch, 3, Duration::from_millis(10)).await;
        assert_eq!(got.generation, 3);
        // A takeover: a reader waiting on the old epoch gets the new epoch's first document,
        // even though its generation (1) is one the reader may have held.
        let p = Published::new(Epoch(3), vec![1]);
        let waiting = p.next(3, 1, Duration::from_secs(60));
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        p.restart(Epoch(8), vec![2]);
        let got = waiting.await;
        assert_eq!((got.epoch, got.generation, got.doc), (8, 1, vec![2]));
    }
}
