//! Watches: etcd's watch semantics over the store's commits.
//!
//! - [`watcher`]: one watcher's filters and how changes become its responses.
//! - [`hub`]: all watchers of a member; fan-out of each committed revision to synced
//!   watchers, history catch-up for unsynced ones, progress notifications.
//!
//! Guarantees (etcd's, each tested): ordered, unique, atomic (a revision is never split
//! across responses except as marked fragments), reliable (no gaps), resumable from any
//! uncompacted revision, bookmarkable (a progress notification never runs ahead of the
//! events delivered on its stream).

pub mod hub;
mod stream;
pub mod watcher;

pub use hub::WatchHub;
pub use watcher::Fragmenting;
